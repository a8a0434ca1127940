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


def unreachable(uri: str, timeout_s: float = 5.0) -> str | None:
    """Why this process cannot use the existing tracking store ``uri``, or None when it can: a store file that
    is not on this machine, or a server that does not answer its health check."""
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):].split("?", 1)[0])
        # Opening a missing file would create an empty store, where the study's parent run is not.
        return None if path.is_file() else f"no store file {path} on this machine"
    if uri.startswith("file:") or "://" not in uri:
        path = Path(uri[len("file://"):] if uri.startswith("file://") else uri.removeprefix("file:"))
        return None if path.is_dir() else f"no store folder {path} on this machine"
    if uri.startswith(("http://", "https://")):
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
                return None
        except urllib.error.HTTPError:  # it answers (a proxy, an auth wall): MLflow's own calls will tell
            return None
        except OSError as exc:
            return f"no answer from the server ({getattr(exc, 'reason', exc)})"
    return None


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
