"""Several processes on one shared storage (``hpo worker``): one MLflow parent run for the study, and the
owner's view of the trials other processes ran."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from hpo.drivers.base import Driver
from hpo.results import load_results, trial_dir, write_json

if TYPE_CHECKING:
    from hpo.study.context import StudyRun
    from hpo.tracking import Tracker

log = logging.getLogger(__name__)


def shared_parent_run(driver: Driver, tracker: "Tracker", name: str, params: dict[str, Any],
                      tags: dict[str, Any], timeout_s: float = 120.0) -> str:
    """The study's MLflow parent run: made by the process that created the study, found by the others."""
    if driver.created or (driver.parent_run_id() is None and _creator_gone(driver, timeout_s)):
        parent = tracker.start_study(name, params=params, tags=tags)
        driver.set_parent_run_id(parent)
        return parent
    parent = driver.parent_run_id()
    assert parent is not None
    tracker.parent_run_id = parent
    tracker.client.update_run(parent, status="RUNNING")
    return parent


def _creator_gone(driver: Driver, timeout_s: float) -> bool:
    """Wait for the study's creator to record its parent run; True if it never does (it died first)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if driver.parent_run_id() is not None:
            return False
        time.sleep(0.5)
    return True


def collect_shared_results(run: "StudyRun") -> None:
    """The owner of a shared study, once its own trials are done: wait for the other workers' last trials, then
    take every finished trial into ``run.results`` (fetching the files of trials other machines ran)."""
    run.driver.wait_until_idle()  # the other workers' last trials
    run.results = load_results(run.run_dir)
    _await_remote_runs(run.driver, run.tracker, run.results, run.cfg.driver.grace_s)
    run.results.update(_fetch_remote_trials(run.tracker, run.run_dir, run.results, set(run.driver.finished_numbers())))
    run.tracker.kill_orphans()  # trial runs of workers that died


def _await_remote_runs(driver: Driver, tracker: "Tracker", have: Mapping[int, Any], timeout_s: float) -> None:
    """Wait (up to ``timeout_s``) until every finished trial another machine ran has its MLflow run closed.

    A worker closes its run before it tells the storage, but its MLflow calls may wait in its outbox while the
    tracking store is unreachable from its machine; fetching or marking orphans too early would miss or kill
    them. A run still open after ``timeout_s`` belongs to a worker that died, or one whose calls still wait."""
    expected = set(driver.finished_numbers()) - set(have)
    deadline = time.monotonic() + timeout_s
    while expected and time.monotonic() < deadline:
        expected -= set(tracker.trial_runs())
        if expected:
            time.sleep(0.5)


def _fetch_remote_trials(tracker: "Tracker", run_dir: Path, have: Mapping[int, Any],
                         finished: set[int]) -> dict[int, dict[str, Any]]:
    """Trials other machines ran that the engine counts as finished: their result.json and logits, downloaded
    from their MLflow runs (a run of a trial the storage failed as stale, or of a worker that died before its
    tell, is left out)."""
    out: dict[int, dict[str, Any]] = {}
    for number, run_id in tracker.trial_runs().items():
        if number in have or number not in finished:
            continue
        d = trial_dir(run_dir, number)
        try:
            tracker.download_trial_files(run_id, d)
        except Exception as exc:
            log.warning("trial %d: its files could not be fetched from MLflow (%s)", number, exc)
            continue
        if (d / "result.json").exists():
            r = json.loads((d / "result.json").read_text())
            if r.get("predictions_path"):
                r["predictions_path"] = str(d / "predictions.npz")
            r["model_path"] = None  # the model stays on the machine that trained it
            write_json(d / "result.json", r)
            out[number] = r
    return out
