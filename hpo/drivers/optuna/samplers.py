"""Optuna samplers and pruners by the names a config gives them."""

from __future__ import annotations

from typing import Any

import optuna

from hpo.errors import ConfigError
from hpo.space import SearchSpace


def make_sampler(name: str, seed: int, space: SearchSpace, parallel: bool = False) -> optuna.samplers.BaseSampler:
    """The Optuna sampler a config names. Constraints need no argument here: since Optuna 5 each trial carries
    its constraint values (``Trial.set_constraint``, recorded by the driver), which TPE, NSGA-II and GP read."""
    if name == "tpe":
        # constant_liar: pending trials count as bad results, so parallel workers do not all
        # propose the same point (Optuna's advice for distributed TPE).
        return optuna.samplers.TPESampler(seed=seed, constant_liar=parallel)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        try:
            import torch  # noqa: F401
        except ImportError as exc:
            raise ConfigError("driver.sampler", "'gp' needs PyTorch (pip install torch); choose tpe, random or cmaes") from exc
        return optuna.samplers.GPSampler(seed=seed)
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
    if name == "successive_halving":  # rungs at 1, 3, 9, ... epochs; the top third of each rung goes on
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1))
    return optuna.pruners.NopPruner()
