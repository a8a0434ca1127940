"""MLflow writes of a study's background thread, done in a helper process.

A trial's tracking writes (its epoch batches, final metrics, end status, files) cost ~50-80 ms of
Python per trial on the embedded SQLite store (SQLAlchemy's ORM). Done by a thread of the study's
process they hold the interpreter lock the training loop also needs: on 2 CPU cores the study's median
overhead over a bare Keras loop was +9.0% and +19.7% with in-thread writes against -3.0% and +5.0% with
this helper, side by side in one run (experiments/RESULTS.md, overhead). So the tracker's background
thread hands each write to one helper process per study process (``python -m hpo.mlflow_writer``) and
waits for its reply, without the lock.

The protocol is one JSON line each way: ``{"uri": ..., "op": {...}}`` -> ``{"ok": true}`` or
``{"ok": false, "error": ..., "transient": bool, "refused": bool}``. The helper ends when its stdin
closes (the study's process ended, however it ended). Where the helper cannot start or stops answering,
the calls are made in the thread again (``HPO_MLFLOW_WRITER=thread`` asks for that from the start).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)

WRITE_OPS = frozenset({"log_batch", "terminate", "artifact"})  # the calls the helper makes
ENV = "HPO_MLFLOW_WRITER"  # "process" (default) or "thread"
START_TIMEOUT_S = 120.0  # importing MLflow in the helper; seconds on a loaded 2-core machine
CALL_TIMEOUT_S = 300.0  # one call, MLflow's own HTTP retries included


class Refused(Exception):
    """A call that can never be delivered (its file is gone)."""


class WriteFailed(Exception):
    """A call the helper made and the store refused or could not take; ``transient``: it may succeed later."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class WriterUnavailable(OSError):
    """The helper could not start, died or stopped answering."""


def open_client(uri: str) -> Any:
    """An ``MlflowClient`` for ``uri``; on an embedded SQLite store, committing without an fsync each
    (:mod:`hpo.sqlite_wal`). Used by the tracker and by the helper, which write to the same file."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    if uri.startswith("sqlite:///"):
        from hpo.sqlite_wal import use_wal

        try:
            use_wal(client._tracking_client.store.engine)
        except AttributeError:  # another store implementation: leave it as it is
            pass
    return client


def execute_write(client: Any, op: Mapping[str, Any]) -> None:
    """Make one write call (``log_batch``, ``terminate``, ``artifact``) whose run id is the store's own."""
    from mlflow.entities import Metric, RunTag

    kind = op["op"]
    if kind == "log_batch":
        client.log_batch(op["run"], metrics=[Metric(k, float(v), ts, step) for k, v, ts, step in op["metrics"]],
                         tags=[RunTag(k, v) for k, v in op["tags"].items()])
    elif kind == "terminate":
        client.set_terminated(op["run"], status=op["status"])
    elif kind == "artifact":
        if not Path(op["path"]).exists():
            raise Refused(f"{op['path']} no longer exists")
        client.log_artifact(op["run"], op["path"], op["artifact_path"])
    else:
        raise ValueError(f"not a write call: {kind!r}")


class WriterProcess:
    """The helper process, one call at a time (callers from several threads take turns)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._lock = threading.Lock()
        root = str(Path(__file__).resolve().parent.parent)  # so `-m hpo.mlflow_writer` finds this checkout
        env = dict(env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen([sys.executable, "-m", "hpo.mlflow_writer"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, env=env, close_fds=True)
        self._buf = b""
        self._ready = False

    def _line(self, timeout_s: float) -> dict[str, Any]:
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise WriterUnavailable(f"the MLflow writer process did not answer within {timeout_s:.0f} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise WriterUnavailable(f"the MLflow writer process ended (exit code {self._proc.poll()})")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return json.loads(line)

    def ready(self) -> None:
        """Wait until the helper has imported MLflow (seconds after it starts); raises :class:`WriterUnavailable`."""
        with self._lock:
            self._wait_ready()

    def _wait_ready(self) -> None:
        if self._ready:
            return
        try:
            self._line(START_TIMEOUT_S)  # {"ready": true} once MLflow is imported
        except (OSError, ValueError) as exc:
            self.close()
            raise exc if isinstance(exc, WriterUnavailable) else WriterUnavailable(str(exc))
        self._ready = True

    def call(self, uri: str, op: Mapping[str, Any]) -> None:
        """Make ``op`` against ``uri`` in the helper; raises :class:`Refused`, :class:`WriteFailed` or
        :class:`WriterUnavailable`."""
        with self._lock:
            self._wait_ready()
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write(json.dumps({"uri": uri, "op": op}).encode() + b"\n")
                self._proc.stdin.flush()
                reply = self._line(CALL_TIMEOUT_S)
            except (OSError, ValueError) as exc:
                self.close()
                if isinstance(exc, WriterUnavailable):
                    raise
                raise WriterUnavailable(f"the MLflow writer process failed: {exc}") from exc
        if reply.get("ok"):
            return
        if reply.get("refused"):
            raise Refused(reply.get("error", "refused"))
        if reply.get("mlflow_error_code"):  # as MLflow raised it, so callers see the same error as from the thread
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import ErrorCode

            try:
                code = ErrorCode.Value(reply["mlflow_error_code"])
            except ValueError:
                code = ErrorCode.Value("INTERNAL_ERROR")
            raise MlflowException(reply.get("error", "failed"), error_code=code)
        raise WriteFailed(reply.get("error", "failed"), transient=bool(reply.get("transient")))

    def close(self) -> None:
        """Close the helper's stdin (it exits) and reap it."""
        try:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.poll()

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None


_WRITER: WriterProcess | None = None
_WRITER_PID = 0
_WRITER_LOCK = threading.Lock()
_FAILED_PIDS: set[int] = set()  # processes whose helper failed once: they write from the thread from then on


def shared_writer() -> WriterProcess | None:
    """This process's helper, started on first use; None where writes stay in the thread."""
    global _WRITER, _WRITER_PID
    if os.environ.get(ENV, "process").strip().lower() == "thread":
        return None
    pid = os.getpid()
    if pid in _FAILED_PIDS:
        return None
    with _WRITER_LOCK:
        dead = _WRITER is not None and _WRITER_PID == pid and not _WRITER.alive
    if dead:
        writer_failed(WriterUnavailable(f"the MLflow writer process ended (exit code {_WRITER.returncode})"))
        return None
    with _WRITER_LOCK:
        if _WRITER is None or _WRITER_PID != pid:  # a forked child starts its own
            from hpo.tracking import QUICK_HTTP

            env = {**QUICK_HTTP, **os.environ}  # our short HTTP retries, unless the user set theirs
            try:
                _WRITER, _WRITER_PID = WriterProcess(env), pid
            except OSError as exc:
                writer_failed(exc)
                return None
        return _WRITER


def writer_failed(exc: BaseException) -> None:
    """Stop using the helper in this process (its calls are made in the thread from now on)."""
    global _WRITER
    pid = os.getpid()
    if pid not in _FAILED_PIDS:
        log.warning("MLflow writes go back to the study's own thread: %s", exc)
    _FAILED_PIDS.add(pid)
    with _WRITER_LOCK:
        if _WRITER is not None and _WRITER_PID == pid:
            _WRITER.close()
        _WRITER = None


@atexit.register
def _close_at_exit() -> None:
    """Registered before the trackers' own drain (hpo.tracking), so it runs after it: what they hand over
    at exit still goes through the helper."""
    global _WRITER
    with _WRITER_LOCK:
        if _WRITER is not None and _WRITER_PID == os.getpid():
            _WRITER.close()
        _WRITER = None


class _Clients:
    """MLflow clients of the helper, by tracking URI (the few most recent; an old one's engine is closed)."""

    KEEP = 4

    def __init__(self) -> None:
        self._clients: OrderedDict[str, Any] = OrderedDict()

    def get(self, uri: str) -> Any:
        if uri in self._clients:
            self._clients.move_to_end(uri)
            return self._clients[uri]
        client = open_client(uri)
        self._clients[uri] = client
        while len(self._clients) > self.KEEP:
            _, old = self._clients.popitem(last=False)
            try:
                old._tracking_client.store.engine.dispose()
            except AttributeError:
                pass
        return client


def main() -> int:
    """The helper: answer one JSON line per call until stdin closes."""
    import signal

    # Ctrl-C in a terminal reaches the whole process group: the study handles it (its trial is marked, its
    # writes are finished) and this helper must outlive it to make those writes; it ends when stdin closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # what MLflow prints goes to stderr, not the replies
    import mlflow  # noqa: F401  (the slow import, before saying ready)

    from hpo import mlflow_writer as mw
    from hpo.tracking import is_transient, scrub

    clients = _Clients()
    out.write(b'{"ready": true}\n')
    out.flush()
    for raw in sys.stdin.buffer:
        if not raw.strip():
            continue
        try:
            msg = json.loads(raw)
            mw.execute_write(clients.get(msg["uri"]), msg["op"])
            reply: dict[str, Any] = {"ok": True}
        except Exception as exc:
            from mlflow.exceptions import MlflowException

            reply = {"ok": False, "refused": isinstance(exc, mw.Refused), "transient": is_transient(exc)}
            if isinstance(exc, MlflowException):
                reply |= {"error": scrub(exc.message)[:2000], "mlflow_error_code": exc.error_code}
            else:
                reply["error"] = scrub(f"{type(exc).__name__}: {exc}")[:2000]
        out.write(json.dumps(reply).encode() + b"\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
