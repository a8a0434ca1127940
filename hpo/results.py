"""Trial records: how a trial ended (:class:`TrialState`, :class:`TrialResult`) and their files in a run
directory (``trials/NNNNN/result.json``).

Drivers, the trial runner, worker processes and the study all exchange these records, so they live below
all of them."""

from __future__ import annotations

import enum
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_UMASK = os.umask(0o022)  # read once (os.umask can only be read by setting it), then put back
os.umask(_UMASK)


class TrialState(str, enum.Enum):
    COMPLETE = "COMPLETE"
    PRUNED = "PRUNED"
    FAILED = "FAILED"


@dataclass
class TrialResult:
    """What one trial produced."""

    number: int
    params: dict[str, Any]
    seed: int
    state: TrialState
    value: float | None = None  # the objective on select
    metrics: dict[str, float] = field(default_factory=dict)  # select_* and audit_*
    history: dict[str, list[float]] = field(default_factory=dict)
    epochs: int = 0  # the epochs it trained (a continued trial: those after its parent's)
    initial_epoch: int = 0  # the epoch it started from: its parent trial's epochs when it continued one
    resumed_from: int | None = None  # the trial whose checkpoint (weights and optimizer state) it continued
    duration_s: float = 0.0
    error: str | None = None
    predictions_path: str | None = None
    model_path: str | None = None
    pack: list[int] | None = None  # trial numbers trained together as one packed model (hpo.execution.packed)
    cv: dict[str, Any] | None = None  # training.folds: k, the fold seed, and each fold's rows, seed, epochs, scores
    measures: dict[str, float] = field(default_factory=dict)  # built-in measures (hpo.objectives.MEASURES)
    values: list[float] | None = None  # several objectives: one value per objective, in the config's order
    constraints: list[float] | None = None  # `constraints`: one value per bound, feasible when all are <= 0
    constraint_names: list[str] | None = None  # each bound's name (``0:params<=1e+06``), as Optuna records it
    feasible: bool | None = None  # `constraints`: whether every bound holds (None: the study has no constraints)


def result_dict(r: TrialResult) -> dict[str, Any]:
    """``r`` as the JSON-ready dict written to ``result.json``."""
    d = asdict(r)
    d["state"] = r.state.value
    return d


def trial_dir(run_dir: Path, number: int) -> Path:
    """Where trial ``number`` of a study keeps its files."""
    return run_dir / "trials" / f"{number:05d}"


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON through a temporary file and a rename (a reader never sees half a file)."""
    replace_file(path, json.dumps(obj, indent=2, default=str))


def load_results(run_dir: Path) -> dict[int, dict[str, Any]]:
    """Every ``result.json`` of a run directory, by trial number."""
    out = {}
    for p in (run_dir / "trials").glob("*/result.json"):
        r = json.loads(p.read_text())
        out[r["number"]] = r
    return out


def inside(run_dir: Path, path: str | Path | None, what: str) -> Path | None:
    """``path`` resolved (symlinks first) when it lies inside ``run_dir``; None, with a warning, when not.

    A run directory may come from someone else: every path one of its files names (an outbox entry, a plot,
    a trial's model) is checked here before it is read, uploaded or deleted. A relative path is taken from
    the current directory, as the study that wrote it took it."""
    if path is None or path == "":
        return None
    root = Path(run_dir).resolve()
    target = Path(path).expanduser().resolve()
    if target == root or root in target.parents:
        return target
    log.warning("%s %s lies outside the run directory %s: skipped", what, path, root)
    return None


def replace_file(path: Path, text: str | bytes) -> None:
    """Write ``text`` (or bytes) to ``path`` through a temporary file and a rename: a symlink at ``path`` is replaced by
    the file, never followed (its target is left alone), and a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # the mode a plain open() gives (mkstemp's is 0600)
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
