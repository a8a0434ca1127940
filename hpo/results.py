"""Trial records: how a trial ended (:class:`TrialState`, :class:`TrialResult`) and their files in a run
directory (``trials/NNNNN/result.json``).

Drivers, the trial runner, worker processes and the study all exchange these records, so they live below
all of them."""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


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
    epochs: int = 0
    duration_s: float = 0.0
    error: str | None = None
    predictions_path: str | None = None
    model_path: str | None = None
    pack: list[int] | None = None  # trial numbers trained together as one packed model (hpo.execution.packed)


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
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)


def load_results(run_dir: Path) -> dict[int, dict[str, Any]]:
    """Every ``result.json`` of a run directory, by trial number."""
    out = {}
    for p in (run_dir / "trials").glob("*/result.json"):
        r = json.loads(p.read_text())
        out[r["number"]] = r
    return out
