"""Tracking calls as data: the format of one call (an "op"), and the one interpreter that makes it.

An op is a JSON-serialisable dict, so the same call can be made now, handed to the background thread,
sent to the writer process or queued in the outbox and replayed by ``hpo sync`` in another process.
``op["op"]`` names the call:

- ``experiment``: ``name``, ``location`` (artifact root or None) -> the experiment id
- ``start_study``: ``exp``, ``study``, ``params``, ``tags``, ``kill_orphans`` -> the parent run's id
  (the study's run is reopened when it exists)
- ``create_run``: ``exp``, ``run_name``, ``tags``, ``params`` -> the run's id
- ``log_batch``: ``run``, ``metrics`` (``[name, value, timestamp_ms, step]`` rows), ``tags``
- ``terminate``: ``run``, ``status``
- ``artifact``: ``run``, ``path``, ``artifact_path``
- ``kill_orphans``: ``exp``, ``parent``

A call that creates something carries ``ref``, the local id (``offline-...``) it is known by until the
store gives it its own; later calls may name that local id wherever a run or experiment id goes, and
``resolve`` turns it into the store's id. A create records what it already created in ``_created``, so
a retry does not create it twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping

STUDY_TAG = "hpo.study"
KIND_TAG = "hpo.kind"
TRIAL_TAG = "hpo.trial"
LOCAL_PREFIX = "offline-"
MAX_PARAM_LEN = 6000
# Writes the study needs no reply to: the background thread makes them, through the writer process where
# it runs. A trial's run is still created before it trains: a worker killed mid-trial leaves a run that
# the study's end marks KILLED, instead of no trace in MLflow.
# MLflow 3's experiment kind: its UI opens a model-training experiment on the runs table (Training runs), not
# on the GenAI overview (traces, an assistant), which it shows an experiment of no declared kind.
KIND_OF_EXPERIMENT = ("mlflow.experimentKind", "custom_model_development")
SHARED_VIEW_PREFIX = "mlflow.sharedViewState."  # + a key: a runs-table view the UI opens with ?viewStateShareKey=
VIEW_KEY = "hpo-study"
NOTE_TAG = "mlflow.note.content"  # the description the MLflow UI shows (markdown) on an experiment or a run
WRITE_OPS = frozenset({"log_batch", "terminate", "artifact"})


class Refused(Exception):
    """A call that can never be delivered (its file is gone)."""


class WriteFailed(Exception):
    """A call the writer process made and the store refused or could not take; ``transient``: it may
    succeed later."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class Unmapped(Exception):
    """A call that refers to a run created offline whose creation is not delivered yet."""


def param_value(v: Any) -> str:
    """A param or tag value as MLflow stores it: a string, JSON for anything else, cut to MLflow's limit."""
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return s[:MAX_PARAM_LEN]


def is_transient(exc: BaseException) -> bool:
    """True when a failed tracking call may succeed later (unreachable, timed out, locked, unwritable)."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, Refused):
        return False
    if isinstance(exc, WriteFailed):  # made by the writer process, which classified it there
        return exc.transient
    if isinstance(exc, MlflowException):
        status = exc.get_http_status_code()
        return not (400 <= status < 500 and status not in (408, 429))
    if isinstance(exc, OSError):  # connection refused, timeouts, requests' errors, unwritable files
        return True
    try:
        import sqlalchemy.exc

        if isinstance(exc, sqlalchemy.exc.OperationalError):
            return True
    except ImportError:  # pragma: no cover - a dependency of MLflow
        pass
    return False


def _same(value: Any) -> Any:
    return value


def execute(client: Any, op: dict[str, Any], resolve: Callable[[Any], Any] = _same) -> Any:
    """Make ``op`` with ``client`` (an ``MlflowClient``); returns the id a create call made, else None.

    ``resolve`` maps a local id to the store's (raising :class:`Unmapped` while it has none)."""
    kind = op["op"]
    if kind == "experiment":
        return _experiment(client, op)
    if kind == "start_study":
        return _start_study(client, op, resolve)
    if kind == "create_run":
        return _create_run(client, op, resolve)
    if kind in WRITE_OPS:
        _write(client, {**op, "run": resolve(op["run"])})
        return None
    if kind == "experiment_tag":
        client.set_experiment_tag(resolve(op["exp"]), op["key"], op["value"])
        return None
    if kind == "kill_orphans":
        kill_orphans(client, resolve(op["exp"]), resolve(op["parent"]))
        return None
    raise ValueError(f"unknown outbox call {kind!r}")


def _experiment(client: Any, op: Mapping[str, Any]) -> str:
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(op["name"])
    if exp is not None:
        if KIND_OF_EXPERIMENT[0] not in exp.tags:  # made by an older version: the UI would open on GenAI pages
            client.set_experiment_tag(exp.experiment_id, *KIND_OF_EXPERIMENT)
        return exp.experiment_id
    try:
        return client.create_experiment(op["name"], artifact_location=op["location"],
                                        tags=dict([KIND_OF_EXPERIMENT]))
    except MlflowException:
        # Another worker created it between our lookup and our create.
        exp = client.get_experiment_by_name(op["name"])
        if exp is None:
            raise
        return exp.experiment_id


def _start_study(client: Any, op: dict[str, Any], resolve: Callable[[Any], Any]) -> str:
    from mlflow.entities import Param, RunTag

    exp_id = resolve(op["exp"])
    found = client.search_runs(
        [exp_id], max_results=1,
        filter_string=f"tags.`{STUDY_TAG}` = '{op['study']}' and tags.`{KIND_TAG}` = 'study'")
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        if op["kill_orphans"]:
            kill_orphans(client, exp_id, run_id)
    else:
        run_id = op.get("_created") or client.create_run(
            exp_id, run_name=op["study"], tags={STUDY_TAG: op["study"], KIND_TAG: "study"}).info.run_id
        op["_created"] = run_id
        client.log_batch(run_id, params=[Param(k, v) for k, v in op["params"].items()])
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in op["tags"].items()])
    return run_id


def _create_run(client: Any, op: dict[str, Any], resolve: Callable[[Any], Any]) -> str:
    from mlflow.entities import Param

    tags = {k: resolve(v) for k, v in op["tags"].items()}
    run_id = op.get("_created") or client.create_run(resolve(op["exp"]), run_name=op["run_name"],
                                                     tags=tags).info.run_id
    op["_created"] = run_id  # a retry after a failed params call does not create a second run
    if op["params"]:
        client.log_batch(run_id, params=[Param(k, v) for k, v in op["params"].items()])
    return run_id


def _write(client: Any, op: Mapping[str, Any]) -> None:
    """One of :data:`WRITE_OPS`, its run id the store's own."""
    from mlflow.entities import Metric, RunTag

    kind = op["op"]
    if kind == "log_batch":
        client.log_batch(op["run"], metrics=[Metric(k, float(v), ts, step) for k, v, ts, step in op["metrics"]],
                         tags=[RunTag(k, v) for k, v in op["tags"].items()])
    elif kind == "terminate":
        client.set_terminated(op["run"], status=op["status"])
    else:  # artifact
        if not Path(op["path"]).exists():
            raise Refused(f"{op['path']} no longer exists")
        client.log_artifact(op["run"], op["path"], op["artifact_path"])


def kill_orphans(client: Any, experiment_id: str, parent_id: str) -> None:
    """Trial runs left RUNNING by a killed process are marked KILLED."""
    for r in client.search_runs(
        [experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}' and attributes.status = 'RUNNING'",
    ):
        client.set_terminated(r.info.run_id, status="KILLED")


def resolve_local(value: Any, *known: Mapping[str, str]) -> Any:
    """``value``, or the store's id of the local id it is (looked up in ``known`` in order); raises
    :class:`Unmapped` for a local id whose creation is not delivered yet."""
    if isinstance(value, str) and value.startswith(LOCAL_PREFIX):
        for ids in known:
            if ids.get(value):
                return ids[value]
        raise Unmapped(value)
    return value
