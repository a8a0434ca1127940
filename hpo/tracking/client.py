"""Opening the MLflow tracking store: where a study's embedded store lives, the client, short HTTP retries."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

# Our own, short retry policy for HTTP stores (MLflow's default retries for about four minutes per call);
# a value the user set in the environment wins.
QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}


def default_tracking_uri(run_dir: Path) -> str:
    """The embedded store of a run directory: ``sqlite:///<run_dir>/mlflow.db``."""
    return f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"


def is_server(uri: str) -> bool:
    """True for a tracking server (HTTP, Databricks), False for a store this process opens itself."""
    return uri.startswith(("http://", "https://", "databricks"))


def open_client(uri: str) -> Any:
    """An ``MlflowClient`` for ``uri``; on an embedded SQLite store, committing without an fsync each
    (:mod:`hpo.sqlite_wal`). Used by the tracker and by the writer process, which write to the same file."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    if uri.startswith("sqlite:///"):
        from hpo.sqlite_wal import use_wal

        try:
            use_wal(client._tracking_client.store.engine)
        except AttributeError:  # another store implementation: leave it as it is
            pass
    return client


@contextmanager
def quick_http() -> Iterator[None]:
    """MLflow's HTTP calls made meanwhile use :data:`QUICK_HTTP` where the environment sets no policy."""
    added = [k for k in QUICK_HTTP if k not in os.environ]
    for k in added:
        os.environ[k] = QUICK_HTTP[k]
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)
