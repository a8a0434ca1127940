"""Seed refits of the best configuration are candidates of the ensemble's pool, within the per-configuration cap."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ensembles import load_pool
from ensembles.build import predict_members
from ensembles.ledger import test_uses
from hpo.study import run_study

from .conftest import ROOT, small_config


def test_seed_refit_members_join_the_ensemble_and_its_artifact(tmp_path: Path) -> None:
    """A 3-seed refit runs before the ensemble; 2 of its members fit under ``max_per_config: 3`` beside the best
    trial; top-4 of 2 trials + 2 refits must take both refits, and the saved artifact says which members they are."""
    cfg = small_config(tmp_path, study={"n_trials": 2},
                       ensemble={"seed_refit": 3, "method": "top_k", "size": 4, "max_per_config": 3},
                       space={"params": {"batchnorm": {"fixed": False}}},
                       plots={"enabled": False}, report={"enabled": False})
    summary = run_study(cfg)
    run_dir = cfg.run_dir.resolve()
    best = summary.best_trial
    pool = load_pool(run_dir, refits=True, max_per_config=3)
    refits = [(pool.numbers[i], pool.refit(i)) for i in range(len(pool)) if pool.refit(i) is not None]
    assert len(refits) == 2 and {t for t, _ in refits} == {best}, refits  # the cap: trial + 2 of its 3 refits
    listed = json.loads((run_dir / "refit" / "members.json").read_text())
    dropped = next(m for m in listed if m["member"] not in {k for _, k in refits})
    assert all(m["value"] >= dropped["value"] for m in listed)  # the cap keeps the best refits by the objective
    assert len(load_pool(run_dir, refits=True)) == 5 and len(load_pool(run_dir)) == 2
    # each refit member's logits are its own row of the refit's predictions, scored by the objective on select
    z = np.load(run_dir / "refit" / "predictions.npz")["select/digit"]
    for _, k in refits:
        i = pool.index(best, refit=k)
        assert np.array_equal(pool.outputs["select"]["digit"][i], z[k])
        assert pool.values[i] == (z[k].argmax(-1) == pool.labels["select"]["digit"]).mean()
    records = summary.ensemble["member_records"]
    chosen = sorted(m["refit"] for m in records if m["refit"] is not None)
    assert len(records) == 4 and len(chosen) == 2, records
    assert sum(isinstance(n, str) and n.startswith(f"{best}@r") for n, _ in summary.ensemble["members"]) == 2
    manifest = json.loads((run_dir / "ensemble" / "manifest.json").read_text())
    in_artifact = [m for m in manifest["members"] if m["refit"] is not None]
    assert sorted(m["refit"] for m in in_artifact) == chosen and all(m["trial"] == best for m in in_artifact)
    assert all((run_dir / "ensemble" / m["model_path"]).exists() for m in in_artifact)
    # the test split: the incumbent and the ensemble, each read once (the refit is scored on select and audit)
    assert test_uses(run_dir) == 2
    # the artifact (refit members inside) predicts what the members' saved logits say, in a fresh process
    offline = predict_members(pool, manifest["members"], manifest["combine"], manifest["temperature"], "test")["digit"]
    from hpo.data import load_digits_splits

    np.save(tmp_path / "x.npy", load_digits_splits().x["test"])
    np.save(tmp_path / "offline.npy", offline)
    script = f"""
import json, numpy as np, keras, mlflow
import ensembles
x = np.load({str(tmp_path / 'x.npy')!r}); offline = np.load({str(tmp_path / 'offline.npy')!r})
k = keras.saving.load_model({str(run_dir / 'ensemble' / 'ensemble.keras')!r}, safe_mode=True).predict(x, verbose=0)
mlflow.set_tracking_uri({f"sqlite:///{run_dir / 'mlflow.db'}"!r})
p = mlflow.pyfunc.load_model({summary.ensemble['model_uri']!r}).predict(x)
print(json.dumps([float(np.abs(k - offline).max()), float(np.abs(np.asarray(p) - offline).max())]))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    keras_err, pyfunc_err = json.loads(out.stdout.strip().splitlines()[-1])
    assert keras_err < 1e-5 and pyfunc_err < 1e-5


def test_a_default_study_refits_its_best_configuration_with_two_seeds_for_the_ensemble(tmp_path: Path) -> None:
    """``ensemble.seed_refit`` left at null: a packable study (mlp, fixed batch size and epochs) trains 2 seeds of
    its best trial after the search and they are candidates of the ensemble; the ensemble never ends below the best
    trial on select."""
    cfg = small_config(tmp_path, study={"n_trials": 3}, plots={"enabled": False}, report={"enabled": False},
                       space={"params": {"batchnorm": {"fixed": True}}})  # batch norm packs too
    assert cfg.ensemble.seed_refit is None
    summary = run_study(cfg)
    run_dir = cfg.run_dir.resolve()
    assert summary.seed_refit is not None and summary.seed_refit["members"] == 2
    listed = json.loads((run_dir / "refit" / "members.json").read_text())
    assert [m["trial"] for m in listed] == [summary.best_trial] * 2 and len({m["seed"] for m in listed}) == 2
    pool = load_pool(run_dir, refits=True)
    assert sorted(pool.refit(i) for i in range(len(pool)) if pool.refit(i) is not None) == [0, 1]
    e = summary.ensemble
    best = json.loads((run_dir / "trials" / f"{summary.best_trial:05d}" / "result.json").read_text())
    assert e["metrics"]["select_accuracy"] >= best["value"] - 1e-6  # the trial's value is a float32


@pytest.mark.parametrize("sections,why", [
    ({"training": {"batch_size": {"values": [64, 128]}}}, "searches batch_size"),
    ({"space": {"builder": "convnet", "params": {}}}, "mlp builder only"),
    ({"ensemble": {"enabled": False}}, None),
])
def test_a_default_study_that_cannot_refit_skips_it_quietly(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                            sections: dict[str, Any], why: str | None) -> None:
    """Left at null, the refit is skipped without an error or a warning where it does not apply (searched batch
    size, a best configuration that does not pack, no ensemble to use it); the reason is logged at info."""
    cfg = small_config(tmp_path, study={"n_trials": 2}, plots={"enabled": False}, report={"enabled": False},
                       **sections)
    with caplog.at_level(logging.INFO, logger="hpo"):
        summary = run_study(cfg)
    assert summary.seed_refit is None and not (cfg.run_dir / "refit").exists()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "refit" in r.getMessage()]
    if why:
        assert any(why in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)
