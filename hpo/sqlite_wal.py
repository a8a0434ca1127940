"""Cheap commits for the embedded SQLite stores (Optuna's ``optuna.db``, MLflow's ``mlflow.db``).

In SQLite's default rollback-journal mode with ``synchronous=FULL`` every commit waits for
several ``fsync`` calls; a trial makes about 25 commits (Optuna: one per sampled parameter,
the trial, its attributes and state; MLflow: the run, its params, each epoch's batch, the
final batch and status), and on a disk shared with other work one fsync can take 0.3 to
20 ms. In write-ahead-log mode with ``synchronous=NORMAL`` a commit appends to the log
without an fsync (the log is synced at checkpoints): the database stays consistent after
a crash of the process or of the machine, and what a power loss can cost is the last
commits, which a resumed study redoes (a trial not told to the storage is run again).

WAL needs the database on a local file system (not NFS), which is where the embedded stores
live; the ``-wal`` and ``-shm`` files beside the database belong to it while it is open.
"""

from __future__ import annotations

from typing import Any


def use_wal(engine: Any) -> bool:
    """Switch an SQLAlchemy engine on an SQLite file to WAL + ``synchronous=NORMAL``; True if it was one."""
    from sqlalchemy import event

    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return False

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")  # persistent in the file; a no-op once set
            cursor.execute("PRAGMA synchronous=NORMAL")  # per connection
        finally:
            cursor.close()

    event.listen(engine, "connect", on_connect)
    engine.dispose()  # connections already pooled reopen with the pragmas
    return True
