"""Guards against overfitting the validation set: the alarm, the locked test split, reselection, stopping."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
import pytest

from hpo.data import DataSpec, Head, Splits, load_digits_splits
from hpo.analysis.guards import bootstrap_mean, paired_tie, regret_bound
from hpo.space import SearchSpace, discover
from hpo.study import run_study

from .conftest import small_config

K = 8  # hyperparameters that act as a readout: the search itself can fit select through them


def memoriser(hp: Any, spec: DataSpec) -> keras.Model:
    """A frozen model whose logit is a linear readout, with the readout weights as hyperparameters."""
    w = np.array([hp.Float(f"w{i}", -1.0, 1.0) for i in range(K)], dtype="float32").reshape(K, 1)
    inp = keras.Input(spec.input_shape)
    out = keras.layers.Dense(1, use_bias=False, trainable=False, kernel_initializer=keras.initializers.Constant(w))(inp)
    model = keras.Model(inp, out)
    model.compile("sgd", keras.losses.BinaryCrossentropy(from_logits=True),
                  metrics=[keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)])
    return model


def random_label_splits(n_select: int = 16, n_audit: int = 400, seed: int = 0) -> Splits:
    rng = np.random.default_rng(seed)
    sizes = {"train": 32, "select": n_select, "audit": n_audit, "test": 200}
    x = {s: rng.normal(size=(n, K)).astype("float32") for s, n in sizes.items()}
    y = {s: rng.integers(0, 2, size=(n, 1)).astype("float32") for s, n in sizes.items()}
    return Splits(x=x, y=y, spec=DataSpec({"x": (K,)}, (Head("label", "binary", 1),)), name="random-labels")


@pytest.mark.slow
def test_planted_overfit_raises_the_alarm(tmp_path: Path) -> None:
    """Random labels everywhere, a small select half, a space that can memorise it: a large gap and the alarm."""
    cfg = small_config(tmp_path, study={"name": "planted", "n_trials": 60},
                       space={"builder": "tests.test_guards:memoriser", "params": {}},
                       training={"epochs": 1, "batch_size": 32, "save_models": False},
                       ensemble={"enabled": False})
    summary = run_study(cfg, build=memoriser, splits=random_label_splits())
    g = summary.guards
    check = g["incumbent_check"]
    assert check["select"] >= 0.75 and check["audit"] < 0.62  # select memorised, audit at chance
    assert check["gap"] > check["threshold"] and g["overfit"] is True
    client = mlflow.tracking.MlflowClient(summary.tracking_uri)
    assert client.get_run(summary.parent_run_id).data.tags["hpo.guard.overfit"] == "true"
    assert "OVERFIT ALARM" in json.loads((cfg.run_dir / "summary.json").read_text())["guards"]["verdict"]


def test_sane_search_on_digits_raises_no_alarm(finished_study: Any) -> None:
    cfg, summary = finished_study
    g = summary.guards
    assert g["overfit"] is False
    c = g["incumbent_check"]
    assert c["select_ci"][0] <= c["select"] <= c["select_ci"][1]
    assert c["audit_ci"][0] <= c["audit"] <= c["audit_ci"][1]
    assert g["correlation"] is not None and g["correlation"] > 0.5
    assert g["incumbents"][-1] == summary.best_trial
    assert g["ensemble_check"] is not None
    assert g["restore_best_epoch"]["last_epoch"] == 3
    client = mlflow.tracking.MlflowClient(summary.tracking_uri)
    parent = client.get_run(summary.parent_run_id).data
    assert parent.tags["hpo.guard.overfit"] == "false"
    assert {"guard_gap", "guard_gap_threshold", "guard_select_audit_correlation", "test_split_uses"} <= set(parent.metrics)
    assert parent.metrics["test_split_uses"] >= 2  # the incumbent and the ensemble, each counted


def test_locked_test_split_never_reaches_the_sampler(tmp_path: Path) -> None:
    """Poisoning test inputs and labels changes no sampled configuration and no select or audit score."""
    clean = load_digits_splits()
    poisoned = load_digits_splits()
    rng = np.random.default_rng(0)
    poisoned.y["test"] = rng.permutation(poisoned.y["test"])
    poisoned.x["test"] = rng.random(poisoned.x["test"].shape).astype("float32")
    poisoned.hashes.clear()
    poisoned.__post_init__()
    out = []
    for name, splits in (("clean", clean), ("poisoned", poisoned)):
        cfg = small_config(tmp_path / name, study={"name": "lock", "n_trials": 3},
                           ensemble={"enabled": True, "method": "greedy", "size": 3})
        s = run_study(cfg, splits=splits)
        out.append(([(t["params"], t["value"], t["audit"]) for t in s.trials], s.ensemble["members"], s.best_test))
    assert out[0][0] == out[1][0], "the sampler or a trial saw the test split"
    assert out[0][1] == out[1][1], "ensemble member selection saw the test split"
    assert out[0][2] != out[1][2]  # the test scores themselves did change


def test_reselection_retrains_the_top_configurations_with_new_seeds(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, study={"name": "resel", "n_trials": 3}, ensemble={"enabled": False},
                       guards={"reselect_top_k": 2, "reselect_seeds": 1})
    summary = run_study(cfg)
    r = summary.reselection
    assert len(r["by_trial"]) == 2 and r["seeds_per_config"] == 2
    for row in r["by_trial"].values():
        assert len(row["select_values"]) == 2
        assert row["select_mean"] == pytest.approx(np.mean(row["select_values"]))
    assert summary.best_trial == r["chosen"]
    client = mlflow.tracking.MlflowClient(summary.tracking_uri)
    exp = client.get_experiment_by_name("resel")
    assert len(client.search_runs([exp.experiment_id], filter_string="tags.`hpo.kind` = 'reselect'")) == 2


def test_stopping_rule_stops_a_search_with_nothing_left_to_gain(tmp_path: Path) -> None:
    fixed = {"layers": {"fixed": 1}, "units": {"fixed": 16}, "activation": {"fixed": "relu"}, "dropout": {"fixed": 0.0},
             "batchnorm": {"fixed": False}, "use_l2": {"fixed": False}, "learning_rate": {"fixed": 0.01},
             "optimizer": {"fixed": "adam"}}
    cfg = small_config(tmp_path, study={"name": "stop", "n_trials": 10}, space={"params": fixed},
                       ensemble={"enabled": False}, guards={"stop_when_converged": True, "stop_min_trials": 3})
    summary = run_study(cfg)
    assert summary.n_complete == 3 and summary.stopped_early and "regret bound" in summary.stopped_early


def test_stopping_rule_lets_a_search_with_something_to_gain_run_its_budget(tmp_path: Path) -> None:
    """The other half of the rule: learning rates from 1e-5 (nothing learnt in 2 epochs) to 0.1 leave a regret
    bound far above the select score's error, so the search is not stopped."""
    space = {"layers": {"fixed": 1}, "units": {"min": 8, "max": 64, "log": True},
             "learning_rate": {"min": 1e-5, "max": 0.1, "log": True}, "batchnorm": {"fixed": False}}
    cfg = small_config(tmp_path, study={"name": "nostop", "n_trials": 6}, space={"params": space},
                       driver={"sampler": "random"}, ensemble={"enabled": False}, plots={"enabled": False},
                       report={"enabled": False}, guards={"stop_when_converged": True, "stop_min_trials": 3})
    summary = run_study(cfg)
    values = [t["value"] for t in summary.trials]
    assert max(values) - min(values) > 0.2, values  # there was something to gain
    assert summary.n_complete == 6 and not summary.stopped_early


def test_regret_bound_shrinks_as_the_optimum_is_pinned_down() -> None:
    space = discover(lambda hp: hp.Float("x", 0.0, 1.0))
    rng = np.random.default_rng(0)
    f = lambda x: 1.0 - (x - 0.3) ** 2  # noqa: E731
    sparse = [{"x": float(v)} for v in rng.uniform(0, 1, 4)]
    dense = sparse + [{"x": float(v)} for v in np.linspace(0, 1, 40)]
    b_sparse = regret_bound(space, sparse, [f(p["x"]) for p in sparse], "maximize", min_top=4)
    b_dense = regret_bound(space, dense, [f(p["x"]) for p in dense], "maximize")
    assert b_dense < b_sparse


def test_bootstrap_helpers() -> None:
    x = np.r_[np.ones(80), np.zeros(20)]
    lo, hi, se = bootstrap_mean(x, n_resamples=1000, confidence=0.95, seed=0)
    assert lo < 0.8 < hi and 0.02 < se < 0.06
    rng = np.random.default_rng(1)
    a = (rng.random(500) < 0.9).astype(float)
    assert paired_tie(a, a.copy(), n_resamples=500, confidence=0.95, seed=0)
    assert not paired_tie(a, np.zeros(500), n_resamples=500, confidence=0.95, seed=0)
