"""What an ensemble is (:class:`EnsembleReport`) and the manifest saved beside its Keras artifact."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
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
    curve: list[dict[str, float]] = field(default_factory=list)
    artifact_dir: str | None = None
    mlflow_run_id: str | None = None
    model_uri: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def manifest(report: EnsembleReport, pool: Pool) -> dict[str, Any]:
    """The artifact's manifest.json: how to load it, its inputs and heads, data hashes, members, versions."""
    run_dir = pool.run_dir
    data = json.loads((run_dir / "data.json").read_text()) if run_dir else {}
    return {
        "format": "hpo-ensemble/1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model_file": "ensemble.keras",
        "load": "import ensembles; keras.saving.load_model(path, safe_mode=True)",
        "inputs": data.get("inputs"),
        "heads": data.get("heads"),
        "data_hashes": data.get("hashes"),
        "study": str(run_dir) if run_dir else None,
        **report.to_dict(),
        "package_versions": package_versions(),
    }
