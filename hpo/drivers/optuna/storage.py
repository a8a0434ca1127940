"""Optuna's storage as the driver uses it: URLs to storages, retries while a database is unreachable,
the race to create a new database's schema, and the study and trial attributes the framework records."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, TypeVar

import optuna

from hpo.errors import ConfigError
from hpo.redaction import redact

log = logging.getLogger(__name__)
IDENTITY_ATTR = "hpo.identity"
CONFIG_ATTR = "hpo.config"
PARENT_RUN_ATTR = "hpo.parent_run_id"
ERROR_ATTR = "hpo.error"
SURPLUS_ATTR = "hpo.surplus"
GHOST_ATTR = "hpo.ghost"  # a trial created by an ask whose reply an outage lost (see OptunaDriver._fail_ghosts)
WORKER_ATTR = "hpo.worker"  # which process runs a trial of a shared study, for operators
TRACKING_ATTR = "hpo.tracking_uri"  # the study's effective MLflow tracking URI (password redacted), for its workers
SAMPLER_SEED_ATTR = "hpo.sampler_seed"  # the seed of the sampling stream of the process that proposed a trial
T = TypeVar("T")


def _transient(exc: BaseException) -> bool:
    """A database error worth retrying: the connection, not the request, failed. Optuna wraps SQLAlchemy's
    errors in StorageInternalError, so the whole cause chain is read."""
    import sqlalchemy.exc as sa

    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            return False
        if isinstance(seen, (sa.IntegrityError, sa.DataError, sa.ProgrammingError)):
            return False
        if isinstance(seen, (sa.OperationalError, sa.InterfaceError, sa.TimeoutError, sa.PendingRollbackError,
                             sa.DisconnectionError, ConnectionError, TimeoutError)):
            return True
        if isinstance(seen, sa.DBAPIError) and seen.connection_invalidated:
            return True
        if type(seen).__name__ in ("OperationalError", "InterfaceError"):  # the DB driver's own (psycopg)
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def retrying(fn: Callable[[], T], *, budget_s: float, what: str) -> T:
    """Run ``fn``; while the database is unreachable, retry with backoff for up to ``budget_s`` seconds."""
    deadline = time.monotonic() + budget_s
    delay = 0.5
    while True:
        try:
            return fn()
        except Exception as exc:
            if not _transient(exc) or time.monotonic() > deadline:
                raise
            log.warning("storage unreachable during %s (%s); retrying in %.1f s", what, type(exc).__name__, delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def resolve_storage(url: str, *, heartbeat_s: float | None = None, grace_s: float | None = None,
                    retry_stale: bool = False) -> "str | optuna.storages.BaseStorage":
    """An Optuna storage from a URL; ``journal:///path/file.log`` is Optuna's journal file storage,
    made for several processes on one machine (Optuna advises against SQLite there).

    With ``heartbeat_s``, a database URL becomes an ``RDBStorage`` whose running trials are
    failed (or retried once, ``retry_stale``) when their heartbeat is older than ``grace_s``."""
    if url.startswith("journal://"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = url[len("journal://"):]
        if not path:
            raise ConfigError("driver.storage", "journal storage needs a file path: journal:///abs/path/study.log")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(path))
    if heartbeat_s is not None:
        callback = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1) if retry_stale else None
        return racing_schema(url=url, make=lambda: optuna.storages.RDBStorage(
            # Two idle connections per process at most: many workers (and an MLflow server) share one
            # database whose max_connections is often 100; overflow connections close when returned.
            url, engine_kwargs={"pool_pre_ping": True, "pool_size": 2, "max_overflow": 16}
            if not url.startswith("sqlite") else None,
            heartbeat_interval=max(1, round(heartbeat_s)), grace_period=max(2, round(grace_s or 6 * heartbeat_s)),
            heartbeat_stale_trial_callback=callback))
    return url


def _schema_race(exc: BaseException) -> bool:
    """Another process created the same table or type a moment earlier (``already exists``, a duplicate key
    in PostgreSQL's catalog, or Alembic's version row)."""
    import sqlalchemy.exc as sa

    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            return False
        if isinstance(seen, (sa.IntegrityError, sa.ProgrammingError, sa.OperationalError)):
            text = str(seen).lower()
            if "already exists" in text or "duplicate key" in text:
                return True
        seen = seen.__cause__ or seen.__context__
    return False


def unreachable_storage(exc: BaseException, url: str) -> ConfigError | None:
    """A one-line ConfigError (``driver.storage``, password hidden) for a database that cannot be reached or
    logged into; None for any other error."""
    import sqlalchemy.exc as sa

    if not isinstance(exc, (sa.OperationalError, sa.InterfaceError)):
        return None
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
    hint = ("create it first (PostgreSQL: createdb NAME; MySQL: CREATE DATABASE NAME) or fix its name"
            if "does not exist" in reason or "unknown database" in reason.lower()
            else "is the database running and reachable from here?")
    return ConfigError("driver.storage", f"cannot open the storage {redact(url)}: {redact(reason)}; {hint} (a password "
                                         "is best given through PGPASSWORD or ~/.pgpass, not on the command line)")


def racing_schema(make: Callable[[], T], attempts: int = 8, url: str | None = None) -> T:
    """``make()``, again after a short random pause when it lost a race to create the storage's tables.

    Optuna creates its schema when a storage first opens an empty database, without a lock; workers
    started together on a new database collide there (PostgreSQL: ``duplicate key value violates unique
    constraint "pg_type_typname_nsp_index"``). The loser retries and finds the tables made."""
    import random

    for attempt in range(attempts):
        try:
            return make()
        except Exception as exc:
            if not _schema_race(exc) or attempt == attempts - 1:
                unreachable = unreachable_storage(exc, url) if url is not None else None
                if unreachable is not None:
                    raise unreachable from None
                raise
            log.info("another process is creating the study tables; retrying (%s)", type(exc).__name__)
            time.sleep(0.2 + random.random() * 0.8)
    raise AssertionError("unreachable")
