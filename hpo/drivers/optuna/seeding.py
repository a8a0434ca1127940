"""Configurations an Optuna study evaluates first (``enqueue_trial``) and an earlier study's trials as its
sampler's history (``add_trials`` of ``create_trial``): Optuna's own calls for both."""

from __future__ import annotations

from typing import Any, Callable

import optuna

from hpo.drivers.optuna.space import optuna_distributions
from hpo.space import SearchSpace

ENQUEUED_ATTR = "hpo.enqueued"  # a trial the config's study.enqueue asked for (its index there)
WARM_ATTR = "hpo.warm_start"  # a trial copied from an earlier study (its run directory and trial number)


def enqueue_points(study: optuna.Study, points: list[dict[str, Any]], counts: Callable[[Any], bool]) -> int:
    """``enqueue_trial`` each point not already evaluated, waiting or running in the study.

    Optuna's own ``skip_if_exists`` would also skip a point whose trial was interrupted (failed without a
    result), which is not evaluated; ``counts`` tells finished trials from those."""
    waiting = (optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING)
    trials = study.get_trials(deepcopy=False)
    n = 0
    for i, point in enumerate(points):
        if any(t.system_attrs.get("fixed_params") == point and (counts(t) or t.state in waiting) for t in trials):
            continue
        study.enqueue_trial(dict(point), user_attrs={ENQUEUED_ATTR: i}, skip_if_exists=False)
        n += 1
    return n


def add_earlier_trials(study: optuna.Study, space: SearchSpace, records: list[dict[str, Any]], source: str) -> int:
    """The earlier study's COMPLETE trials, as COMPLETE trials of this one (marked, so they count for the sampler
    but not for the budget); only when this study has no trial yet (a rerun does not add them twice)."""
    if study.get_trials(deepcopy=False):
        return 0
    dists = optuna_distributions(space)
    trials = []
    for r in records:
        params = {k: v for k, v in r["params"].items() if k in dists}
        trials.append(optuna.trial.create_trial(
            params=params, distributions={k: dists[k] for k in params}, value=float(r["value"]),
            user_attrs={WARM_ATTR: f"{source}#{r['number']}"}))
    study.add_trials(trials)
    return len(trials)
