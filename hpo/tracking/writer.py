"""The MLflow writer process (``python -m hpo.tracking.writer``): makes the writes of a study's background thread.

A trial's tracking writes (its epoch batches, final metrics, end status, files) cost tens of ms of
Python per trial on the embedded SQLite store (SQLAlchemy's ORM; about 20 ms of CPU for a 2-epoch digits
trial, experiments/results/tracking_costs.json). Done by a thread of the study's process they hold the
interpreter lock the training loop also needs (one run's whole-run medians on 2 CPU cores once showed
+9.0% and +19.7% with in-thread writes against -3.0% and +5.0% with this helper; the per-trial paired
estimates since do not separate the two: experiments/RESULTS.md, overhead). So the tracker's background
thread hands each write to one helper process per study process (:mod:`hpo.tracking.handover` starts it
and speaks its one-JSON-line protocol) and waits for its reply, without the lock. The calls are made by
the same interpreter as in the thread (:func:`hpo.tracking.ops.execute`).
"""

from __future__ import annotations

import json
import os
import sys
from collections import OrderedDict
from typing import Any

from hpo.redaction import redact
from hpo.tracking.client import open_client
from hpo.tracking.ops import WRITE_OPS, Refused, execute, is_transient


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


def _write(clients: _Clients, raw: bytes) -> dict[str, Any]:
    """The reply to one request line."""
    try:
        msg = json.loads(raw)
        op = msg["op"]
        if op["op"] not in WRITE_OPS:  # the helper only writes; creates and reads stay with the tracker
            raise ValueError(f"not a write call: {op['op']!r}")
        execute(clients.get(msg["uri"]), op)  # run ids are the store's own: nothing to resolve
        return {"ok": True}
    except Exception as exc:
        from mlflow.exceptions import MlflowException

        reply = {"ok": False, "refused": isinstance(exc, Refused), "transient": is_transient(exc)}
        if isinstance(exc, MlflowException):
            reply |= {"error": redact(exc.message)[:2000], "mlflow_error_code": exc.error_code}
        else:
            reply["error"] = redact(f"{type(exc).__name__}: {exc}")[:2000]
        return reply


def main() -> int:
    """The helper: answer one JSON line per call until stdin closes."""
    import signal

    # Ctrl-C in a terminal reaches the whole process group: the study handles it (its trial is marked, its
    # writes are finished) and this helper must outlive it to make those writes; it ends when stdin closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # what MLflow prints goes to stderr, not the replies
    import mlflow  # noqa: F401  (the slow import, before saying ready)
    # The SQL store too (0.8 s on 2 cores), which the first write to the embedded store would import: here it
    # runs while the study sets up (hpo.study.run starts this process first), not during the first trial,
    # whose compilation it slowed under JAX (2.1-2.5 s against 3.6-4.2 s, experiments/results/compiles_*.json).
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401

    clients = _Clients()
    out.write(b'{"ready": true}\n')
    out.flush()
    for raw in sys.stdin.buffer:
        if not raw.strip():
            continue
        out.write(json.dumps(_write(clients, raw)).encode() + b"\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
