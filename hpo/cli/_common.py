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


def run_dir_tracking_uri(given: str | None, recorded: str | None, run_dir: Path, *,
                         use_recorded: bool) -> str | None:
    """The tracking URI a command working on a run directory (sync, report, ensemble) may send to.

    ``--tracking-uri`` when given; the run directory's own embedded store when its files name that one or none.
    A URI its files name elsewhere is used only with ``--use-recorded-uri``: a run directory may come from
    someone else, and its files alone must not choose where its contents are sent. None when not allowed.
    A recorded URI whose password is redacted cannot be opened: ConfigError asking for ``--tracking-uri``."""
    from hpo.tracking import default_tracking_uri

    if given is not None:
        return given
    own = default_tracking_uri(run_dir)
    if not recorded or recorded == own:
        return own
    if not use_recorded:
        return None
    return tracking_uri(None, recorded)


def refused_uri_hint(recorded: str, where: str) -> str:
    """Why a recorded tracking URI was not used, and the two ways to use one."""
    from hpo.redaction import redact

    return (f"{where} names the tracking store {redact(recorded)}, which is not this run directory's own; pass "
            "--tracking-uri URI, or --use-recorded-uri to send there")
