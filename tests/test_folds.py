"""K-fold cross-validated studies (training.folds) on real data (digits): the objective is the out-of-fold score
recomputed from the saved files, the folds are stratified and shared by every trial, the bagged trial model and
the ensemble of bags load in a fresh process and predict what the saved logits say, MLflow shows every fold, and
bad input is refused naming the field before anything is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest

from hpo.data import load_digits_splits
from hpo.errors import ConfigError
from hpo.study import run_study, search

from .conftest import ROOT, small_config

K = 5


@pytest.fixture(scope="module")
def cv_study(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A 3-trial, 5-fold, 2-epoch study with the median pruner (asked at every fold's epochs) and its ensemble."""
    tmp = tmp_path_factory.mktemp("cv")
    cfg = small_config(tmp, study={"name": "cv", "n_trials": 3}, driver={"pruner": "median"},
                       training={"epochs": 2, "folds": K}, report={"enabled": False}, plots={"enabled": False},
                       ensemble={"size": 3, "method": "top_k", "combine": "logits"})
    return cfg, run_study(cfg)


def _files(cfg: Any, n: int) -> tuple[dict, dict, dict, dict]:
    d = cfg.run_dir / "trials" / f"{n:05d}"
    r = json.loads((d / "result.json").read_text())
    with np.load(d / "predictions.npz") as p, np.load(d / "folds.npz") as f, np.load(cfg.run_dir / "labels.npz") as y:
        return r, dict(p), dict(f), dict(y)


def test_objective_is_the_out_of_fold_accuracy_recomputed_from_saved_logits(cv_study: Any) -> None:
    cfg, summary = cv_study
    assert summary.n_complete == 3
    digits = load_digits_splits()
    pool_y = np.concatenate([digits.y["train"], digits.y["select"]])
    assignments = []
    for n in range(3):
        r, pred, folds, labels = _files(cfg, n)
        # select is the pool train+select (every row scored once, out of fold); audit and test stay held out
        assert np.array_equal(labels["select/digit"], pool_y)
        assert np.array_equal(labels["audit/digit"], digits.y["audit"])
        oof = pred["select/digit"]
        assert oof.shape == (len(pool_y), 10)
        assert r["value"] == pytest.approx(float((oof.argmax(1) == pool_y).mean()), abs=1e-6)
        assert r["metrics"]["select_accuracy"] == r["value"]
        # audit and test logits: the mean of the fold models' own logits, kept per fold in folds.npz
        for split in ("audit", "test"):
            mean = np.mean([folds[f"fold_{f}/{split}/digit"] for f in range(K)], axis=0)
            assert np.abs(pred[f"{split}/digit"] - mean).max() < 1e-5
        assert r["metrics"]["audit_accuracy"] == pytest.approx(
            float((pred["audit/digit"].argmax(1) == labels["audit/digit"]).mean()), abs=1e-6)
        assignments.append(folds["fold"])
        # seeds recorded: the trial's, the fold assignment's (the study's) and one per fold model
        assert r["cv"]["k"] == K and r["cv"]["fold_seed"] == cfg.study.seed and r["cv"]["stratified"]
        assert len({f["seed"] for f in r["cv"]["folds"]}) == K and r["cv"]["folds"][0]["seed"] == r["seed"]
        assert r["epochs"] == K * 2 and len(r["history"]["val_accuracy"]) == 2
    fold = assignments[0]
    assert all(np.array_equal(fold, a) for a in assignments)  # every trial is scored on the same folds
    per_class = np.array([[np.sum((fold == f) & (pool_y == c)) for f in range(K)] for c in range(10)])
    assert (per_class.max(1) - per_class.min(1)).max() <= 1  # stratified
    data = json.loads((cfg.run_dir / "data.json").read_text())
    assert data["folds"] == {"k": K, "seed": 0, "pool": "train+select"}


def test_pruner_and_mlflow_see_every_fold(cv_study: Any) -> None:
    import optuna

    from hpo.drivers import default_storage
    from hpo.drivers.optuna import resolve_storage

    cfg, summary = cv_study
    study = optuna.load_study(study_name=cfg.study.name, storage=resolve_storage(default_storage(cfg.run_dir)))
    for t in study.trials:  # fold f's epoch e is step f * epochs + e
        assert sorted(t.intermediate_values) == list(range(K * 2))
        r, *_ = _files(cfg, t.number)
        assert t.intermediate_values[2 * 3 + 1] == pytest.approx(r["cv"]["folds"][3]["metrics"]["select_accuracy"])
    client = mlflow.MlflowClient(summary.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(cfg.study.name).experiment_id],
                              "tags.`hpo.kind` = 'trial'")
    assert len(runs) == 3
    for run in runs:
        r, *_ = _files(cfg, int(run.data.tags["hpo.trial"]))
        assert run.data.tags["hpo.folds"] == str(K)
        for f in range(K):
            steps = client.get_metric_history(run.info.run_id, f"fold_{f}/epoch_select_accuracy")
            assert [m.step for m in steps] == [0, 1]
            assert run.data.metrics[f"fold_{f}/select_accuracy"] == pytest.approx(
                r["cv"]["folds"][f]["metrics"]["select_accuracy"])
        mean = client.get_metric_history(run.info.run_id, "epoch_select_accuracy")
        assert [m.value for m in mean] == pytest.approx(r["history"]["val_accuracy"])
        assert run.data.metrics["select_accuracy"] == pytest.approx(r["value"])


def test_bagged_trial_and_ensemble_load_in_a_fresh_process_and_match(cv_study: Any, tmp_path: Path) -> None:
    cfg, summary = cv_study
    from ensembles.artifact import load_ensemble
    from ensembles.build import predict_members
    from ensembles.pool import load_pool

    x = load_digits_splits().x["test"]
    np.save(tmp_path / "x.npy", x)
    best = summary.best_trial
    _, pred, _, _ = _files(cfg, best)
    ens_dir = Path(summary.ensemble["artifact_dir"])
    members = json.loads((ens_dir / "manifest.json").read_text())["members"]
    assert len(members) == 3  # top_k of 3: three bags of five fold models each
    script = f"""
import numpy as np, keras, ensembles
x = np.load({str(tmp_path / 'x.npy')!r})
trial = keras.saving.load_model({str(cfg.run_dir / 'trials' / f'{best:05d}' / 'model.keras')!r}, safe_mode=True)
assert [l.name for l in trial.layers if l.name.startswith("fold_")] == [f"fold_{{i}}" for i in range({K})]
np.save("trial.npy", trial.predict(x, verbose=0))
ens = keras.saving.load_model({str(ens_dir / 'ensemble.keras')!r}, safe_mode=True)
np.save("ens.npy", ens.predict(x, verbose=0))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # the bagged trial model outputs the mean of its fold models' logits: the saved test logits
    assert np.abs(np.load(tmp_path / "trial.npy") - pred["test/digit"]).max() < 1e-4
    fresh = np.load(tmp_path / "ens.npy")
    here = np.asarray(load_ensemble(ens_dir).predict(x, verbose=0))
    assert np.abs(fresh - here).max() < 1e-5
    offline = predict_members(load_pool(cfg.run_dir), members, "logits", {}, "test")["digit"]
    assert np.abs(fresh - offline).max() < 1e-4


@pytest.mark.parametrize("training, sections, field", [
    ({"folds": 1}, {}, "training.folds"),
    ({"folds": 0}, {}, "training.folds"),
    ({"folds": 500}, {}, "training.folds"),  # digits' smallest class has 120 rows in train+select
    ({"folds": 3}, {"executor": {"pack": 4}}, "executor.pack"),
    ({"folds": 3}, {"driver": {"pruner": "hyperband"}}, "driver.pruner"),
    ({"folds": 3}, {"driver": {"pruner": "successive_halving"}}, "driver.pruner"),
    ({"folds": 3}, {"ensemble": {"seed_refit": 4}}, "ensemble.seed_refit"),
    ({"folds": 3, "epochs": 3}, {"ensemble": {"snapshot_epochs": [1]}}, "ensemble.snapshot_epochs"),
])
def test_bad_folds_are_refused_before_anything_is_written(tmp_path: Path, training: dict, sections: dict,
                                                          field: str) -> None:
    with pytest.raises(ConfigError) as err:
        run_study(small_config(tmp_path, training=training, **sections))
    assert err.value.field == field
    assert not (tmp_path / "run").exists()


def _build(hp: Any) -> Any:
    import keras

    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(hp.Int("units", 8, 32)), keras.layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def test_search_refuses_more_folds_than_the_smallest_class(tmp_path: Path) -> None:
    d = load_digits_splits()
    y = d.y["train"]
    keep = np.r_[np.flatnonzero(y != 7), np.flatnonzero(y == 7)[:3]]  # three rows of class 7 in train
    val = np.flatnonzero(d.y["select"] != 7)  # and none in the validation data
    with pytest.raises(ConfigError, match="class 7 has 3: use at most 3 folds") as err:
        search(_build, d.x["train"][keep], y[keep], validation_data=(d.x["select"][val], d.y["select"][val]),
               test_data=(d.x["test"], d.y["test"]), folds=4, run_dir=tmp_path / "run", progress=False)
    assert err.value.field == "training.folds"
    assert not (tmp_path / "run").exists()


def test_a_fold_starting_after_the_trial_budget_fails_the_trial_with_the_reason(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, study={"n_trials": 1}, training={"epochs": 1, "folds": 3, "trial_timeout_s": 0.001},
                       ensemble={"enabled": False}, report={"enabled": False}, plots={"enabled": False})
    run_study(cfg)
    r = json.loads((cfg.run_dir / "trials" / "00000" / "result.json").read_text())
    assert r["state"] == "FAILED"
    assert "training.trial_timeout_s" in r["error"] and "after 1 of 3 folds" in r["error"]


@pytest.mark.slow
def test_worker_processes_give_the_in_process_scores(tmp_path: Path) -> None:
    """The same cross-validated study in a worker process and in the study's own process: the same objective."""
    values = []
    for mode in ("processes", "inprocess"):
        cfg = small_config(tmp_path / mode, study={"n_trials": 2}, training={"epochs": 1, "folds": 3},
                           executor={"mode": mode, "cpu_workers": 1}, ensemble={"enabled": False},
                           report={"enabled": False}, plots={"enabled": False})
        run_study(cfg)
        values.append({n: json.loads((cfg.run_dir / "trials" / f"{n:05d}" / "result.json").read_text())
                       for n in range(2)})
    for n in range(2):
        assert values[0][n]["cv"]["folds"] == values[1][n]["cv"]["folds"]
        assert values[0][n]["value"] == pytest.approx(values[1][n]["value"], abs=1e-6)
