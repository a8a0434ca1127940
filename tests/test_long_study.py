"""Long studies keep only the best models: training.keep_top_models on a real study."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
    members = [m[0] for m in summary.ensemble["members"]]  # a seed refit of trial N is named "N@rK"
    assert members and {int(str(m).split("@")[0]) for m in members} <= set(best_two)
    assert (Path(summary.ensemble["artifact_dir"]) / "manifest.json").exists()


@pytest.mark.slow
def test_trials_with_default_settings_leave_no_traced_graphs_behind(tmp_path: Path) -> None:
    """Memory of a long study with the default executor: each TensorFlow trial's traced train step used to
    stay alive through a gradient registration TensorFlow never removes (+6 MB per trial, 1.26 GB over 200
    trials); the study's process must hold no more traced graphs after trial 8 than after trial 2, besides the
    compiled models it keeps on purpose for later trials of the same architecture (hpo.execution.reuse: at most
    MAX_TWINS, released here before counting so that only what nothing should hold is counted)."""
    import gc

    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the leak and its fix are TensorFlow's")
    from tensorflow.python.framework.func_graph import FuncGraph

    from hpo.execution import reuse
    from hpo.study import run_study

    graphs: dict[int, int] = {}

    def on_end(result: object, progress: object) -> None:
        done = getattr(progress, "done")
        if done in (2, 8):
            assert len(reuse._TWINS) <= reuse.MAX_TWINS  # the kept compiled models are bounded
            reuse.clear_twins()
            gc.collect()
            graphs[done] = sum(isinstance(o, FuncGraph) for o in gc.get_objects())

    cfg = small_config(tmp_path, study={"name": "graphs", "n_trials": 8}, driver={"sampler": "random"},
                       training={"epochs": 1}, ensemble={"enabled": False}, guards={"enabled": False},
                       plots={"enabled": False}, report={"enabled": False})
    assert cfg.executor.mode == "auto"  # what a user who sets nothing runs
    summary = run_study(cfg, on_trial_end=on_end)
    assert summary.n_complete == 8
    assert graphs[8] <= graphs[2], graphs
