"""Several objectives and constraints on a trial's record: the built-in measures every trial records, the values
an engine is told, and whether a trial is feasible.

An objective or a constraint names either a metric the model reports (scored on select, ``select_<metric>`` in
``result.metrics``) or one of the built-in :data:`MEASURES` (``result.measures``). Constraint values follow
Optuna's convention: one number per bound, feasible when every one is ``<= 0``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

# Measured for every trial on its own device (hpo.execution.measures): name -> what it is.
MEASURES = {
    "params": "parameter count of the trial's model",
    "latency_ms_per_1k": "milliseconds to predict 1,000 rows (median of timed calls after a warm-up)",
    "epoch_seconds": "training seconds per epoch (wall time of fit divided by the epochs trained)",
}

Objective = tuple[str, str]  # (metric, direction)
Bound = tuple[str, float | None, float | None]  # (metric, min, max)


def metric_value(record: Mapping[str, Any], metric: str) -> float | None:
    """A trial's value of ``metric``: a built-in measure, else its score on select; None when it has none."""
    if metric in MEASURES:
        v = (record.get("measures") or {}).get(metric)
    else:
        v = (record.get("metrics") or {}).get(f"select_{metric}")
    return None if v is None else float(v)


def objective_values(record: Mapping[str, Any], objectives: Sequence[Objective]) -> list[float] | None:
    """The values an engine is told, one per objective; None when one is missing or not finite."""
    vals = [metric_value(record, m) for m, _ in objectives]
    if any(v is None or not math.isfinite(v) for v in vals):
        return None
    return [float(v) for v in vals if v is not None]


def constraint_values(record: Mapping[str, Any], bounds: Sequence[Bound]) -> list[float] | None:
    """One value per bound (``value - max``, ``min - value``), feasible when all are ``<= 0`` (Optuna's
    convention for ``Trial.set_constraint``); None when a constrained metric was not measured."""
    out: list[float] = []
    for metric, low, high in bounds:
        v = metric_value(record, metric)
        if v is None or not math.isfinite(v):
            return None
        if high is not None:
            out.append(v - high)
        if low is not None:
            out.append(low - v)
    return out


def constraint_names(bounds: Sequence[Bound]) -> list[str]:
    """A name per bound, in :func:`constraint_values`' order: ``<i>:<metric><=<max>`` and ``<i>:<metric>>=<min>``."""
    out = []
    for i, (metric, low, high) in enumerate(bounds):
        if high is not None:
            out.append(f"{i}:{metric}<={high:g}")
        if low is not None:
            out.append(f"{i}:{metric}>={low:g}")
    return out


def is_feasible(constraints: Sequence[float] | None) -> bool:
    """Every constraint value ``<= 0`` (a trial without values is not feasible)."""
    return constraints is not None and all(c <= 0 for c in constraints)


def chosen_on_front(front: Sequence[Mapping[str, Any]], directions: Sequence[str]) -> Mapping[str, Any] | None:
    """The trial of the front a study chooses: best on the first objective, ties broken by the next objectives
    in order, then by the lowest trial number."""
    if not front:
        return None
    signs = [1.0 if d == "maximize" else -1.0 for d in directions]
    return min(front, key=lambda r: ([-s * v for s, v in zip(signs, r["values"])], r["number"]))
