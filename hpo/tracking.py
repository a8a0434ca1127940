"""MLflow tracking: one experiment per study, a parent run per study, a child run per trial.

Uses ``MlflowClient`` rather than the fluent API so that no global "active run"
state is shared with user code, and each call says which run it writes to.
Per-epoch metrics are sent with ``log_batch`` (one call per epoch).

A study never stops because its tracking store is unreachable. Every call goes
through :meth:`Tracker._send`: a call that fails for a reason that may pass (the
server is down or times out, the store is locked or cannot be written) is
retried once after a short pause, then appended to ``<run_dir>/mlflow_outbox.jsonl``
(one JSON line per call) and the study goes on. Runs created while the store is
unreachable get local ids (``offline-...``) that later calls refer to; the real
ids they receive on delivery are kept in ``mlflow_outbox.ids.json``. While calls
wait in the outbox, new calls queue behind them (order is kept) and every
``probe_s`` seconds the outbox is replayed, so a store that comes back mid-study
catches up by itself. What is still queued at the end is reported, and
``hpo sync RUN_DIR`` (:func:`sync`) replays it later. Errors the store returns on
purpose (4xx: an invalid value, a missing run) are not retried.

Writes that return nothing the study needs (a trial's epochs, its end, artifacts)
are handed to one background thread, in order, so a trial does not wait for
them: on the embedded SQLite store they cost ~17 ms per trial (~1.5% of a
one-second trial), on a remote server one round trip each. MLflow's own
``synchronous=False`` logging covers ``log_batch`` only and would bypass the
outbox above, hence our thread. The next trial's run is created meanwhile (it
depends on none of them); calls that read the store or end the study first wait
until everything handed over is delivered or queued in the outbox
(:meth:`Tracker.wait`), and an error the store returns on purpose is raised
there. What the thread has not written when the process is killed outright (at
most the last trial's end) is lost, as a call in flight was before; the study's
end marks such runs KILLED. A worker of a shared study waits for each trial's
end before its next trial: the study's owner reads those runs.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import re
import threading
import time
import uuid
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from hpo.mlflow_writer import WRITE_OPS, Refused, WriteFailed, WriterUnavailable, execute_write, open_client, \
    shared_writer, writer_failed
from hpo.repro import redact

log = logging.getLogger(__name__)

STUDY_TAG = "hpo.study"
KIND_TAG = "hpo.kind"
TRIAL_TAG = "hpo.trial"
MAX_PARAM_LEN = 6000
OUTBOX = "mlflow_outbox.jsonl"
OUTBOX_IDS = "mlflow_outbox.ids.json"
LOCAL_PREFIX = "offline-"
# Writes the study needs no reply to. A trial's run is still created before it trains: a worker killed
# mid-trial leaves a run that the study's end marks KILLED, instead of no trace in MLflow.
BACKGROUND_OPS = frozenset({"log_batch", "terminate", "artifact"})
# Our own, short retry policy for HTTP stores (MLflow's default retries for about four minutes per call);
# a value the user set in the environment wins.
QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}
_CREDENTIALS = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]+):[^@\s]+@")


def _is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://", "databricks"))


def default_tracking_uri(run_dir: Path) -> str:
    return f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"


def _param_value(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return s[:MAX_PARAM_LEN]


def scrub(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    return _CREDENTIALS.sub(r"\1:***@", text)


def is_transient(exc: BaseException) -> bool:
    """True when a failed tracking call may succeed later (unreachable, timed out, locked, unwritable)."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, _Refused):
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


_Refused = Refused  # a queued call that can never be delivered (its file is gone)


class _Unmapped(Exception):
    """A call that refers to a run created offline whose creation is not delivered yet."""


@contextmanager
def _quick_http() -> Iterator[None]:
    added = [k for k in QUICK_HTTP if k not in os.environ]
    for k in added:
        os.environ[k] = QUICK_HTTP[k]
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


@dataclass
class SyncResult:
    """What :func:`sync` delivered."""

    delivered: int
    remaining: int
    refused: list[str] = field(default_factory=list)
    error: str | None = None


class Tracker:
    """Writes a study and its trials to an MLflow tracking store; queues what it cannot deliver."""

    def __init__(self, uri: str, experiment: str, artifact_root: Path | None = None, shared: bool = False,
                 run_dir: Path | None = None, probe_s: float = 10.0, retry_pause_s: float = 0.5,
                 background: bool = True) -> None:
        self._setup(uri, run_dir if run_dir is not None else (artifact_root.parent if artifact_root else None),
                    shared, probe_s, retry_pause_s)
        self._background = background
        if background:
            shared_writer()  # starts the writer process now: it imports MLflow while the study sets up
        if self._pending:  # calls a previous, interrupted run of this study could not deliver
            self.flush()
        # A server's default artifact root serves every machine; a local directory only this one.
        location = artifact_root.resolve().as_uri() if artifact_root is not None and not _is_server(uri) else None
        self.experiment_id = self._send({"op": "experiment", "name": experiment, "location": location}, creates=True)
        self.parent_run_id: str | None = None

    @classmethod
    def for_replay(cls, uri: str, run_dir: Path) -> "Tracker":
        """A tracker that only replays ``run_dir``'s outbox (``hpo sync``)."""
        self = cls.__new__(cls)
        self._setup(uri, run_dir, False, 0.0, 0.5)
        self._background = False
        self.experiment_id = None
        self.parent_run_id = None
        return self

    def _setup(self, uri: str, run_dir: Path | None, shared: bool, probe_s: float, retry_pause_s: float) -> None:
        import mlflow

        self.uri = uri
        self._mlflow = mlflow
        from hpo.mlflow_schema import seed_sqlite_store

        seed_sqlite_store(uri)  # a new embedded store: copy the migrated schema instead of migrating (~1.6 s)
        self.client = open_client(uri)
        self.shared = shared  # other processes log to the same study: never touch their running runs
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.probe_s = probe_s
        self.retry_pause_s = retry_pause_s
        self._down_since: float | None = None
        self._last_failure = 0.0
        self._warned_disk = False
        self.refused: list[str] = []  # queued calls the store refused on replay (reported, then dropped)
        self._dead_refs: set[str] = set()
        self._ids: dict[str, str] = {}
        self._pending: list[dict[str, Any]] = []
        self._epochs: dict[str, list[list[Any]]] = {}  # run id -> epoch metrics not sent yet (log_epoch)
        self._epochs_sent: dict[str, float] = {}
        self._background = False
        self._live: dict[str, str] = {}  # local id -> store id of runs the background thread created
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        self._store_lock = threading.RLock()  # one call to the store (and the outbox) at a time
        self._hurry = threading.Event()  # set while someone waits for the handed-over calls
        self._inbox: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        self._error: BaseException | None = None  # the first call the store refused in the background
        if self.outbox_path is not None and self.outbox_path.exists():
            self._pending = [json.loads(line) for line in self.outbox_path.read_text().splitlines() if line.strip()]
        if self.ids_path is not None and self.ids_path.exists():
            self._ids = dict(json.loads(self.ids_path.read_text()).get("ids", {}))

    # -- the outbox ----------------------------------------------------------------------
    @property
    def outbox_path(self) -> Path | None:
        return self.run_dir / OUTBOX if self.run_dir is not None else None

    @property
    def ids_path(self) -> Path | None:
        return self.run_dir / OUTBOX_IDS if self.run_dir is not None else None

    @property
    def pending(self) -> int:
        """Calls queued in the outbox, not delivered yet."""
        self.wait()
        return len(self._pending)

    @property
    def ids(self) -> dict[str, str]:
        """Local id of a run or experiment created offline -> its id in the store, once delivered."""
        self.wait()
        return dict(self._ids)

    def run_id(self, ref: str) -> str:
        """The store's id of the run ``ref`` names (``ref`` itself while its creation waits in the outbox)."""
        if not ref.startswith(LOCAL_PREFIX):
            return ref
        self.wait()
        return self._live.get(ref) or self._ids.get(ref) or ref

    def undelivered_message(self) -> str | None:
        """The line a summary prints while calls wait in the outbox (None when there are none)."""
        self.wait()
        if not self._pending:
            return None
        where = self.run_dir if self.run_dir is not None else "RUN_DIR"
        return (f"{len(self._pending)} MLflow calls could not be delivered to {scrub(redact(self.uri))}; they are kept in "
                f"{self.outbox_path}; run `hpo sync {where}` once the tracking store is reachable")

    def healthy(self) -> bool:
        """True when nothing waits in the outbox (after one attempt to deliver it)."""
        self.wait()
        if self._pending:
            self.flush()
        return not self._pending

    def _blocked(self) -> bool:
        return any(op["op"] != "artifact" for op in self._pending)

    def _queue(self, op: dict[str, Any]) -> Any:
        # Runs the background thread created are known here only: the outbox names them by their store ids,
        # so a later process (``hpo sync``) can deliver what refers to them.
        for k, v in list(op.items()):
            if isinstance(v, str) and v in self._live:
                op[k] = self._live[v]
            elif k == "tags" and isinstance(v, dict):
                op[k] = {tk: self._live.get(tv, tv) if isinstance(tv, str) else tv for tk, tv in v.items()}
        self._pending.append(op)
        if self.outbox_path is not None:
            try:
                with open(self.outbox_path, "a") as f:
                    f.write(json.dumps(op) + "\n")
            except OSError as exc:
                if not self._warned_disk:
                    log.error("MLflow calls cannot be queued in %s either (%s); they are kept in memory only",
                              self.outbox_path, exc)
                    self._warned_disk = True
        return op.get("ref")

    def _save(self) -> None:
        """Rewrite the outbox with what is still queued, and the id map."""
        if self.run_dir is None:
            return
        try:
            tmp = self.ids_path.with_suffix(".tmp")  # type: ignore[union-attr]
            tmp.write_text(json.dumps({"uri": scrub(redact(self.uri)), "ids": self._ids}, indent=1))
            tmp.replace(self.ids_path)  # type: ignore[arg-type]
            if self._pending:
                tmp = self.outbox_path.with_suffix(".tmp")  # type: ignore[union-attr]
                tmp.write_text("".join(json.dumps(op) + "\n" for op in self._pending))
                tmp.replace(self.outbox_path)  # type: ignore[arg-type]
            else:
                self.outbox_path.unlink(missing_ok=True)  # type: ignore[union-attr]
        except OSError as exc:
            log.error("could not rewrite the MLflow outbox in %s (%s)", self.run_dir, exc)

    def flush(self) -> int:
        """Deliver the queued calls in order; returns how many are still queued.

        Delivery stops at the first call that still fails for a transient reason (the calls after it
        stay queued, in order), except that a failing artifact upload does not hold up the others.
        A call the store refuses (4xx) is dropped and listed in :attr:`refused`."""
        self.wait()
        with self._store_lock:
            return self._flush()

    def _flush(self) -> int:
        if not self._pending:
            return 0
        remaining: list[dict[str, Any]] = []
        delivered = 0
        stopped = False
        for op in self._pending:
            if stopped:
                remaining.append(op)
                continue
            if op.get("ref") in self._ids:  # created by an earlier replay that was cut short
                delivered += 1
                continue
            try:
                result = self._deliver(op, retry=False)
            except _Unmapped as exc:
                if str(exc) in self._dead_refs:  # its run was refused: so is everything logged to it
                    self.refused.append(f"{op['op']} refused: it refers to a run the store refused to create")
                    if op.get("ref"):
                        self._dead_refs.add(op["ref"])
                else:
                    remaining.append(op)
                continue
            except Exception as exc:
                if is_transient(exc):
                    remaining.append(op)
                    self._note_failure(exc)
                    if op["op"] != "artifact":
                        stopped = True
                    continue
                reason = f"{op['op']} refused: {scrub(str(exc))[:300]}"
                if op.get("ref"):
                    self._dead_refs.add(op["ref"])
                log.warning("queued MLflow call dropped: %s", reason)
                self.refused.append(reason)
                continue
            delivered += 1
            if op.get("ref"):
                self._ids[op["ref"]] = result
                self._save_ids_only()
        self._pending = remaining
        self._save()
        if delivered and not self._blocked():
            self._down_since = None
            log.warning("MLflow tracking store %s is reachable again: %d queued calls delivered",
                        scrub(redact(self.uri)), delivered)
        return len(remaining)

    def _save_ids_only(self) -> None:
        if self.ids_path is None:
            return
        try:
            self.ids_path.write_text(json.dumps({"uri": scrub(redact(self.uri)), "ids": self._ids}, indent=1))
        except OSError:
            pass

    def _note_failure(self, exc: BaseException) -> None:
        self._last_failure = time.monotonic()
        if self._down_since is None:
            self._down_since = self._last_failure
            log.warning("MLflow tracking store %s is unreachable or cannot be written (%s: %s); the study goes on "
                        "and its tracking calls are queued in %s", scrub(redact(self.uri)), type(exc).__name__,
                        scrub(str(exc))[:300], self.outbox_path)

    # -- sending ----------------------------------------------------------------------------
    def _send(self, op: dict[str, Any], creates: bool = False) -> Any:
        """Deliver one call now, or queue it; returns what the call returns (a local id when a create is queued
        or handed to the background thread)."""
        if creates:
            op["ref"] = LOCAL_PREFIX + uuid.uuid4().hex[:16]
        if self._background and op["op"] in BACKGROUND_OPS:
            self._hand_over(op)
            return op.get("ref")
        if op["op"] == "create_run":
            # A new trial's run depends on nothing handed over (the calls of earlier runs): it does not wait for
            # them, so they are written while this trial trains. If it cannot be written now, it is queued
            # behind them, so the outbox keeps the order the calls were made in.
            failed = False
            with self._store_lock:
                if not self._blocked():
                    try:
                        return self._deliver(op, retry=True)
                    except _Unmapped:
                        failed = True
                    except Exception as exc:
                        if not is_transient(exc):
                            raise
                        self._note_failure(exc)
                        failed = True
            self.wait()
            with self._store_lock:
                return self._queue(op) if failed else self._send_now(op)
        self.wait()  # everything else keeps the order
        with self._store_lock:
            return self._send_now(op)

    # -- the background thread ------------------------------------------------------------
    def wait(self) -> None:
        """Block until every call handed to the background thread is delivered or queued in the outbox;
        raise the first error the store returned on purpose meanwhile."""
        if self._thread is not None or self._inbox.unfinished_tasks:
            self._hurry.set()
            try:
                self._inbox.join()
            finally:
                self._hurry.clear()
        if self._error is not None:
            exc, self._error = self._error, None
            raise exc

    def close(self) -> None:
        """Deliver what was handed over and stop the background thread (it restarts if used again)."""
        self.wait()
        with self._thread_lock:
            thread, self._thread = self._thread, None
            if thread is not None:
                self._inbox.put((0.0, {"op": "_stop"}))
        if thread is not None:
            thread.join()

    def _hand_over(self, op: dict[str, Any]) -> None:
        with self._thread_lock:
            self._inbox.put((time.monotonic(), op))
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="hpo-mlflow", daemon=True)
                self._thread.start()
                _LIVE.add(self)

    IDLE_S = 30.0  # the thread ends after this long without work
    # A call is written this long after it is handed over (unless someone waits): a trial's last calls then go
    # out while the next trial trains and its Python-bound work (ask, tell, building the model) does not share
    # the interpreter with them.
    LINGER_S = 0.25

    def _work(self) -> None:
        while True:
            try:
                handed, op = self._inbox.get(timeout=self.IDLE_S)
            except queue.Empty:
                with self._thread_lock:
                    if self._inbox.empty():
                        self._thread = None
                        return
                continue
            try:
                if op["op"] == "_stop":
                    return
                self._hurry.wait(handed + self.LINGER_S - time.monotonic())
                if op["op"] in WRITE_OPS:
                    # A new helper imports MLflow for seconds: wait for it here, not while holding the store
                    # lock the next trial's run creation needs.
                    writer = shared_writer()
                    if writer is not None:
                        try:
                            writer.ready()
                        except WriterUnavailable as exc:
                            writer_failed(exc)
                with self._store_lock:
                    result = self._send_now(op)
                if op.get("ref") and result is not None and result != op["ref"]:
                    self._live[op["ref"]] = result
            except Exception as exc:  # refused on purpose (4xx): raised to the study at its next wait()
                log.error("MLflow refused a %s call: %s", op.get("op"), scrub(str(exc))[:300])
                if self._error is None:
                    self._error = exc
            finally:
                self._inbox.task_done()

    def _send_now(self, op: dict[str, Any]) -> Any:
        if self._blocked():  # earlier calls wait: keep the order, and only probe the store now and then
            if time.monotonic() - self._last_failure < self.probe_s:
                return self._queue(op)
            self._flush()
            if self._blocked():
                return self._queue(op)
        try:
            return self._deliver(op, retry=True)
        except _Unmapped:
            return self._queue(op)
        except Exception as exc:
            if not is_transient(exc):
                raise
            self._note_failure(exc)
            return self._queue(op)

    def _deliver(self, op: dict[str, Any], retry: bool) -> Any:
        with _quick_http():
            try:
                return self._execute(op)
            except Exception as exc:
                if not retry or not is_transient(exc) or isinstance(exc, _Unmapped):
                    raise
            time.sleep(self.retry_pause_s)
            return self._execute(op)

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, str) and value.startswith(LOCAL_PREFIX):
            found = self._live.get(value) or self._ids.get(value)
            if found is None:
                raise _Unmapped(value)
            return found
        return value

    def _execute(self, op: dict[str, Any]) -> Any:
        from mlflow.entities import Param, RunTag
        from mlflow.exceptions import MlflowException

        c = self.client
        kind = op["op"]
        if kind == "experiment":
            exp = c.get_experiment_by_name(op["name"])
            if exp is not None:
                return exp.experiment_id
            try:
                return c.create_experiment(op["name"], artifact_location=op["location"])
            except MlflowException:
                # Another worker created it between our lookup and our create.
                exp = c.get_experiment_by_name(op["name"])
                if exp is None:
                    raise
                return exp.experiment_id
        if kind == "start_study":
            exp_id = self._resolve(op["exp"])
            found = c.search_runs(
                [exp_id], max_results=1,
                filter_string=f"tags.`{STUDY_TAG}` = '{op['study']}' and tags.`{KIND_TAG}` = 'study'")
            if found:
                run_id = found[0].info.run_id
                c.update_run(run_id, status="RUNNING")
                if op["kill_orphans"]:
                    self._kill_orphans(exp_id, run_id)
            else:
                run_id = op.get("_created") or c.create_run(
                    exp_id, run_name=op["study"], tags={STUDY_TAG: op["study"], KIND_TAG: "study"}).info.run_id
                op["_created"] = run_id
                c.log_batch(run_id, params=[Param(k, v) for k, v in op["params"].items()])
            c.log_batch(run_id, tags=[RunTag(k, v) for k, v in op["tags"].items()])
            return run_id
        if kind == "create_run":
            tags = {k: self._resolve(v) for k, v in op["tags"].items()}
            run_id = op.get("_created") or c.create_run(self._resolve(op["exp"]), run_name=op["run_name"],
                                                        tags=tags).info.run_id
            op["_created"] = run_id  # a retry after a failed params call does not create a second run
            if op["params"]:
                c.log_batch(run_id, params=[Param(k, v) for k, v in op["params"].items()])
            return run_id
        if kind in WRITE_OPS:
            write = {**op, "run": self._resolve(op["run"])}
            writer = shared_writer() if threading.current_thread() is self._thread else None
            if writer is not None:
                try:
                    writer.call(self.uri, write)
                    return None
                except WriterUnavailable as exc:  # made here instead, and from now on in this process
                    writer_failed(exc)
            execute_write(c, write)
            return None
        if kind == "kill_orphans":
            self._kill_orphans(self._resolve(op["exp"]), self._resolve(op["parent"]))
            return None
        raise ValueError(f"unknown outbox call {kind!r}")

    # -- study -----------------------------------------------------------------------
    def start_study(self, study: str, params: Mapping[str, Any], tags: Mapping[str, Any]) -> str:
        """Create the study's parent run, or reopen it when the study resumes."""
        run_id = self._send({"op": "start_study", "exp": self.experiment_id, "study": study,
                             "params": {k: _param_value(redact(v)) for k, v in params.items()},
                             "tags": {k: _param_value(redact(v)) for k, v in tags.items()},
                             "kill_orphans": not self.shared}, creates=True)
        self.parent_run_id = run_id
        return run_id

    def _kill_orphans(self, experiment_id: str, parent_id: str) -> None:
        """Trial runs left RUNNING by a killed process are marked KILLED."""
        for r in self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}' and attributes.status = 'RUNNING'",
        ):
            self.client.set_terminated(r.info.run_id, status="KILLED")

    def kill_orphans(self) -> None:
        """Trial runs still RUNNING once every trial of the study has finished belonged to dead processes."""
        assert self.parent_run_id is not None
        self._send({"op": "kill_orphans", "exp": self.experiment_id, "parent": self.parent_run_id})

    def trial_runs(self) -> dict[int, str]:
        """Trial number -> run id of this study's finished trial runs (the latest run per number).

        Empty (with a warning) when the store cannot be read now."""
        assert self.parent_run_id is not None
        self.wait()
        try:
            with _quick_http():
                return self._trial_runs(self._resolve(self.experiment_id), self._resolve(self.parent_run_id))
        except Exception as exc:
            if not (is_transient(exc) or isinstance(exc, _Unmapped)):
                raise
            log.warning("the trials of other workers cannot be read from MLflow now (%s)", scrub(str(exc))[:200])
            return {}

    def _trial_runs(self, experiment_id: str, parent_id: str) -> dict[int, str]:
        out: dict[int, tuple[int, str]] = {}
        token = None
        while True:
            page = self.client.search_runs(
                [experiment_id], max_results=1000, page_token=token,
                filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}' and tags.`{KIND_TAG}` = 'trial' "
                              "and attributes.status != 'RUNNING'")
            for r in page:
                n = int(r.data.tags[TRIAL_TAG])
                if n not in out or r.info.start_time > out[n][0]:
                    out[n] = (r.info.start_time, r.info.run_id)
            token = page.token
            if not token:
                break
        return {n: v[1] for n, v in out.items()}

    def download_trial_files(self, run_id: str, dest: Path) -> None:
        """A trial's result.json and logits logged by the machine that ran it."""
        import tempfile

        self.wait()
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp, _quick_http():
            got = Path(self._mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="trial", dst_path=tmp,
                                                                 tracking_uri=self.uri))
            for f in got.iterdir():
                f.replace(dest / f.name)

    def end_study(self, metrics: Mapping[str, float], tags: Mapping[str, Any], status: str = "FINISHED") -> None:
        assert self.parent_run_id is not None
        self._log_batch(self.parent_run_id, metrics, tags)
        self._send({"op": "terminate", "run": self.parent_run_id, "status": status})
        self.close()

    def log_study_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        assert self.parent_run_id is not None
        self.log_artifact(self.parent_run_id, path, artifact_path)

    # -- trials ------------------------------------------------------------------------
    def start_trial(self, number: int, params: Mapping[str, Any], tags: Mapping[str, Any]) -> str:
        assert self.parent_run_id is not None
        run_id = self._send({
            "op": "create_run", "exp": self.experiment_id, "run_name": f"trial-{number:04d}",
            "tags": {"mlflow.parentRunId": self.parent_run_id, KIND_TAG: "trial", TRIAL_TAG: str(number),
                     **{k: _param_value(v) for k, v in tags.items()}},
            "params": {k: _param_value(v) for k, v in params.items()},
        }, creates=True)
        # The first epochs wait EPOCH_FLUSH_S too: a trial shorter than that sends its epochs once, at its end.
        self._epochs_sent[run_id] = time.monotonic()
        return run_id

    # Per-epoch metrics reach the store at most this often per run, and at the trial's end. Each flush is a
    # log_batch call: ~15 ms of SQLAlchemy work on the embedded SQLite store (in the writer process, or in the
    # background thread, holding the interpreter lock, where there is none), CPU time a 2-core machine also
    # needs for training. Every 2 s keeps that under 1% of a trial's time and the MLflow UI still follows a
    # long trial.
    EPOCH_FLUSH_S = 2.0
    MAX_BATCH = 1000  # MLflow's log_batch limit on metrics per call

    def log_epoch(self, run_id: str, epoch: int, logs: Mapping[str, float]) -> None:
        """Queue one epoch's metrics (``epoch_select_*``, ``epoch_audit_*``, ``epoch_train_*``) for ``run_id``.

        Epochs are written in batches: one ``log_batch`` per epoch cost ~12 ms on the embedded SQLite
        store (a transaction each), 0.36 s per 30-epoch trial. A batch goes out once ``EPOCH_FLUSH_S`` has
        passed since the run's start or its last batch, so the MLflow UI still follows a trial live, and
        the rest with the trial's final metrics at ``end_trial``; each metric keeps its own epoch step and
        timestamp."""
        now = int(time.time() * 1000)
        buf = self._epochs.setdefault(run_id, [])
        for k, v in logs.items():
            if k.startswith("val_"):
                name = "select_" + k[4:]
            elif k.startswith("audit_"):
                name = k
            else:
                name = "train_" + k
            try:
                buf.append([f"epoch_{name}", float(v), now, epoch])
            except (TypeError, ValueError):
                continue
        if time.monotonic() - self._epochs_sent.get(run_id, 0.0) >= self.EPOCH_FLUSH_S:
            self.flush_epochs(run_id)

    def flush_epochs(self, run_id: str) -> None:
        """Send ``run_id``'s queued epoch metrics now."""
        buf = self._epochs.pop(run_id, [])
        self._epochs_sent[run_id] = time.monotonic()
        for i in range(0, len(buf), self.MAX_BATCH):
            self._send({"op": "log_batch", "run": run_id, "metrics": buf[i:i + self.MAX_BATCH], "tags": {}})

    def _log_batch(self, run_id: str, metrics: Mapping[str, float | None], tags: Mapping[str, Any],
                   before: Sequence[list[Any]] = ()) -> None:
        """One ``log_batch`` call (more past MAX_BATCH metrics) with ``before`` (queued epoch metrics) first."""
        now = int(time.time() * 1000)
        rows = [*before, *([k, float(v), now, 0] for k, v in metrics.items() if v is not None)]
        starts = range(0, len(rows), self.MAX_BATCH) if rows else [0]
        for i in starts:
            last = i == starts[-1]
            self._send({"op": "log_batch", "run": run_id, "metrics": rows[i:i + self.MAX_BATCH],
                        "tags": {k: _param_value(v) for k, v in tags.items()} if last else {}})

    def tag_run(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Set tags on a run, open or ended."""
        self._log_batch(run_id, {}, tags)

    def end_trial(self, run_id: str, metrics: Mapping[str, float], tags: Mapping[str, Any], failed: bool) -> None:
        self._epochs_sent.pop(run_id, None)
        # The epochs not sent yet and the final metrics and tags in one call: each call is a transaction.
        self._log_batch(run_id, metrics, tags, before=self._epochs.pop(run_id, []))
        self._send({"op": "terminate", "run": run_id, "status": "FAILED" if failed else "FINISHED"})

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self._send({"op": "artifact", "run": run_id, "path": str(Path(path).resolve()), "artifact_path": artifact_path})


_LIVE: "weakref.WeakSet[Tracker]" = weakref.WeakSet()  # trackers whose background thread may hold calls


@atexit.register
def _drain_at_exit() -> None:
    """A process that ends without closing its tracker still delivers what it handed over."""
    for tracker in list(_LIVE):
        try:
            tracker.close()
        except Exception as exc:  # at exit: report, never raise
            log.error("MLflow calls not delivered at exit: %s", scrub(str(exc))[:300])


def sync(run_dir: Path, uri: str) -> SyncResult:
    """Replay ``run_dir``'s MLflow outbox against ``uri`` (``hpo sync``).

    Runs created offline get their real ids; ``summary.json`` and the trials' ``result.json`` are
    rewritten to name them."""
    run_dir = Path(run_dir)
    tracker = Tracker.for_replay(uri, run_dir)
    before = tracker.pending
    if not before:
        return SyncResult(0, 0)
    left = tracker.flush()
    ids = tracker.ids
    for path in [run_dir / "summary.json", *sorted((run_dir / "trials").glob("*/result.json"))]:
        if not path.exists():
            continue
        try:
            data = json.loads(path.read_text())
            changed = False
            for key in ("parent_run_id", "mlflow_run_id"):
                if data.get(key) in ids:
                    data[key] = ids[data[key]]
                    changed = True
            if changed:
                tmp = path.with_suffix(".json.tmp")
                tmp.write_text(json.dumps(data, indent=2, default=str))
                tmp.replace(path)
        except (OSError, ValueError) as exc:
            log.warning("could not update %s with the delivered run ids (%s)", path, exc)
    error = None
    if left:
        error = f"{left} calls still cannot be delivered to {scrub(redact(uri))}; is the tracking store reachable?"
    return SyncResult(delivered=before - left - len(tracker.refused), remaining=left, refused=list(tracker.refused),
                      error=error)
