"""The search space in Optuna's terms: define-by-run ``trial.suggest_*`` calls and their distributions."""

from __future__ import annotations

from typing import Any

from hpo.space import SearchSpace


def suggest_optuna(space: SearchSpace, trial: Any) -> dict[str, Any]:
    """Sample define-by-run: each active parameter becomes one ``trial.suggest_*`` call."""
    out: dict[str, Any] = {}
    for p in space.params:
        if not p.is_active(out):
            continue
        if p.kind == "fixed":
            out[p.name] = p.default
        elif p.kind in ("choice", "boolean"):
            out[p.name] = trial.suggest_categorical(p.name, list(p.grid or ()))
        elif p.log_grid:
            # Optuna has no multiplicative step: the geometric grid is a categorical.
            out[p.name] = trial.suggest_categorical(p.name, list(p.grid or ()))
        elif p.kind == "int":
            out[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            out[p.name] = trial.suggest_float(
                p.name, float(p.low), float(p.high), step=None if p.log else p.step, log=p.log
            )
    return out


def optuna_distributions(space: SearchSpace) -> dict[str, Any]:
    """Optuna distributions of every parameter (for enqueueing and grid samplers)."""
    import optuna.distributions as d

    out: dict[str, Any] = {}
    for p in space.params:
        if p.kind == "fixed":
            continue
        if p.kind in ("choice", "boolean") or p.log_grid:
            out[p.name] = d.CategoricalDistribution(list(p.grid or ()))
        elif p.kind == "int":
            out[p.name] = d.IntDistribution(int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            out[p.name] = d.FloatDistribution(float(p.low), float(p.high), step=None if p.log else p.step, log=p.log)
    return out
