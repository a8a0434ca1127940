"""Optuna samplers and pruners by the names a config gives them."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import optuna

from hpo.errors import ConfigError
from hpo.space import SearchSpace


ConstraintsFunc = Callable[[optuna.trial.FrozenTrial], Sequence[float]]


def recorded_constraints(n: int, attr: str) -> ConstraintsFunc:
    """Optuna's ``constraints_func`` for ``n`` constraint values the driver records in the trial's user attribute
    ``attr`` before telling it (Optuna's documented pattern). A pruned trial has no trained model to measure: it
    counts as infeasible."""

    def constraints(trial: optuna.trial.FrozenTrial) -> Sequence[float]:
        return list(trial.user_attrs.get(attr) or [1.0] * n)

    return constraints


def make_sampler(name: str, seed: int, space: SearchSpace, parallel: bool = False,
                 constraints_func: ConstraintsFunc | None = None) -> optuna.samplers.BaseSampler:
    """The Optuna sampler a config names; ``constraints_func`` for those that take one (tpe, nsga2, gp)."""
    if name == "tpe":
        # constant_liar: pending trials count as bad results, so parallel workers do not all
        # propose the same point (Optuna's advice for distributed TPE).
        return optuna.samplers.TPESampler(seed=seed, constant_liar=parallel, constraints_func=constraints_func)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=constraints_func)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        try:
            import torch  # noqa: F401
        except ImportError as exc:
            raise ConfigError("driver.sampler", "'gp' needs PyTorch (pip install torch); choose tpe, random or cmaes") from exc
        return optuna.samplers.GPSampler(seed=seed, constraints_func=constraints_func)
    if name == "grid":
        grid: dict[str, list[Any]] = {}
        for p in space.params:
            if p.kind == "fixed":
                continue
            values = p.grid
            if values is None:  # continuous: three points (ends and middle, geometric for log)
                lo, hi = float(p.low), float(p.high)
                mid = (lo * hi) ** 0.5 if p.log else (lo + hi) / 2
                values = tuple(p.cast(v) for v in (lo, mid, hi))
            grid[p.name] = list(dict.fromkeys(values))
        return optuna.samplers.GridSampler(grid, seed=seed)
    raise ConfigError("driver.sampler", f"unknown optuna sampler {name!r}")


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1))
    return optuna.pruners.NopPruner()
