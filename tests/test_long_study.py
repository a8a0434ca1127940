"""Long studies keep only the best models: training.keep_top_models on a real study."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import small_config


def test_keep_top_models_keeps_best_two_models_every_logits_file_and_ensembles(tmp_path: Path) -> None:
    from hpo.study import run_study

    cfg = small_config(tmp_path, study={"name": "keep2", "n_trials": 5},
                       driver={"sampler": "random"},
                       training={"epochs": 1, "keep_top_models": 2},
                       ensemble={"enabled": True, "size": 2},
                       guards={"enabled": False}, plots={"enabled": False}, report={"enabled": False},
                       executor={"mode": "inprocess"})
    summary = run_study(cfg)
    run_dir = Path(summary.run_dir)
    results = {int(p.parent.name): json.loads(p.read_text()) for p in (run_dir / "trials").glob("*/result.json")}
    assert len(results) == 5 and all(r["state"] == "COMPLETE" for r in results.values())

    best_two = sorted(results, key=lambda n: (-results[n]["value"], n))[:2]
    kept = sorted(int(p.parent.name) for p in (run_dir / "trials").glob("*/model.keras"))
    assert kept == sorted(best_two)
    for n, r in results.items():  # result.json says which trials still have a model
        assert (r["model_path"] is not None) == (n in best_two)
    assert len(list((run_dir / "trials").glob("*/predictions.npz"))) == 5

    assert summary.ensemble is not None
    members = [m[0] for m in summary.ensemble["members"]]
    assert members and set(members) <= set(best_two)
    assert (Path(summary.ensemble["artifact_dir"]) / "manifest.json").exists()
