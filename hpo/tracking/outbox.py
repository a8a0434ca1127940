"""The outbox: tracking calls the store could not take, kept in order in ``<run_dir>/mlflow_outbox.jsonl``.

One JSON line per call (an op, :mod:`hpo.tracking.ops`). Runs created while the store is unreachable
get local ids (``offline-...``) that later calls refer to; the real ids they receive on delivery are kept
in ``mlflow_outbox.ids.json``. The outbox is replayed in order: by the tracker every ``probe_s`` seconds
while the store is down, and by ``hpo sync RUN_DIR`` (:func:`sync`) later.

The outbox file is read as data from a run directory that may come from someone else: an ``artifact``
entry whose file lies outside the run directory (symlinks resolved) is never uploaded, and an
``experiment`` entry's artifact location outside it is replaced by the run directory's ``mlartifacts/``;
each is reported as refused."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit
from urllib.request import url2pathname

from hpo.redaction import redact
from hpo.results import inside
from hpo.tracking.client import open_client, quick_http
from hpo.tracking.ops import Unmapped, execute, is_transient, resolve_local

log = logging.getLogger(__name__)

OUTBOX = "mlflow_outbox.jsonl"
OUTBOX_IDS = "mlflow_outbox.ids.json"


@dataclass
class SyncResult:
    """What :func:`sync` delivered."""

    delivered: int
    remaining: int
    refused: list[str] = field(default_factory=list)
    error: str | None = None


class Outbox:
    """The calls of one run directory waiting for the store (in memory only without a run directory), the id
    map of what was created offline, and whether the store is down."""

    def __init__(self, run_dir: Path | None, uri: str, probe_s: float) -> None:
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.uri = uri
        self.probe_s = probe_s
        self.pending: list[dict[str, Any]] = []
        self.ids: dict[str, str] = {}  # local id -> the store's id, once delivered
        self.refused: list[str] = []  # queued calls the store refused on replay (reported, then dropped)
        self.outside: list[str] = []  # queued calls naming a place outside the run directory (dropped or changed)
        self._dead_refs: set[str] = set()
        self._warned_disk = False
        self._down_since: float | None = None
        self._last_failure = 0.0
        if self.path is not None and self.path.exists():
            queued = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
            self.pending = [op for op in queued if self._confined(op)]
        if self.ids_path is not None and self.ids_path.exists():
            self.ids = dict(json.loads(self.ids_path.read_text()).get("ids", {}))

    def _confined(self, op: dict[str, Any]) -> bool:
        """Whether a queued call keeps to the run directory (a location outside it is dropped from ``op``)."""
        assert self.run_dir is not None
        if op.get("op") == "artifact":
            if inside(self.run_dir, op.get("path"), f"{OUTBOX} artifact") is None:
                self.outside.append(f"artifact {op.get('path')} lies outside the run directory: not uploaded")
                return False
        elif op.get("op") == "experiment" and op.get("location"):
            parsed = urlsplit(str(op["location"]))
            local = url2pathname(parsed.path) if parsed.scheme == "file" else None
            if local is None or inside(self.run_dir, local, f"{OUTBOX} experiment location") is None:
                self.outside.append(f"experiment artifact location {op['location']} lies outside the run "
                                    "directory: its mlartifacts/ is used")
                op["location"] = (self.run_dir / "mlartifacts").resolve().as_uri()  # what a study there uses
        return True

    @property
    def path(self) -> Path | None:
        return self.run_dir / OUTBOX if self.run_dir is not None else None

    @property
    def ids_path(self) -> Path | None:
        return self.run_dir / OUTBOX_IDS if self.run_dir is not None else None

    def blocked(self) -> bool:
        """True while calls other than artifact uploads wait: new calls queue behind them."""
        return any(op["op"] != "artifact" for op in self.pending)

    def probe_due(self) -> bool:
        """True once ``probe_s`` has passed since the last failed call."""
        return time.monotonic() - self._last_failure >= self.probe_s

    def append(self, op: dict[str, Any], live: Mapping[str, str]) -> Any:
        """Queue ``op``; returns its local id (None for a call that creates nothing).

        ``live``: local id -> store id of runs created in the background, known to this process only."""
        # The outbox names them by their store ids, so a later process (``hpo sync``) can deliver what
        # refers to them.
        for k, v in list(op.items()):
            if isinstance(v, str) and v in live:
                op[k] = live[v]
            elif k == "tags" and isinstance(v, dict):
                op[k] = {tk: live.get(tv, tv) if isinstance(tv, str) else tv for tk, tv in v.items()}
        self.pending.append(op)
        if self.path is not None:
            try:
                with open(self.path, "a") as f:
                    f.write(json.dumps(op) + "\n")
            except OSError as exc:
                if not self._warned_disk:
                    log.error("MLflow calls cannot be queued in %s either (%s); they are kept in memory only",
                              self.path, exc)
                    self._warned_disk = True
        return op.get("ref")

    def replay(self, deliver: Callable[[dict[str, Any]], Any]) -> int:
        """Deliver the queued calls in order with ``deliver``; returns how many are still queued.

        Delivery stops at the first call that still fails for a transient reason (the calls after it
        stay queued, in order), except that a failing artifact upload does not hold up the others.
        A call the store refuses (4xx) is dropped and listed in :attr:`refused`."""
        if not self.pending:
            return 0
        remaining: list[dict[str, Any]] = []
        delivered = 0
        stopped = False
        for op in self.pending:
            if stopped:
                remaining.append(op)
                continue
            if op.get("ref") in self.ids:  # created by an earlier replay that was cut short
                delivered += 1
                continue
            try:
                result = deliver(op)
            except Unmapped as exc:
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
                    self.note_failure(exc)
                    if op["op"] != "artifact":
                        stopped = True
                    continue
                self._refuse(op, exc)
                continue
            delivered += 1
            if op.get("ref"):
                self.ids[op["ref"]] = result
                self._save_ids()
        self.pending = remaining
        self._save()
        if delivered and not self.blocked():
            self._down_since = None
            log.warning("MLflow tracking store %s is reachable again: %d queued calls delivered",
                        redact(self.uri), delivered)
        return len(remaining)

    def _refuse(self, op: Mapping[str, Any], exc: BaseException) -> None:
        reason = f"{op['op']} refused: {redact(str(exc))[:300]}"
        if op.get("ref"):
            self._dead_refs.add(op["ref"])
        log.warning("queued MLflow call dropped: %s", reason)
        self.refused.append(reason)

    def _save(self) -> None:
        """Rewrite the outbox with what is still queued, and the id map."""
        if self.run_dir is None:
            return
        try:
            tmp = self.ids_path.with_suffix(".tmp")  # type: ignore[union-attr]
            tmp.write_text(json.dumps({"uri": redact(self.uri), "ids": self.ids}, indent=1))
            tmp.replace(self.ids_path)  # type: ignore[arg-type]
            if self.pending:
                tmp = self.path.with_suffix(".tmp")  # type: ignore[union-attr]
                tmp.write_text("".join(json.dumps(op) + "\n" for op in self.pending))
                tmp.replace(self.path)  # type: ignore[arg-type]
            else:
                self.path.unlink(missing_ok=True)  # type: ignore[union-attr]
        except OSError as exc:
            log.error("could not rewrite the MLflow outbox in %s (%s)", self.run_dir, exc)

    def _save_ids(self) -> None:
        if self.ids_path is None:
            return
        try:
            self.ids_path.write_text(json.dumps({"uri": redact(self.uri), "ids": self.ids}, indent=1))
        except OSError:
            pass

    def note_failure(self, exc: BaseException) -> None:
        """A call failed for a transient reason: probe again in ``probe_s``; warn once per outage."""
        self._last_failure = time.monotonic()
        if self._down_since is None:
            self._down_since = self._last_failure
            log.warning("MLflow tracking store %s is unreachable or cannot be written (%s: %s); the study goes on "
                        "and its tracking calls are queued in %s", redact(self.uri), type(exc).__name__,
                        redact(str(exc))[:300], self.path)

    def undelivered_message(self) -> str | None:
        """The line a summary prints while calls wait in the outbox (None when there are none)."""
        if not self.pending:
            return None
        where = self.run_dir if self.run_dir is not None else "RUN_DIR"
        return (f"{len(self.pending)} MLflow calls could not be delivered to {redact(self.uri)}; they are kept in "
                f"{self.path}; run `hpo sync {where}` once the tracking store is reachable")


def sync(run_dir: Path, uri: str) -> SyncResult:
    """Replay ``run_dir``'s MLflow outbox against ``uri`` (``hpo sync``).

    Runs created offline get their real ids; ``summary.json`` and the trials' ``result.json`` are
    rewritten to name them."""
    from hpo.tracking.schema import seed_sqlite_store

    run_dir = Path(run_dir)
    seed_sqlite_store(uri)  # a new embedded store: copy the migrated schema instead of migrating (~1.6 s)
    client = open_client(uri)
    outbox = Outbox(run_dir, uri, probe_s=0.0)
    before = len(outbox.pending)
    if not before:
        if outbox.outside:
            outbox._save()  # the entries left out are dropped from the file too
        return SyncResult(0, 0, refused=list(outbox.outside))

    def deliver(op: dict[str, Any]) -> Any:
        with quick_http():
            return execute(client, op, lambda v: resolve_local(v, outbox.ids))

    left = outbox.replay(deliver)
    _rewrite_run_ids(run_dir, outbox.ids)
    error = None
    if left:
        error = f"{left} calls still cannot be delivered to {redact(uri)}; is the tracking store reachable?"
    return SyncResult(delivered=before - left - len(outbox.refused), remaining=left,
                      refused=list(outbox.outside) + list(outbox.refused),
                      error=error)


def _rewrite_run_ids(run_dir: Path, ids: Mapping[str, str]) -> None:
    """``summary.json`` and the trials' ``result.json`` name the delivered runs by their store ids."""
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
