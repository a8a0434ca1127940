"""The study's wall-clock budget (``study.timeout_s``): no trial starts once it is spent; running trials finish."""

from __future__ import annotations

import logging
import time

from hpo.study.context import StudyRun

log = logging.getLogger(__name__)


def out_of_time(run: StudyRun) -> bool:
    """True (and remembered on ``run``) once this run's budget is spent: the loop asks for no further trial."""
    limit = run.cfg.study.timeout_s
    if limit is None:
        return False
    if not run.timed_out and time.monotonic() - run.started >= limit:
        run.timed_out = True
        log.warning("study.timeout_s: the %g s budget is spent; no new trial starts, running ones finish", limit)
    return run.timed_out


def record_timeout(run: StudyRun) -> None:
    """Once the loop has ended on the budget: say so where the summary (summary.json, the CLI, MLflow) reads it."""
    if not run.timed_out:
        return
    cfg = run.cfg
    left = max(cfg.study.n_trials - run.driver.n_finished(), 0)
    run.stopped_early = (f"study.timeout_s: the {cfg.study.timeout_s:g} s budget ended the study after "
                         f"{time.monotonic() - run.started:.0f} s; {left} of {cfg.study.n_trials} trials remain "
                         "(rerun the same study to resume them)" if left else
                         f"study.timeout_s: the {cfg.study.timeout_s:g} s budget was spent as the last trial ended")
