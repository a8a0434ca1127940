"""What an ensemble is (:class:`EnsembleReport`) and the manifest saved beside its Keras artifact."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ensembles.pool import Pool
from ensembles.versions import package_versions


@dataclass
class EnsembleReport:
    """What an ensemble is made of and how it scores."""

    method: str
    combine: str
    metric: str
    members: list[dict[str, Any]]
    temperature: dict[str, float]
    metrics: dict[str, float]  # ensemble: {split}_{[head_]}{metric}
    best_single: dict[str, Any]  # trial number and the same metrics for the best member on select
    curve: list[dict[str, float]] = field(default_factory=list)  # select and audit per size, never test
    calibrated: bool = False  # each member's logits divided by its own temperature (members[i]["temperature"])
    guard: str | None = None  # the objective selection kept at least at the best single member's level
    best_single_alone: bool = False  # no member improved on the best single one: it is the ensemble
    confidence: float | None = None  # greedy: share of bootstrap resamples of select an addition had to improve
    artifact_dir: str | None = None
    mlflow_run_id: str | None = None
    model_uri: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _relative(path: str | Path | None, base: Path) -> str | None:
    """``path`` relative to the artifact folder ``base`` (so a copied folder carries no absolute path)."""
    if path is None:
        return None
    return Path(os.path.relpath(Path(path).resolve(), base.resolve())).as_posix()


def manifest(report: EnsembleReport, pool: Pool, out_dir: Path) -> dict[str, Any]:
    """The artifact's manifest.json: how to load it, its inputs and heads, data hashes, members, versions.

    Every path in it is relative to ``out_dir``, the artifact folder: ``model_file`` is inside it; the
    study and the members' own model files are where they were when the ensemble was built (the
    artifact does not need them: the members are inside ``ensemble.keras``).
    """
    run_dir = pool.run_dir
    data = json.loads((run_dir / "data.json").read_text()) if run_dir else {}
    record = report.to_dict()
    record["members"] = [{**m, "model_path": _relative(m.get("model_path"), out_dir)} for m in record["members"]]
    record["artifact_dir"] = "." if report.artifact_dir else None
    return {
        "format": "hpo-ensemble/1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model_file": "ensemble.keras",
        "load": "import ensembles; keras.saving.load_model(path, safe_mode=True)",
        "inputs": data.get("inputs"),
        "heads": data.get("heads"),
        "data_hashes": data.get("hashes"),
        "study": _relative(run_dir, out_dir),
        **record,
        "package_versions": package_versions(),
    }
