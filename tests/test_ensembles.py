"""Ensembles read finished trials, choose on select only, and save one artifact that loads anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ensembles import build_ensemble, choose, combine, evaluate, fit_temperature, load_pool
from ensembles.combine import pooled_log_probs
from ensembles.metrics import ece, nll

from .conftest import ROOT


@pytest.fixture(scope="module")
def pool(finished_study: Any) -> Any:
    cfg, _ = finished_study
    return load_pool(cfg.run_dir)


def _select_nll(pool: Any, counts: np.ndarray, method: str) -> float:
    return evaluate(pool, counts, method, {}, splits=("select",))["select_nll"]


def _select(pool: Any, counts: np.ndarray, method: str, key: str) -> float:
    return evaluate(pool, counts, method, {}, splits=("select",))[f"select_{key}"]


@pytest.mark.parametrize("combine_", ["probs", "logits", "geometric"])
def test_greedy_is_never_worse_than_the_best_member_on_select(pool: Any, combine_: str) -> None:
    """Guarded greedy starts from the best trial by the objective (accuracy) and never ends below it."""
    counts, steps = choose(pool, method="greedy", combine=combine_, size=8, metric="nll")
    singles = [_select(pool, np.eye(len(pool))[i], combine_, "accuracy") for i in range(len(pool))]
    assert np.flatnonzero(steps[0]).tolist() == [int(pool.ranked()[0])]
    assert _select(pool, counts, combine_, "accuracy") >= max(singles) - 1e-12
    losses = [_select_nll(pool, c, combine_) for c in steps]
    assert all(b < a for a, b in zip(losses, losses[1:])), "each greedy step must improve select NLL"
    assert counts.sum() <= 8


@pytest.mark.parametrize("combine_", ["probs", "logits"])
def test_unguarded_greedy_is_caruanas_rule(pool: Any, combine_: str) -> None:
    """Without the guard, greedy starts from the best member by its metric and never ends above it."""
    counts, _ = choose(pool, method="greedy", combine=combine_, size=8, metric="nll", guard=False, confidence=0)
    singles = [_select_nll(pool, np.eye(len(pool))[i], combine_) for i in range(len(pool))]
    assert _select_nll(pool, counts, combine_) <= min(singles) + 1e-9


def test_audit_and_test_never_choose(pool: Any) -> None:
    """Poisoning audit and test (outputs and labels) changes no choice."""
    before = {m: choose(pool, method=m, combine="probs", size=5)[0] for m in ("greedy", "top_k")}
    rng = np.random.default_rng(0)
    for split in ("audit", "test"):
        for h, a in pool.outputs[split].items():
            pool.outputs[split][h] = rng.normal(size=a.shape).astype(a.dtype) * 50
        for h, y in pool.labels[split].items():
            pool.labels[split][h] = rng.permutation(y)
    try:
        for m, counts in before.items():
            assert np.array_equal(choose(pool, method=m, combine="probs", size=5)[0], counts)
    finally:
        pool.__dict__.update(load_pool(pool.run_dir).__dict__)


def test_top_k_takes_the_k_best_on_select(pool: Any) -> None:
    counts, _ = choose(pool, method="top_k", size=3)
    chosen = set(np.flatnonzero(counts))
    assert chosen == set(pool.ranked()[:3])
    assert all(pool.values[i] >= pool.values[j] for i in chosen for j in set(range(len(pool))) - chosen)


def test_combinations_match_their_definitions() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(size=(3, 50, 4))
    w = np.array([0.5, 0.25, 0.25])
    sm = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    np.testing.assert_allclose(combine(z, w, "probs"), (w[:, None, None] * sm).sum(0), atol=1e-12)
    pooled = (w[:, None, None] * z).sum(0)
    np.testing.assert_allclose(combine(z, w, "logits"), np.exp(pooled) / np.exp(pooled).sum(-1, keepdims=True), atol=1e-12)
    geo = np.exp((w[:, None, None] * np.log(sm)).sum(0))
    np.testing.assert_allclose(combine(z, w, "geometric"), geo / geo.sum(-1, keepdims=True), atol=1e-12)
    vote = combine(z, w, "vote")
    assert (vote.argmax(-1) == np.array([np.bincount(z[:, i].argmax(-1), weights=w, minlength=4).argmax()
                                          for i in range(50)])).all()


def test_temperature_fitted_on_select_lowers_its_nll() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 5, 400)
    logits = rng.normal(size=(400, 5))
    logits[np.arange(400), y] += 2.0
    overconfident = pooled_log_probs(logits[None] * 6, np.ones(1), "logits")
    t = fit_temperature(overconfident, y)
    assert t > 2
    from ensembles.combine import apply_temperature

    assert nll(np.exp(apply_temperature(overconfident, t)), y) < nll(np.exp(overconfident), y)


def test_ece_is_zero_when_calibrated_and_large_when_not() -> None:
    y = np.array([0, 1] * 50)
    perfect = np.eye(2)[y]
    assert ece(perfect, y) == 0
    wrong = np.eye(2)[1 - y]
    assert ece(wrong, y) == pytest.approx(1.0)


def test_artifact_round_trip_in_a_fresh_process(finished_study: Any, tmp_path: Path) -> None:
    cfg, summary = finished_study
    rep = build_ensemble(cfg.run_dir, method="greedy", combine="logits", size=4, temperature=True,
                         out_dir=tmp_path / "ens", tracking_uri=f"sqlite:///{cfg.run_dir.resolve() / 'mlflow.db'}",
                         parent_run_id=summary.parent_run_id)
    manifest = json.loads((tmp_path / "ens" / "manifest.json").read_text())
    assert [m["trial"] for m in manifest["members"]] == [m["trial"] for m in rep.members]
    assert manifest["combine"] == "logits" and manifest["data_hashes"] and manifest["package_versions"]["keras"]
    assert rep.calibrated and all(m["temperature"]["digit"] > 0 for m in manifest["members"])
    from ensembles.build import predict_members

    pool = load_pool(cfg.run_dir, snapshots=True, refits=True)  # members may be seed refits (on by default)
    offline = predict_members(pool, rep.members, "logits", rep.temperature, "test")["digit"]
    from hpo.data import load_digits_splits

    x_test = load_digits_splits().x["test"]
    np.save(tmp_path / "x.npy", x_test)
    np.save(tmp_path / "offline.npy", offline)
    script = f"""
import json, sys, numpy as np, keras, mlflow
import ensembles
x = np.load({str(tmp_path / 'x.npy')!r}); offline = np.load({str(tmp_path / 'offline.npy')!r})
k = keras.saving.load_model({str(tmp_path / 'ens' / 'ensemble.keras')!r}, safe_mode=True).predict(x, verbose=0)
mlflow.set_tracking_uri({f"sqlite:///{cfg.run_dir.resolve() / 'mlflow.db'}"!r})
p = mlflow.pyfunc.load_model({rep.model_uri!r}).predict(x)
print(json.dumps([float(np.abs(k - offline).max()), float(np.abs(np.asarray(p) - offline).max())]))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    keras_err, pyfunc_err = json.loads(out.stdout.strip().splitlines()[-1])
    assert keras_err < 1e-5 and pyfunc_err < 1e-5


def test_cli_ensemble_prints_ensemble_beside_best_single(finished_study: Any, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from hpo.cli import main

    cfg, _ = finished_study
    assert main(["ensemble", str(cfg.run_dir), "--method", "top_k", "--top-k", "3", "--combine", "geometric",
                 "--out", str(tmp_path / "e"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]) == 0
    out = capsys.readouterr().out
    assert "test   ensemble: accuracy=" in out and "best single: accuracy=" in out
    assert (tmp_path / "e" / "ensemble.keras").exists()


def test_cli_ensemble_confidence_reaches_selection_and_the_manifest(finished_study: Any, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """``hpo ensemble --confidence`` chooses what ``build_ensemble(confidence=...)`` chooses and records it;
    a value outside [0, 1) is refused before anything is built."""
    from hpo.cli import main

    cfg, _ = finished_study
    for conf in (0.0, 0.95):
        out_dir = tmp_path / f"e{conf}"
        assert main(["ensemble", str(cfg.run_dir), "--confidence", str(conf), "--out", str(out_dir),
                     "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]) == 0
        rep = build_ensemble(cfg.run_dir, confidence=conf, save_artifact=False)
        printed = capsys.readouterr().out
        assert (f"of {len(rep.members)} members: " + ", ".join(f"trial {m['trial']} x{m['count']:.3g}" for m in rep.members)
                in printed)
        assert json.loads((out_dir / "manifest.json").read_text())["confidence"] == conf
    with pytest.raises(SystemExit):
        main(["ensemble", str(cfg.run_dir), "--confidence", "1.5", "--out", str(tmp_path / "bad")])
    assert "must be at least 0 and below 1" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match="confidence"):
        choose(load_pool(cfg.run_dir), confidence=1.0)


def test_regression_heads_are_averaged_with_member_weights() -> None:
    from ensembles.build import predict_pool
    from ensembles.pool import HeadInfo, Pool

    rng = np.random.default_rng(3)
    outs = rng.normal(size=(3, 20, 1)).astype(np.float32)
    y = rng.normal(size=(20, 1))
    pool = Pool(numbers=[0, 1, 2], params=[{}, {}, {}], values=np.array([0.1, 0.2, 0.3]), direction="minimize",
                heads=[HeadInfo("age", "regression")], outputs={s: {"age": outs} for s in ("select", "audit", "test")},
                labels={s: {"age": y} for s in ("select", "audit", "test")}, model_paths=[None] * 3)
    counts = np.array([2.0, 1.0, 0.0])
    pred = predict_pool(pool, counts, "probs", {}, "test")["age"]
    np.testing.assert_allclose(pred, (2 * outs[0] + outs[1]) / 3, atol=1e-6)
    metrics = evaluate(pool, counts, "probs", {})
    assert metrics["test_mse"] == pytest.approx(float(((pred - y) ** 2).mean()), rel=1e-6)
    counts_g, _ = choose(pool, method="greedy", size=4)
    assert counts_g.sum() >= 1


def test_true_class_shortcut_scores_like_the_full_pooled_prediction(pool: Any) -> None:
    from ensembles.select import _Scorer

    fast = _Scorer(pool, "select", "probs", "nll")
    slow = _Scorer(pool, "select", "probs", "nll")
    slow.true_class = {}
    counts = np.zeros(len(pool))
    counts[[0, 2]] = [2, 1]
    allowed = np.ones(len(pool), bool)
    np.testing.assert_allclose(fast.loss_adding_each(counts, allowed), slow.loss_adding_each(counts, allowed), rtol=1e-5)
