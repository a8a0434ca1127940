"""How a tracking call reaches the store: now, through the background thread and the writer process, or
the outbox.

Every call goes through :meth:`Transport.send`: a call that fails for a reason that may pass (the
server is down or times out, the store is locked or cannot be written) is retried once after a short
pause, then queued in the outbox (:mod:`hpo.tracking.outbox`) and the study goes on. While calls wait in
the outbox, new calls queue behind them (order is kept) and every ``probe_s`` seconds the outbox is
replayed, so a store that comes back mid-study catches up by itself. Errors the store returns on purpose
(4xx: an invalid value, a missing run) are not retried.

Writes that return nothing the study needs (:data:`hpo.tracking.ops.WRITE_OPS`: a trial's epochs, its
end, artifacts) are handed to one background thread, in order, so a trial does not wait for them: on the
embedded SQLite store they cost ~17 ms per trial (~1.5% of a one-second trial), on a remote server one
round trip each. MLflow's own ``synchronous=False`` logging covers ``log_batch`` only and would bypass
the outbox, hence our thread; the thread hands each write to the writer process
(:mod:`hpo.tracking.handover`), or makes it itself where there is none. The next trial's run is created
meanwhile (it depends on none of them); calls that read the store or end the study first wait until
everything handed over is delivered or queued in the outbox (:meth:`Transport.wait`), and an error the
store returns on purpose is raised there. What the thread has not written when the process is killed
outright (at most the last trial's end) is lost, as a call in flight was before; the study's end marks
such runs KILLED.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
import uuid
import weakref
from pathlib import Path
from typing import Any

from hpo.redaction import redact
from hpo.tracking.client import open_client, quick_http
from hpo.tracking.handover import WriterUnavailable, shared_writer, writer_failed
from hpo.tracking.ops import LOCAL_PREFIX, WRITE_OPS, Unmapped, execute, is_transient, resolve_local
from hpo.tracking.outbox import Outbox

log = logging.getLogger(__name__)


class Transport:
    """Delivers tracking calls (ops) to one store in the order they are made; queues what it cannot deliver."""

    def __init__(self, uri: str, run_dir: Path | None, probe_s: float = 10.0, retry_pause_s: float = 0.5,
                 background: bool = True) -> None:
        from hpo.tracking.schema import seed_sqlite_store

        self.uri = uri
        seed_sqlite_store(uri)  # a new embedded store: copy the migrated schema instead of migrating (~1.6 s)
        self.client = open_client(uri)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.retry_pause_s = retry_pause_s
        self.outbox = Outbox(self.run_dir, uri, probe_s)
        self._background = background
        self._live: dict[str, str] = {}  # local id -> store id of runs the background thread created
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        self._store_lock = threading.RLock()  # one call to the store (and the outbox) at a time
        self._hurry = threading.Event()  # set while someone waits for the handed-over calls
        self._inbox: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        self._error: BaseException | None = None  # the first call the store refused in the background
        if background:
            shared_writer()  # starts the writer process now: it imports MLflow while the study sets up
        if self.outbox.pending:  # calls a previous, interrupted run of this study could not deliver
            self.flush()

    # -- the outbox, as the study sees it -------------------------------------------------
    @property
    def outbox_path(self) -> Path | None:
        return self.outbox.path

    @property
    def pending(self) -> int:
        """Calls queued in the outbox, not delivered yet."""
        self.wait()
        return len(self.outbox.pending)

    @property
    def ids(self) -> dict[str, str]:
        """Local id of a run or experiment created offline -> its id in the store, once delivered."""
        self.wait()
        return dict(self.outbox.ids)

    @property
    def refused(self) -> list[str]:
        """Queued calls the store refused on replay (reported, then dropped)."""
        return self.outbox.refused

    def run_id(self, ref: str) -> str:
        """The store's id of the run ``ref`` names (``ref`` itself while its creation waits in the outbox)."""
        if not ref.startswith(LOCAL_PREFIX):
            return ref
        self.wait()
        return self._live.get(ref) or self.outbox.ids.get(ref) or ref

    def flush(self) -> int:
        """Deliver the queued calls in order; returns how many are still queued (:meth:`Outbox.replay`)."""
        self.wait()
        with self._store_lock:
            return self._flush()

    def _flush(self) -> int:
        return self.outbox.replay(lambda op: self._deliver(op, retry=False))

    # -- sending ----------------------------------------------------------------------------
    def send(self, op: dict[str, Any], creates: bool = False) -> Any:
        """Deliver one call now, or queue it; returns what the call returns (a local id when a create is queued
        or handed to the background thread)."""
        if creates:
            op["ref"] = LOCAL_PREFIX + uuid.uuid4().hex[:16]
        if self._background and op["op"] in WRITE_OPS:
            self._hand_over(op)
            return op.get("ref")
        if op["op"] == "create_run":
            # A new trial's run depends on nothing handed over (the calls of earlier runs): it does not wait for
            # them, so they are written while this trial trains. If it cannot be written now, it is queued
            # behind them, so the outbox keeps the order the calls were made in.
            failed = False
            with self._store_lock:
                if not self.outbox.blocked():
                    try:
                        return self._deliver(op, retry=True)
                    except Unmapped:
                        failed = True
                    except Exception as exc:
                        if not is_transient(exc):
                            raise
                        self.outbox.note_failure(exc)
                        failed = True
            self.wait()
            with self._store_lock:
                return self._queue(op) if failed else self._send_now(op)
        self.wait()  # everything else keeps the order
        with self._store_lock:
            return self._send_now(op)

    def _queue(self, op: dict[str, Any]) -> Any:
        return self.outbox.append(op, self._live)

    def _send_now(self, op: dict[str, Any]) -> Any:
        if self.outbox.blocked():  # earlier calls wait: keep the order, and only probe the store now and then
            if not self.outbox.probe_due():
                return self._queue(op)
            self._flush()
            if self.outbox.blocked():
                return self._queue(op)
        try:
            return self._deliver(op, retry=True)
        except Unmapped:
            return self._queue(op)
        except Exception as exc:
            if not is_transient(exc):
                raise
            self.outbox.note_failure(exc)
            return self._queue(op)

    def _deliver(self, op: dict[str, Any], retry: bool) -> Any:
        with quick_http():
            try:
                return self._execute(op)
            except Exception as exc:
                if not retry or not is_transient(exc) or isinstance(exc, Unmapped):
                    raise
            time.sleep(self.retry_pause_s)
            return self._execute(op)

    def resolve(self, value: Any) -> Any:
        """``value``, or the store's id of the local id it is; raises :class:`Unmapped` while there is none."""
        return resolve_local(value, self._live, self.outbox.ids)

    def _execute(self, op: dict[str, Any]) -> Any:
        if op["op"] in WRITE_OPS and threading.current_thread() is self._thread:
            write = {**op, "run": self.resolve(op["run"])}
            writer = shared_writer()
            if writer is not None:
                try:
                    writer.call(self.uri, write)
                    return None
                except WriterUnavailable as exc:  # made here instead, and from now on in this process
                    writer_failed(exc)
        return execute(self.client, op, self.resolve)

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
                self._send_handed(op)
            except Exception as exc:  # refused on purpose (4xx): raised to the study at its next wait()
                log.error("MLflow refused a %s call: %s", op.get("op"), redact(str(exc))[:300])
                if self._error is None:
                    self._error = exc
            finally:
                self._inbox.task_done()

    def _send_handed(self, op: dict[str, Any]) -> None:
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


_LIVE: "weakref.WeakSet[Transport]" = weakref.WeakSet()  # transports whose background thread may hold calls


@atexit.register
def _drain_at_exit() -> None:
    """A process that ends without closing its tracker still delivers what it handed over."""
    for transport in list(_LIVE):
        try:
            transport.close()
        except Exception as exc:  # at exit: report, never raise
            log.error("MLflow calls not delivered at exit: %s", redact(str(exc))[:300])
