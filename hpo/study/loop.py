"""The study loop: ask the engine, run the proposals, tell the results, until the budget is used or the
stopping rule says the search has converged."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from hpo.drivers.base import Wait
from hpo.results import TrialResult, inside, result_dict, trial_dir, write_json
from hpo.study.budget import out_of_time, record_timeout
from hpo.study.context import StudyRun
from hpo.study.signals import raise_if_signalled
from hpo.study.summary import progress
from hpo.study.trials import ask_batch, run_batch

log = logging.getLogger(__name__)


def run_trials(run: StudyRun) -> None:
    """Run the study's remaining trials, in this process or on worker processes."""
    remaining = run.cfg.study.n_trials - run.driver.n_finished()
    if run.plan.slots is None:
        _run_in_process(run, remaining)
    else:
        from hpo.study.pool import run_in_pool

        run_in_pool(run, remaining, lambda result: on_done(run, result))
    record_timeout(run)


def _run_in_process(run: StudyRun, remaining: int) -> None:
    """One proposal at a time, or batches that pack (executor.pack); a batch of one runs as a plain trial."""
    size = run.cfg.executor.pack if run.plan.packing else 1
    while remaining > 0:
        raise_if_signalled()
        if out_of_time(run):
            break
        batch = ask_batch(run, min(size, remaining))
        if batch is None:
            break
        if isinstance(batch, Wait):
            time.sleep(batch.seconds)
            continue
        done = run_batch(run, batch)
        # A shared study's budget is what the storage counts (a superseded trial does not count).
        remaining = run.cfg.study.n_trials - run.driver.n_finished() if run.driver.shared else remaining - len(done)
        if not all([on_done(run, r) for r in done]):  # a list: every result is recorded before stopping
            break


def on_done(run: StudyRun, result: TrialResult) -> bool:
    """Take a finished trial into the study; False when the stopping rule ends the search."""
    cfg = run.cfg
    run.results[result.number] = result_dict(result)
    if cfg.training.keep_top_models is not None:
        retain_models(run.run_dir, run.results, cfg.training.keep_top_models, cfg.objective.direction)
    if run.on_trial_end is not None:
        run.on_trial_end(result, progress(run.results, cfg, run.started))
    if cfg.guards.stop_when_converged and len(run.results) < cfg.study.n_trials:
        run.stopped_early = converged(run)
        if run.stopped_early:
            log.warning("stopping early: %s", run.stopped_early)
            return False
    return True


def converged(run: StudyRun) -> str | None:
    """The stopping rule: the regret bound has fallen below the incumbent's statistical error."""
    from hpo.analysis.guards import regret_bound, statistical_error

    cfg = run.cfg
    complete = [r for r in run.results.values() if r["state"] == "COMPLETE"]
    if len(complete) < cfg.guards.stop_min_trials:
        return None
    best = max(complete, key=lambda r: run.sign * r["value"])
    error = statistical_error(run.run_dir, best, cfg.objective.metric, seed=cfg.study.seed)
    if error is None:
        return None
    bound = regret_bound(run.space, [r["params"] for r in complete], [r["value"] for r in complete],
                         cfg.objective.direction, seed=cfg.study.seed)
    if bound < error:
        return (f"after {len(complete)} complete trials the regret bound {bound:.4g} is below the select "
                f"metric's bootstrap standard error {error:.4g}")
    return None


def retain_models(run_dir: Path, results: dict[int, dict[str, Any]], keep: int, direction: str) -> None:
    """Delete model.keras of every trial outside the best ``keep``; logits and result.json stay."""
    sign = 1 if direction == "maximize" else -1
    # feasible trials first (an infeasible one is never chosen nor ensembled), then by the first objective
    complete = sorted((r for r in results.values() if r["state"] == "COMPLETE" and r.get("model_path")),
                      key=lambda r: (r.get("feasible") is False, -sign * r["value"], r["number"]))
    for r in complete[keep:]:
        model = inside(run_dir, r["model_path"], f"trial {r['number']}: model_path")
        if model is not None and model.is_file():
            model.unlink()
        r["model_path"] = None
        path = trial_dir(run_dir, r["number"]) / "result.json"
        if path.exists():
            saved = json.loads(path.read_text())
            saved["model_path"] = None
            write_json(path, saved)
