"""The checks on several objectives and on ``constraints``: which drivers, samplers and other fields they combine
with. A constraint's metric is checked against what the model reports by the study's preflight build
(:func:`hpo.study.prepare.prepare`), also before any trial runs."""

from __future__ import annotations

import math
import re

from hpo.config.schema import SAMPLERS, StudyConfig
from hpo.errors import ConfigError
from hpo.objectives import MEASURES

MULTI_OBJECTIVE_SAMPLERS = ("tpe", "nsga2", "random")  # Optuna samplers that take several objectives


def check_objectives(cfg: StudyConfig) -> None:
    """Several objectives and constraints: what they need, and the fields they do not combine with."""
    first = "objective[0].metric" if cfg.multi_objective else "objective.metric"
    if cfg.objective.metric in MEASURES:
        raise ConfigError(first, f"{cfg.objective.metric!r} is a built-in measure, not a metric the model reports: "
                                 "the first objective is scored on select and guarded against audit; put a model "
                                 f"metric such as 'accuracy' first and {cfg.objective.metric!r} after it")
    if cfg.multi_objective:
        _check_several(cfg)
    for i, c in enumerate(cfg.constraints):
        _check_bound(i, c.metric, c.min, c.max)
    if cfg.constraints:
        # every Optuna sampler: each trial carries its constraint values (Trial.set_constraint), which best_trials
        # respects; TPE, NSGA-II and GP also steer their sampling away from infeasible trials
        _needs_optuna(cfg, "constraints", "constraints", SAMPLERS["optuna"], "constraints")
        if cfg.guards.reselect_top_k:
            raise ConfigError("guards.reselect_top_k", "reselection ranks by the objective alone and could choose "
                                                       "an infeasible trial: set reselect_top_k: 0 with constraints")


def _needs_optuna(cfg: StudyConfig, field: str, what: str, samplers: tuple[str, ...], feature: str) -> None:
    """``what`` needs the optuna driver with one of ``samplers``, unpacked trials and no warm start."""
    if cfg.driver.name != "optuna":
        fix = "give objective one metric" if field == "objective" else "remove constraints"
        raise ConfigError(field, f"{what} need the optuna driver (its multi-objective and constrained samplers); "
                                 f"{cfg.driver.name} optimises one metric without constraints: set driver.name: "
                                 f"optuna, or {fix}")
    if cfg.driver.sampler not in samplers:
        raise ConfigError("driver.sampler", f"{what} need a sampler with {feature} ({', '.join(samplers)}), "
                                            f"not {cfg.driver.sampler!r}")
    if cfg.executor.pack > 1:
        raise ConfigError("executor.pack", f"packed trials record no built-in measures, which {what} read: set "
                                           "executor.pack: 1")
    if cfg.study.warm_start:
        raise ConfigError("study.warm_start", f"an earlier study's trials carry one value and no constraints; {what} "
                                              "start without them: remove study.warm_start")


def _check_several(cfg: StudyConfig) -> None:
    n = len(cfg.objectives)
    _needs_optuna(cfg, "objective", f"{n} objectives", MULTI_OBJECTIVE_SAMPLERS, "several objectives")
    if cfg.driver.pruner != "none":
        raise ConfigError("driver.pruner", f"Optuna cannot prune a study with {n} objectives (Trial.report takes "
                                           "one value): set pruner: none, or give objective one metric")
    if cfg.guards.reselect_top_k:
        raise ConfigError("guards.reselect_top_k", f"reselection compares one objective's mean; with {n} "
                                                   "objectives set reselect_top_k: 0")
    if cfg.guards.stop_when_converged:
        raise ConfigError("guards.stop_when_converged", f"the regret bound is for one objective; with {n} "
                                                        "objectives set stop_when_converged: false")


def _check_bound(i: int, metric: str, low: float | None, high: float | None) -> None:
    where = f"constraints[{i}]"
    if not metric or re.match(r"^(test|audit|val)[_:]", metric):
        raise ConfigError(f"{where}.metric", f"{metric!r}: name a built-in measure ({', '.join(MEASURES)}) or a "
                                             "metric the model reports (scored on select, without a split prefix)")
    if low is None and high is None:
        raise ConfigError(where, f"a constraint on {metric!r} needs max:, min: or both")
    for key, v in (("min", low), ("max", high)):
        if v is not None and not math.isfinite(v):
            raise ConfigError(f"{where}.{key}", f"must be a finite number, got {v!r}")
    if low is not None and high is not None and low > high:
        raise ConfigError(where, f"min {low:g} is above max {high:g}: no trial could be feasible")
