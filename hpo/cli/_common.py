"""Helpers every ``hpo`` command shares: number formatting, run directories, the tracking URI to use."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hpo.errors import ConfigError
from hpo.redaction import REDACTED



def fmt(v: Any) -> str:
    """A metric as the commands print it: 4 decimals, ``-`` for none."""
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def resolve_run_dir(arg: str) -> Path:
    """A run directory, or a study name whose run directory is ``runs/<name>``."""
    p = Path(arg)
    if not p.exists() and (Path("runs") / arg).exists():
        return Path("runs") / arg
    return p


def study_dir(arg: str) -> Path | None:
    """The study's run directory named by ``arg``; None (after saying why) when it holds no study."""
    run_dir = resolve_run_dir(arg)
    if not (run_dir / "study.json").exists():
        print(f"error: run_dir: {run_dir} holds no study (no study.json); give the study's run directory",
              file=sys.stderr)
        return None
    return run_dir


def tracking_uri(given: str | None, recorded: str | None, fallback: str | None = None,
                 recorded_as: str = "recorded") -> str | None:
    """The MLflow tracking URI a command uses: ``given`` (``--tracking-uri``) when not None, else ``recorded``.

    A recorded URI is stored with its password redacted and cannot be opened: then ``fallback`` (the run
    directory's own store) when one is given, else :class:`ConfigError` asking for ``--tracking-uri``."""
    if given is not None:
        return given
    if recorded and REDACTED in recorded:
        if fallback is None:
            raise ConfigError("tracking.uri", f"the {recorded_as} tracking URI has its password redacted; "
                                              "pass --tracking-uri")
        return fallback
    return recorded or fallback
