"""Ensembles that earn their place (issue #24): members calibrated on select, selection that never ends below
the best trial, fitted weights, a test ledger that counts exactly the final uses, a copyable artifact."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ensembles import build_ensemble, choose, evaluate, load_pool
from ensembles.calibrate import member_temperatures
from ensembles.ledger import TEST_USES_FILE, test_uses
from ensembles.pool import HeadInfo, Pool

from .conftest import ROOT, small_config

SPLITS = ("select", "audit", "test")


def _synthetic_pool(member_logits: list[np.ndarray], y: np.ndarray, values: list[float]) -> Pool:
    outs = np.stack(member_logits).astype(np.float32)
    return Pool(numbers=list(range(len(member_logits))), params=[{"m": i} for i in range(len(member_logits))],
                values=np.array(values), direction="maximize", heads=[HeadInfo("y", "multiclass", outs.shape[-1])],
                outputs={s: {"y": outs} for s in SPLITS}, labels={s: {"y": y} for s in SPLITS},
                model_paths=[None] * len(member_logits), objective="accuracy")


def _calibrated_logits(n: int, c: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose softmax is exactly the probability the labels were drawn from (temperature 1)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, c)) * 2.0
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(c, p=row) for row in p])
    return z, y


@pytest.mark.parametrize("scale", [4.0, 0.25])
def test_member_temperature_recovers_over_and_under_confidence(scale: float) -> None:
    """Logits scaled by 4 (over-confident) or 1/4 (under-confident) get back a temperature of about that scale."""
    z, y = _calibrated_logits(4000, 5, seed=int(scale * 4))
    pool = _synthetic_pool([z * scale, z], y, [0.5, 0.5])
    t = member_temperatures(pool)["y"]
    assert t[0] == pytest.approx(scale, rel=0.12)
    assert t[1] == pytest.approx(1.0, rel=0.12)


def test_calibration_lets_an_accurate_underconfident_member_lead() -> None:
    """The quickstart's failure: an accurate but under-confident trial is the guarded greedy's start and stays in."""
    z, y = _calibrated_logits(3000, 10, seed=3)
    rng = np.random.default_rng(4)
    good_but_timid = z * 0.1  # right as often as z, probabilities near uniform
    worse_but_confident = z + rng.normal(size=z.shape)  # wrong more often, but a lower raw NLL
    acc = [float((m.argmax(1) == y).mean()) for m in (good_but_timid, worse_but_confident)]
    assert acc[0] > acc[1]
    pool = _synthetic_pool([good_but_timid, worse_but_confident], y, acc)
    old, _ = choose(pool, method="greedy", size=5, guard=False, confidence=0)
    assert old[0] == 0, "raw NLL prefers the less accurate member alone (the old behaviour this guards against)"
    from ensembles.calibrate import calibrated

    cal = calibrated(pool, member_temperatures(pool))
    counts, _ = choose(cal, method="greedy", size=5)
    assert counts[0] >= 1
    assert evaluate(cal, counts, "probs", {}, splits=("select",))["select_accuracy"] >= acc[0]


def _margins(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each row's true-class logit minus the largest other logit (> 0: the row is right)."""
    others = np.where(np.eye(z.shape[1], dtype=bool)[y], -np.inf, z)
    return z[np.arange(len(y)), y] - others.max(1)


def test_an_addition_whose_select_gain_is_within_noise_keeps_the_best_single_alone() -> None:
    """A member that differs from the best one on six of 216 select rows (more confident on three unsure
    right rows, less on three) improves select NLL a little: the previous rule (confidence 0) adds it, the
    default asks that the gain survive 95% of bootstrap resamples of select and keeps the best trial alone."""
    from ensembles.select import _Scorer

    z, y = _calibrated_logits(216, 10, seed=2)  # the size of digits' select half
    margin = _margins(z, y)
    unsure, sure = np.flatnonzero((margin > 0) & (margin < 1))[:3], np.flatnonzero((margin > 1.5) & (margin < 3))[:3]
    other = z.copy()
    other[unsure, y[unsure]] += 1.0
    other[sure, y[sure]] -= 1.0  # still right: the margins stay above 0.5
    pool = _synthetic_pool([z, other], y, [0.6, 0.5])
    gain = _Scorer(pool, "select", "probs", "nll").rows(np.array([1.0, 0.0])) - \
        _Scorer(pool, "select", "probs", "nll").rows(np.array([1.0, 1.0]))
    assert gain.mean() > 0 and np.count_nonzero(np.abs(gain) > 1e-9) == 6
    previous, _ = choose(pool, method="greedy", size=5, confidence=0)
    assert previous[1] >= 1, "the previous rule adds the member on its select gain"
    counts, steps = choose(pool, method="greedy", size=5)
    assert counts.tolist() == [1.0, 0.0] and len(steps) == 1


def test_an_addition_with_a_real_select_gain_is_accepted() -> None:
    """Two members with independent errors on the same 216 rows: their average is far better than either
    (select NLL and accuracy), in every bootstrap resample, and the default rule takes both."""
    from ensembles.select import _Scorer, likely_better

    z, y = _calibrated_logits(216, 10, seed=52)
    rng = np.random.default_rng(7)
    members = [z + rng.normal(size=z.shape) * 2, z + rng.normal(size=z.shape) * 2]
    acc = [float((m.argmax(1) == y).mean()) for m in members]
    pool = _synthetic_pool(members, y, acc)
    counts, _ = choose(pool, method="greedy", size=5)
    assert (counts > 0).all()
    best = np.eye(2)[int(np.argmax(acc))]
    ens = evaluate(pool, counts, "probs", {}, splits=("select",))
    one = evaluate(pool, best, "probs", {}, splits=("select",))
    assert ens["select_nll"] < one["select_nll"] - 0.1 and ens["select_accuracy"] >= one["select_accuracy"]
    scorer = _Scorer(pool, "select", "probs", "nll")
    assert likely_better(scorer.rows(best) - scorer.rows(np.ones(2)), 0.999, strict=True)


def test_greedy_starts_from_the_best_trial_not_a_snapshot_scoring_higher_on_select() -> None:
    """A snapshot whose select score beats its trial's (select noise, or an earlier epoch) is a candidate,
    never the start: the guard's floor is the best trial, the model the ensemble is compared with."""
    import dataclasses

    z, y = _calibrated_logits(216, 10, seed=9)
    rng = np.random.default_rng(9)
    pool = dataclasses.replace(_synthetic_pool([z, z + rng.normal(size=z.shape)], y, [0.80, 0.85]),
                               numbers=[0, 0], epochs=[None, 2])
    assert pool.ranked()[0] == 1 and pool.best_trial() == 0
    _, steps = choose(pool, method="greedy", size=3)
    assert steps[0].tolist() == [1.0, 0.0]


def test_likely_better_is_a_paired_bootstrap_of_the_rows() -> None:
    from ensembles.select import likely_better

    rng = np.random.default_rng(0)
    assert likely_better(np.abs(rng.normal(size=200)) + 0.01, 0.95, strict=True)
    symmetric = np.concatenate([np.ones(100), -np.ones(100)])
    assert not likely_better(symmetric, 0.95, strict=True)
    assert not likely_better(np.zeros(200), 0.01, strict=True) and likely_better(np.zeros(200), 1.0, strict=False)
    one_row = np.zeros(216)
    one_row[0] = 1.0  # a gain resting on one row is missing from about 37% of resamples
    assert likely_better(one_row, 0.6, strict=True) and not likely_better(one_row, 0.7, strict=True)
    assert likely_better(symmetric + 0.05, 0.5, strict=True) == likely_better(symmetric + 0.05, 0.5, strict=True)


def test_fitted_weights_are_a_distribution_that_favours_the_informative_member() -> None:
    z, y = _calibrated_logits(3000, 10, seed=5)
    noise = np.random.default_rng(6).normal(size=z.shape)
    pool = _synthetic_pool([z, z + noise * 3, noise], y, [0.9, 0.5, 0.1])
    for combine_ in ("probs", "logits"):
        w, _ = choose(pool, method="weights", combine=combine_, size=5)
        assert (w >= 0).all() and w.sum() == pytest.approx(1.0)
        assert w[0] == w.max() and w[2] < 0.05
        single = evaluate(pool, np.eye(3)[0], combine_, {}, splits=("select",))["select_accuracy"]
        assert evaluate(pool, w, combine_, {}, splits=("select",))["select_accuracy"] >= single


@pytest.fixture(scope="module")
def small_study(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from hpo.study import run_study

    tmp = tmp_path_factory.mktemp("cal")
    cfg = small_config(tmp, study={"name": "cal", "n_trials": 5}, training={"epochs": 3},
                       plots={"enabled": False}, report={"enabled": False})
    return cfg, run_study(cfg)


def _ledger(run_dir: Path) -> list[str]:
    return [json.loads(line)["what"] for line in (run_dir / TEST_USES_FILE).read_text().splitlines()]


def test_test_ledger_counts_exactly_the_final_uses(small_study: Any, tmp_path: Path) -> None:
    """A study reads the locked test split twice: its incumbent and its ensemble; the size curve never reads it."""
    cfg, summary = small_study
    run_dir = cfg.run_dir
    uses = _ledger(run_dir)
    assert uses[0] == f"incumbent trial {summary.best_trial}"
    assert len(uses) == 2 and uses[1].startswith("ensemble greedy/probs of "), uses
    manifest = json.loads((run_dir / "ensemble" / "manifest.json").read_text())
    assert manifest["curve"] and not any(k.startswith("test_") for c in manifest["curve"] for k in c)
    assert summary.guards["test_uses"] == 2
    # a later `hpo ensemble` reads test for its ensemble and for the best single beside it: two more uses
    rep = build_ensemble(run_dir, method="weights", save_artifact=False)
    assert test_uses(run_dir) == 4 and _ledger(run_dir)[2:] == [
        f"ensemble weights/probs of {len(rep.members)} members", f"best single trial {rep.best_single['trial']} beside the ensemble"]
    build_ensemble(run_dir, method="top_k", size=2, save_artifact=False, incumbent_counted=rep.best_single["trial"])
    assert test_uses(run_dir) == 5


def test_copied_artifact_folder_loads_and_predicts_identically(small_study: Any, tmp_path: Path) -> None:
    """Every manifest path is relative; the folder copied elsewhere loads in a fresh process (safe mode) and
    predicts what the members' saved logits with their fitted temperatures give."""
    cfg, _ = small_study
    out = tmp_path / "made" / "ens"
    rep = build_ensemble(cfg.run_dir, method="greedy", combine="logits", size=4, out_dir=out, save_artifact=True)
    text = (out / "manifest.json").read_text()
    man = json.loads(text)
    assert str(tmp_path) not in text and str(cfg.run_dir.resolve()) not in text
    assert man["model_file"] == "ensemble.keras" and man["artifact_dir"] == "."
    assert (out / man["study"]).resolve() == cfg.run_dir.resolve()
    assert all((out / m["model_path"]).resolve().exists() for m in man["members"])
    assert man["calibrated"] and all(m["temperature"]["digit"] != 1.0 for m in man["members"])
    from ensembles.build import predict_members

    pool = load_pool(cfg.run_dir, snapshots=True, refits=True)  # members may be seed refits (on by default)
    offline = predict_members(pool, rep.members, "logits", rep.temperature, "test")["digit"]
    copy = tmp_path / "elsewhere" / "copied"
    shutil.copytree(out, copy)
    shutil.rmtree(out)
    from hpo.data import load_digits_splits

    np.save(tmp_path / "x.npy", load_digits_splits().x["test"])
    script = f"""
import json, numpy as np, keras, ensembles
x = np.load({str(tmp_path / 'x.npy')!r})
man = json.load(open("copied/manifest.json"))
m = keras.saving.load_model("copied/" + man["model_file"], safe_mode=True)
temps = [l.get_config()["member_temperatures"] for l in m.layers if l.__class__.__name__ == "Combine"]
np.save("pred.npy", m.predict(x, verbose=0))
print(json.dumps(temps))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", script], cwd=copy.parent, capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    temps = json.loads(done.stdout.strip().splitlines()[-1])
    assert temps == [[pytest.approx(m["temperature"]["digit"]) for m in man["members"]]]
    assert np.abs(np.load(copy.parent / "pred.npy") - offline).max() < 1e-5


def _hpo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "hpo.cli", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)


@pytest.mark.slow
def test_quickstart_ensemble_is_at_least_as_accurate_on_select_as_its_best_trial(tmp_path: Path) -> None:
    """The README's quickstart, its real config (12 trials, 8 epochs), prints an ensemble no worse on select."""
    run_dir = tmp_path / "runs" / "quickstart"
    done = _hpo("run", "experiments/quickstart.yaml", "--run-dir", str(run_dir), cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    best = float(re.search(r"^best trial \d+: select_accuracy=(\S+) ", done.stdout, re.M).group(1))
    ens = float(re.search(r"^  select: accuracy=([\d.]+)", done.stdout, re.M).group(1))
    assert ens >= best, done.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["ensemble"]["metrics"]["select_accuracy"] >= summary["best_select"] - 1e-6  # Keras reports float32


def test_snapshots_widen_the_pool_within_the_disk_budget(tmp_path: Path) -> None:
    """Epochs 1 and 2 of every 3-epoch trial are kept as candidates (logits and model), at most
    max_per_config per configuration; a small disk budget keeps the best trials' snapshots only."""
    from hpo.study import run_study

    cfg = small_config(tmp_path, study={"name": "snap", "n_trials": 4}, training={"epochs": 3},
                       ensemble={"size": 4, "snapshot_epochs": [1, 2], "max_per_config": 2},
                       plots={"enabled": False}, report={"enabled": False})
    summary = run_study(cfg)
    snaps = sorted(cfg.run_dir.glob("trials/*/snapshots/epoch_*"))
    assert len(snaps) == 8 and all((d / "predictions.npz").exists() and (d / "model.keras").exists() for d in snaps)
    pool = load_pool(cfg.run_dir, snapshots=True)
    assert len(pool) == 12 and sorted(e for e in pool.epochs if e) == [1, 1, 1, 1, 2, 2, 2, 2]
    capped = load_pool(cfg.run_dir, snapshots=True, max_per_config=2)
    assert len(capped) == 8 and all(capped.numbers.count(n) == 2 for n in set(capped.numbers))
    assert summary.ensemble["metrics"]["select_accuracy"] >= summary.best_select - 1e-6
    # an ensemble that includes a snapshot saves its model and predicts what its saved logits give
    rep = build_ensemble(cfg.run_dir, method="top_k", size=4, max_per_config=2, out_dir=tmp_path / "e", refits=False)
    assert any(m["epoch"] for m in rep.members)
    from ensembles import load_ensemble
    from ensembles.build import predict_members
    from hpo.data import load_digits_splits

    pred = load_ensemble(tmp_path / "e").predict(load_digits_splits().x["test"], verbose=0)
    offline = predict_members(load_pool(cfg.run_dir, snapshots=True), rep.members, "probs", {}, "test")["digit"]
    assert np.abs(pred - offline).max() < 1e-5
    # the disk budget: the worst trials' snapshots are deleted first
    from hpo.execution.snapshots import enforce_budget

    best_dir = cfg.run_dir / "trials" / f"{summary.best_trial:05d}" / "snapshots"
    budget = sum(f.stat().st_size for f in best_dir.rglob("*") if f.is_file()) / 2**20 * 1.01
    enforce_budget(cfg.run_dir / "trials", budget, current=tmp_path / "none")
    left = sorted(cfg.run_dir.glob("trials/*/snapshots/epoch_*"))
    assert len(left) < 8 and {d.parent for d in left} >= {best_dir}
    assert sum(f.stat().st_size for d in left for f in d.rglob("*") if f.is_file()) / 2**20 <= budget


@pytest.mark.parametrize("ensemble, field", [
    ({"snapshot_epochs": [0, 2]}, "ensemble.snapshot_epochs"),
    ({"snapshot_epochs": [3]}, "ensemble.snapshot_epochs"),  # the last epoch is the trial itself
    ({"snapshot_budget_mb": 0}, "ensemble.snapshot_budget_mb"),
    ({"max_per_config": 0}, "ensemble.max_per_config"),
    ({"method": "weights", "combine": "vote"}, "ensemble.combine"),
    ({"method": "stacking"}, "ensemble.method"),
    ({"confidence": 1.0}, "ensemble.confidence"),
    ({"confidence": -0.5}, "ensemble.confidence"),
])
def test_bad_ensemble_fields_are_named(tmp_path: Path, ensemble: dict, field: str) -> None:
    from hpo.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(field)):
        small_config(tmp_path, training={"epochs": 3}, ensemble=ensemble)
    assert not (tmp_path / "run").exists()
