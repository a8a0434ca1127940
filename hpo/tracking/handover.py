"""The writer process as the study's process sees it: started with the tracker, one call at a time.

A trial's tracking writes cost tens of ms of Python per trial on the embedded SQLite store; the
tracker's background thread hands each of them to one writer process per study process
(``python -m hpo.tracking.writer``, :mod:`hpo.tracking.writer` says why) and waits for its reply,
without the interpreter lock. Where the writer cannot start or stops answering, the calls are made in
the thread again (``HPO_MLFLOW_WRITER=thread`` asks for that from the start).

The protocol is one JSON line each way: ``{"uri": ..., "op": {...}}`` -> ``{"ok": true}`` or
``{"ok": false, "error": ..., "transient": bool, "refused": bool}`` (plus ``mlflow_error_code`` for an
error MLflow raised). The writer says ``{"ready": true}`` once MLflow is imported and ends when its
stdin closes (the study's process ended, however it ended).
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
from pathlib import Path
from typing import Any, Mapping

from hpo.tracking.client import QUICK_HTTP
from hpo.tracking.ops import Refused, WriteFailed

log = logging.getLogger(__name__)

ENV = "HPO_MLFLOW_WRITER"  # "process" (default) or "thread"
WRITER_MODULE = "hpo.tracking.writer"
START_TIMEOUT_S = 120.0  # importing MLflow in the helper; seconds on a loaded 2-core machine
CALL_TIMEOUT_S = 300.0  # one call, MLflow's own HTTP retries included


class WriterUnavailable(OSError):
    """The helper could not start, died or stopped answering."""


class WriterProcess:
    """The helper process, one call at a time (callers from several threads take turns)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._lock = threading.Lock()
        root = str(Path(__file__).resolve().parents[2])  # so `-m hpo.tracking.writer` finds this checkout
        env = dict(env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen([sys.executable, "-m", WRITER_MODULE], stdin=subprocess.PIPE,
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
    """Registered before the trackers' own drain (hpo.tracking.transport imports this module first), so it
    runs after it: what they hand over at exit still goes through the helper."""
    global _WRITER
    with _WRITER_LOCK:
        if _WRITER is not None and _WRITER_PID == os.getpid():
            _WRITER.close()
        _WRITER = None
