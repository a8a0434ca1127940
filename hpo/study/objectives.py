"""Several objectives and constraints in a study: each finished trial's values and feasibility (before it is
recorded and told), and the Pareto front the study ends with.

The chosen trial (the study's ``best_trial``, guarded, plotted and tested) is the feasible front's best trial on
the first objective, ties broken by the next objectives in order, then by the lowest trial number
(:func:`hpo.objectives.chosen_on_front`).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from hpo.config import StudyConfig
from hpo.objectives import (MEASURES, Bound, Objective, chosen_on_front, constraint_names, constraint_values,
                            is_feasible, objective_values)
from hpo.results import TrialResult, TrialState

log = logging.getLogger(__name__)


def objectives_of(cfg: StudyConfig) -> list[Objective]:
    return [(o.metric, o.direction) for o in cfg.objectives]


def bounds_of(cfg: StudyConfig) -> list[Bound]:
    return [(c.metric, c.min, c.max) for c in cfg.constraints]


def score_objectives(cfg: StudyConfig, result: TrialResult) -> None:
    """A finished trial's objective values (several objectives) and constraint values and feasibility
    (``constraints``); a complete trial missing one of its objectives' values fails."""
    if result.state is not TrialState.COMPLETE or not (cfg.multi_objective or cfg.constraints):
        return
    record = {"metrics": result.metrics, "measures": result.measures}
    if cfg.multi_objective:
        result.values = objective_values(record, objectives_of(cfg))
    if cfg.constraints:
        result.constraints = constraint_values(record, bounds_of(cfg))
        result.constraint_names = constraint_names(bounds_of(cfg))
        result.feasible = is_feasible(result.constraints)
    wanted = [m for m, _ in objectives_of(cfg)] * cfg.multi_objective + [m for m, _, _ in bounds_of(cfg)]
    missing = [m for m in dict.fromkeys(wanted) if objective_values(record, [(m, "maximize")]) is None]
    if missing:  # an engine cannot be told a trial without every value (a builder's model reporting NaN, say)
        result.state, result.value, result.values = TrialState.FAILED, None, None
        result.constraints = result.constraint_names = result.feasible = None
        result.error = f"{', '.join(missing)} not measured or not finite for this trial"


def pareto_front(cfg: StudyConfig, results: Mapping[int, Mapping[str, Any]], engine_front: list[int] | None
                 ) -> list[dict[str, Any]] | None:
    """The study's Pareto front as the engine computed it (Optuna's ``best_trials``: non-dominated feasible
    trials on select), each with its values on select and audit; None for a study with one objective and no
    constraints."""
    if not (cfg.multi_objective or cfg.constraints) or engine_front is None:
        return None
    out = []
    for n in engine_front:
        r = results.get(n)
        if r is None or r["state"] != "COMPLETE" or r.get("feasible") is False:
            continue  # a trial of another process not fetched, or (defensively) one recorded infeasible
        values = r.get("values") or [r["value"]]
        out.append({"number": n, "values": values,
                    "select": {m: v for (m, _), v in zip(objectives_of(cfg), values)},
                    "audit": {m: r["metrics"].get(f"audit_{m}") for m, _ in objectives_of(cfg)
                              if f"audit_{m}" in r["metrics"]},
                    "measures": r.get("measures") or {}, "params": r["params"]})
    return out


def chosen_trial(cfg: StudyConfig, front: list[dict[str, Any]] | None) -> int | None:
    """The front's trial the study chooses (see the module's doc); None without a front or with an empty one."""
    if front is None:
        return None
    best = chosen_on_front(front, [o.direction for o in cfg.objectives])
    return None if best is None else int(best["number"])


def objective_guards(run_dir: Any, cfg: StudyConfig, results: list[Mapping[str, Any]], incumbent: int
                     ) -> dict[str, dict[str, Any]]:
    """The guards of every objective after the first on the chosen trial: a model metric's select-against-audit
    gap (as the first objective's report, with that metric's select score as each trial's value); a built-in
    measure has no select and audit to compare and is reported as measured."""
    from hpo.analysis.guards import check_study

    g = cfg.guards
    out: dict[str, dict[str, Any]] = {}
    chosen = next(r for r in results if r["number"] == incumbent)
    for o in cfg.more_objectives:
        if o.metric in MEASURES:
            out[o.metric] = {"measure": (chosen.get("measures") or {}).get(o.metric),
                             "verdict": f"{o.metric}: a built-in measure, no select/audit gap to test"}
            continue
        key = f"select_{o.metric}"
        scored = [{**r, "value": r["metrics"][key]} for r in results
                  if r["state"] == "COMPLETE" and key in r.get("metrics", {})]
        report = check_study(run_dir, scored, metric=o.metric, direction=o.direction, incumbent=incumbent,
                             threshold=g.gap_threshold, n_resamples=g.n_bootstrap, confidence=g.confidence,
                             seed=cfg.study.seed)
        out[o.metric] = report.to_dict() | {"verdict": f"{o.metric}: {report.verdict()}"}
    return out
