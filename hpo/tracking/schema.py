"""A new embedded MLflow store (``sqlite:///…/mlflow.db``) starts as a copy of an empty, migrated one.

MLflow creates a new SQLite store by running its whole Alembic migration history (over 80
revisions, about 1.6 s of pure Python on one core), which made up most of a small study's fixed
cost (experiments/RESULTS.md, overhead). MLflow has no option to skip it, so the first study on a
machine lets MLflow migrate an empty database of its own in the cache directory, and every later
new store is a file copy of it. The template holds MLflow's schema only, made by MLflow's own code:
MLflow then creates its default experiment, with this store's artifact root, when it opens the
copy, exactly as for a database it migrated itself. The template's name carries the MLflow and
SQLAlchemy versions, so an upgrade builds a new one. Anything that goes wrong here leaves the store
to MLflow's normal path.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

SQLITE_PREFIX = "sqlite:///"


def cache_dir() -> Path:
    """``$HPO_CACHE_DIR``, else ``$XDG_CACHE_HOME/hpo``, else ``~/.cache/hpo``."""
    if os.environ.get("HPO_CACHE_DIR"):
        return Path(os.environ["HPO_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hpo"


def template_path() -> Path:
    import mlflow
    import sqlalchemy

    return cache_dir() / f"mlflow-{mlflow.__version__}-sqlalchemy-{sqlalchemy.__version__}-schema.db"


def _build_template(path: Path) -> None:
    import sqlalchemy
    from mlflow.store.db import utils as db_utils

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    engine = sqlalchemy.create_engine(f"{SQLITE_PREFIX}{tmp}")
    try:
        db_utils._initialize_tables(engine)  # MLflow's own create_all + Alembic upgrade to head
        db_utils._verify_schema(engine)
    finally:
        engine.dispose()
    os.replace(tmp, path)  # atomic: a concurrent study sees the whole template or none


def seed_sqlite_store(uri: str) -> bool:
    """Copy the cached migrated schema to ``uri``'s file if that file does not exist yet; True if copied."""
    if not uri.startswith(SQLITE_PREFIX):
        return False
    target = Path(uri[len(SQLITE_PREFIX):].split("?", 1)[0])
    if not target.is_absolute() or target.exists():
        return False
    try:
        template = template_path()
        if not template.exists():
            _build_template(template)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(template, tmp)
        try:
            os.link(tmp, target)  # create-if-absent: never replaces a store another process just made
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        return True
    except Exception as exc:  # an unwritable cache, a changed MLflow internal: MLflow migrates the store itself
        log.debug("no MLflow schema template for %s: %s", uri, exc)
        return False
