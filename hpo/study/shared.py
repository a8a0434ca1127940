"""Several processes on one shared storage (``hpo worker``): one MLflow parent run for the study, and the
owner's view of the trials other processes ran."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from hpo.config import StudyConfig
from hpo.drivers.base import Driver
from hpo.errors import ConfigError
from hpo.redaction import REDACTED, redact
from hpo.results import load_results, trial_dir, write_json

if TYPE_CHECKING:
    from hpo.study.context import StudyRun
    from hpo.tracking import Tracker

log = logging.getLogger(__name__)


FIX = ("give every process of the study one shared tracking store: --tracking-uri http://<mlflow server>:5000 "
       "(or tracking.uri in the config)")


def study_tracking_uri(cfg: StudyConfig, driver: Driver, run_dir: Path, timeout_s: float = 120.0) -> str:
    """The MLflow tracking URI of this process of a study.

    The config's when it names one. Otherwise, the process that created the study uses its run directory's
    embedded store and records that URI (its absolute path, password redacted) with the study; every other
    process of a shared study uses the recorded one, so all trial runs nest under one parent run whatever run
    directory each process keeps its files in. A process that cannot reach the study's store stops here,
    before it takes a trial (:class:`ConfigError` naming ``tracking.uri``).

    Trust: a worker joining with ``--study/--storage`` never takes ``tracking.uri`` from the stored config
    (:mod:`hpo.drivers.stored`); without ``--tracking-uri`` it sends its own trials' records (metrics, its trial
    directories' files) to the URI the creator recorded in the shared database, so whoever can write to that
    database chooses where a worker's results go (never which files: uploads stay inside the worker's run
    directory). Pass ``--tracking-uri`` to choose it yourself."""
    from hpo.tracking import default_tracking_uri
    from hpo.tracking.client import unreachable

    uri = cfg.tracking.uri
    if driver.created or not driver.shared:
        uri = uri or default_tracking_uri(run_dir)
        if driver.shared:
            driver.set_tracking_uri(redact(uri))
        return uri
    if uri is None:
        recorded = _recorded(driver, timeout_s)
        if recorded is None:  # the creator died before recording it (or an older version created the study)
            return default_tracking_uri(run_dir)
        if f":{REDACTED}@" in recorded:
            raise ConfigError("tracking.uri", f"the study's tracking store {recorded} is recorded without its "
                                              f"password; pass --tracking-uri with it")
        uri = recorded
    reason = unreachable(uri)
    if reason:
        raise ConfigError("tracking.uri", f"this process cannot reach the study's MLflow tracking store "
                                          f"{redact(uri)} ({reason}); {FIX}")
    return uri


def _recorded(driver: Driver, timeout_s: float) -> str | None:
    """The tracking URI the study's creator recorded, once its store holds the study's parent run.

    The creator records the URI before it opens the store, and an embedded store's file only exists from then
    on: a process that checked the file as soon as the URI appeared found none (two processes started together;
    found by experiments/shared_bench), so this waits for the parent run id, recorded once the run exists."""
    deadline = time.monotonic() + timeout_s
    while driver.parent_run_id() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    return driver.tracking_uri()


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
    try:
        tracker.client.update_run(parent, status="RUNNING")
    except Exception as exc:
        raise ConfigError("tracking.uri", f"the study's MLflow parent run {parent} is not in the tracking store "
                                          f"{redact(tracker.uri)} ({type(exc).__name__}); {FIX}") from exc
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
