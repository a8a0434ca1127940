"""The guards' statistics on hand-made run directories: which per-example score a metric names, the gap and its
alarm, ties, the incumbent trajectory and overtuning, the restore-best-epoch effect, and the stopping rule's
encoding, sampling and regret bound. No training: these run in milliseconds (and under mutation testing)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hpo.analysis.guards import (
    GapCheck, GuardReport, _gap_check, bootstrap_mean, check_study, encode, metric_head, paired_tie, per_example,
    regret_bound, sample_random, statistical_error,
)
from hpo.space import Condition, Param, SearchSpace, discover

MULTI = {"name": "digit", "kind": "multiclass"}
PINNED_BOUND = 0.127979930011781  # test_the_default_bound_of_a_recorded_history (scikit-learn 1.9.1)
BINARY = {"name": "flag", "kind": "binary"}
REG = {"name": "price", "kind": "regression"}


# -- which per-example score a metric is -------------------------------------------------------------------------
def test_a_single_heads_metric_names_its_per_example_score() -> None:
    assert metric_head("accuracy", [MULTI]) == (MULTI, "accuracy")
    assert metric_head("digit_accuracy", [MULTI]) == (MULTI, "accuracy")
    assert metric_head("loss", [MULTI]) == (MULTI, "nll")
    assert metric_head("loss", [BINARY]) == (BINARY, "nll")
    assert metric_head("loss", [REG]) == (REG, "sq_err")
    assert metric_head("mae", [REG]) == (REG, "abs_err")
    assert metric_head("mse", [REG]) == (REG, "sq_err")
    assert metric_head("accuracy", [REG]) is None  # no accuracy of a regression
    assert metric_head("auc", [MULTI]) is None
    assert metric_head("val_accuracy", [MULTI]) is None


def test_with_several_heads_only_the_prefixed_names_count() -> None:
    heads = [MULTI, REG]
    assert metric_head("accuracy", heads) is None
    assert metric_head("loss", heads) is None
    assert metric_head("digit_loss", heads) == (MULTI, "nll")
    assert metric_head("price_loss", heads) == (REG, "sq_err")
    assert metric_head("price_mae", heads) == (REG, "abs_err")


def test_per_example_scores_from_saved_outputs() -> None:
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 0.0]])
    y = np.array([0, 1, 1])
    preds, labels = {"select/digit": logits}, {"select/digit": y}
    np.testing.assert_array_equal(per_example(preds, labels, "select", MULTI, "accuracy"), [1.0, 0.0, 0.0])
    lse = np.log(np.exp(logits).sum(1))
    np.testing.assert_allclose(per_example(preds, labels, "select", MULTI, "nll"), lse - logits[[0, 1, 2], y])
    one_hot = {"select/digit": np.eye(3)[y]}
    np.testing.assert_array_equal(per_example(preds, one_hot, "select", {**MULTI, "one_hot": True}, "accuracy"),
                                  [1.0, 0.0, 0.0])
    z = np.array([[1.5], [-0.5], [0.2]])
    yb = np.array([[1.0], [1.0], [0.0]])
    got = per_example({"audit/flag": z}, {"audit/flag": yb}, "audit", BINARY, "nll")
    p1 = 1 / (1 + np.exp(-z[:, 0]))
    np.testing.assert_allclose(got, -np.log(np.where(yb[:, 0] == 1, p1, 1 - p1)))
    np.testing.assert_array_equal(per_example({"audit/flag": z}, {"audit/flag": yb}, "audit", BINARY, "accuracy"),
                                  [1.0, 0.0, 0.0])


def test_per_example_regression_errors_average_over_outputs() -> None:
    out = np.array([[1.0, 2.0], [4.0, 0.0]])
    y = np.array([[2.0, 0.0], [1.0, -3.0]])
    p, lab = {"select/price": out}, {"select/price": y}
    np.testing.assert_allclose(per_example(p, lab, "select", REG, "abs_err"), [1.5, 3.0])
    np.testing.assert_allclose(per_example(p, lab, "select", REG, "sq_err"), [2.5, 9.0])


def test_per_example_scores_are_float64_from_float32_outputs() -> None:
    z = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    y = np.arange(6) % 4
    got = per_example({"select/digit": z}, {"select/digit": y}, "select", MULTI, "nll")
    z64 = z.astype(np.float64)
    want = np.log(np.exp(z64).sum(1)) - z64[np.arange(6), y]
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-12)


# -- bootstrap ---------------------------------------------------------------------------------------------------
def test_bootstrap_interval_of_a_mean() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, size=400)
    lo, hi, se = bootstrap_mean(x, n_resamples=2000, confidence=0.95, seed=0)
    assert se == pytest.approx(x.std() / math.sqrt(len(x)), rel=0.1)
    assert lo < x.mean() < hi
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.1)  # a 95% interval
    lo50, hi50, _ = bootstrap_mean(x, n_resamples=2000, confidence=0.5, seed=0)
    assert hi50 - lo50 == pytest.approx(2 * 0.674 * se, rel=0.15)  # the confidence level is the one asked for
    assert bootstrap_mean(x, n_resamples=2000, confidence=0.95, seed=0) == (lo, hi, se)  # seeded: reproducible
    assert bootstrap_mean(x, n_resamples=2000, confidence=0.95, seed=1) != (lo, hi, se)
    assert bootstrap_mean(np.full(5, 0.25), n_resamples=100, confidence=0.95, seed=0) == (0.25, 0.25, 0.0)
    assert bootstrap_mean(np.array([0.5]), n_resamples=100, confidence=0.95, seed=0) == (0.5, 0.5, 0.0)  # one example


def test_bootstrap_is_scipys_percentile_bootstrap_with_the_resamples_asked_for() -> None:
    from scipy.stats import bootstrap

    x = np.random.default_rng(3).exponential(size=60)  # skewed: percentile and BCa intervals differ
    for n_resamples, confidence in ((300, 0.9), (1000, 0.95)):
        ref = bootstrap((x,), np.mean, n_resamples=n_resamples, confidence_level=confidence, method="percentile",
                        rng=np.random.default_rng(7))
        got = bootstrap_mean(x, n_resamples=n_resamples, confidence=confidence, seed=7)
        assert got == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high, ref.standard_error),
                                    rel=1e-12)


def test_paired_tie_is_whether_the_difference_could_be_zero() -> None:
    rng = np.random.default_rng(1)
    a = (rng.random(500) < 0.9).astype(float)
    assert paired_tie(a, a.copy(), n_resamples=500, confidence=0.95, seed=0)
    assert not paired_tie(a + 1.0, a, n_resamples=500, confidence=0.95, seed=0)  # constant non-zero difference
    assert not paired_tie(a, a + 0.5, n_resamples=500, confidence=0.95, seed=0)
    b = a.copy()
    b[:3] = 1 - b[:3]  # three examples flipped out of 500: indistinguishable
    assert paired_tie(a, b, n_resamples=500, confidence=0.95, seed=0)
    assert not paired_tie(a, np.zeros(500), n_resamples=500, confidence=0.95, seed=0)
    d = np.r_[np.full(200, 1.1), np.full(200, -0.9)]  # mean 0.1, se 0.05: tied at 99.9%, not at 50%
    assert paired_tie(d, np.zeros(400), n_resamples=1000, confidence=0.999, seed=0)
    assert not paired_tie(d, np.zeros(400), n_resamples=1000, confidence=0.5, seed=0)
    assert paired_tie(np.array([0.5]), np.array([0.5]), n_resamples=100, confidence=0.95, seed=0)  # one example
    assert not paired_tie(np.array([0.5]), np.array([0.0]), n_resamples=100, confidence=0.95, seed=0)


def test_an_interval_that_reaches_zero_exactly_is_a_tie() -> None:
    two_wins = np.r_[np.ones(2), np.zeros(98)]  # most resamples hold a win, 13% none: the 2.5% point is exactly 0
    assert paired_tie(two_wins, np.zeros(100), n_resamples=1000, confidence=0.95, seed=0)
    assert paired_tie(np.zeros(100), two_wins, n_resamples=1000, confidence=0.95, seed=0)


# -- the gap and its alarm ---------------------------------------------------------------------------------------
def test_gap_is_select_minus_audit_with_larger_better() -> None:
    sel = np.r_[np.ones(90), np.zeros(10)]
    aud = np.r_[np.ones(70), np.zeros(30)]
    c = _gap_check(sel, aud, "accuracy", None, 1000, 0.95, 0)
    assert (c.select, c.audit) == (pytest.approx(0.9), pytest.approx(0.7))
    assert c.gap == pytest.approx(0.2)
    s_se = bootstrap_mean(sel, n_resamples=1000, confidence=0.95, seed=0)[2]
    a_se = bootstrap_mean(aud, n_resamples=1000, confidence=0.95, seed=1)[2]
    assert c.gap_se == pytest.approx(math.sqrt(s_se**2 + a_se**2))
    assert c.threshold == pytest.approx(2 * c.gap_se)
    assert c.overfit
    assert c.select_ci[0] < 0.9 < c.select_ci[1] and c.audit_ci[0] < 0.7 < c.audit_ci[1]
    loss = _gap_check(1 - sel, 1 - aud, "nll", None, 1000, 0.95, 0)  # a loss: lower is better
    assert loss.gap == pytest.approx(0.2) and loss.overfit
    worse_on_select = _gap_check(aud, sel, "accuracy", None, 1000, 0.95, 0)
    assert worse_on_select.gap == pytest.approx(-0.2) and not worse_on_select.overfit


def test_a_given_threshold_replaces_twice_the_standard_error() -> None:
    sel = np.r_[np.ones(90), np.zeros(10)]
    aud = np.r_[np.ones(70), np.zeros(30)]
    assert not _gap_check(sel, aud, "accuracy", 0.25, 1000, 0.95, 0).overfit
    assert _gap_check(sel, aud, "accuracy", 0.15, 1000, 0.95, 0).threshold == 0.15
    assert _gap_check(sel, aud, "accuracy", 0.15, 1000, 0.95, 0).overfit
    same = np.r_[np.ones(80), np.zeros(20)]
    assert not _gap_check(same, same.copy(), "accuracy", 0.0, 1000, 0.95, 0).overfit  # no gap is no alarm
    assert not _gap_check(same, same.copy(), "accuracy", -0.1, 1000, 0.95, 0).overfit  # even below a threshold
    gap = _gap_check(sel, aud, "accuracy", None, 1000, 0.95, 0).gap
    assert not _gap_check(sel, aud, "accuracy", gap, 1000, 0.95, 0).overfit  # the alarm is for a gap above it


def test_the_report_raises_the_alarm_for_the_incumbent_or_the_ensemble() -> None:
    ok = GapCheck(select=0.9, audit=0.89, gap=0.01, gap_se=0.02, threshold=0.04, overfit=False)
    bad = GapCheck(select=0.9, audit=0.7, gap=0.2, gap_se=0.02, threshold=0.04, overfit=True)
    base = dict(metric="accuracy", direction="maximize", incumbent=3, per_example_score="accuracy",
                correlation=0.5, overtuning=None, incumbents=[0, 3], tied=[1, 2])
    assert not GuardReport(incumbent_check=ok, **base).overfit
    assert GuardReport(incumbent_check=bad, **base).overfit
    assert GuardReport(incumbent_check=ok, ensemble_check=bad, **base).overfit
    assert not GuardReport(incumbent_check=None, **base).overfit
    d = GuardReport(incumbent_check=bad, **base).to_dict()
    assert d["overfit"] is True and d["incumbent_check"]["gap"] == 0.2 and d["tied"] == [1, 2]
    line = GuardReport(incumbent_check=ok, **base).verdict()
    assert line == ("guards ok: select−audit gap +0.0100 (threshold 0.0400, 2×SE=0.0400); "
                    "select/audit correlation across trials 0.50; tied with the incumbent: 2 trial(s)")
    assert GuardReport(incumbent_check=bad, **{**base, "correlation": None}).verdict().startswith(
        "guards OVERFIT ALARM: select−audit gap +0.2000")
    assert "correlation across trials n/a;" in GuardReport(incumbent_check=bad, **{**base, "correlation": None}).verdict()
    assert GuardReport(incumbent_check=None, **base).verdict() == \
        "guards: no per-example scores for this metric; gap not tested"


# -- a whole study's report --------------------------------------------------------------------------------------
def _study(tmp: Path, accs: list[float], audit_accs: list[float], *, n: int = 200, seed: int = 0,
           states: list[str] | None = None, direction: str = "maximize") -> list[dict[str, Any]]:
    """A run directory whose trial t predicts a fraction accs[t] of select (audit_accs[t] of audit) right, laid out
    as a study writes it (data.json, study.json, labels.npz, trials/NNNNN/result.json and predictions.npz)."""
    rng = np.random.default_rng(seed)
    (tmp / "data.json").write_text(json.dumps({"heads": [MULTI]}))
    (tmp / "study.json").write_text(json.dumps({"direction": direction, "objective": "accuracy"}))
    y = {s: rng.integers(10, size=n) for s in ("select", "audit", "test")}
    np.savez(tmp / "labels.npz", **{f"{s}/digit": v for s, v in y.items()})
    results = []
    for t, (a_sel, a_aud) in enumerate(zip(accs, audit_accs)):
        preds = {}
        for s, acc in (("select", a_sel), ("audit", a_aud), ("test", 0.5)):
            right = np.zeros(n, bool)
            right[rng.permutation(n)[:round(acc * n)]] = True
            guess = np.where(right, y[s], (y[s] + 1 + rng.integers(9, size=n)) % 10)
            preds[f"{s}/digit"] = 3.0 * np.eye(10)[guess] + rng.normal(size=(n, 10)) * 0.5
        trial = tmp / "trials" / f"{t:05d}"
        trial.mkdir(parents=True, exist_ok=True)
        np.savez(trial / "predictions.npz", **preds)
        r = {"number": t, "state": (states or ["COMPLETE"] * len(accs))[t], "value": a_sel, "params": {"t": t},
             "metrics": {"audit_accuracy": a_aud}, "predictions_path": str(trial / "predictions.npz")}
        (trial / "result.json").write_text(json.dumps(r))
        results.append(r)
    return results


def test_check_study_reports_the_gap_ties_and_trajectory(tmp_path: Path) -> None:
    results = _study(tmp_path, [0.5, 0.7, 0.6, 0.9, 0.895, 0.3], [0.5, 0.72, 0.6, 0.7, 0.69, 0.3])
    results[3]["history"] = {"val_accuracy": [0.6, 0.95, 0.9], "audit_accuracy": [0.55, 0.8, 0.7]}
    rep = check_study(tmp_path, results, metric="accuracy", direction="maximize", incumbent=3, n_resamples=1000)
    assert (rep.metric, rep.direction, rep.incumbent) == ("accuracy", "maximize", 3)
    assert rep.incumbents == [0, 1, 3]
    assert rep.overtuning == pytest.approx(0.7 - 0.72)  # the final incumbent's audit minus the best earlier one
    assert rep.per_example_score == "accuracy"
    assert rep.incumbent_check is not None and rep.incumbent_check.gap == pytest.approx(0.2, abs=1e-9)
    assert rep.overfit
    assert rep.tied == [4]  # 0.895 vs 0.9 on 200 examples; nothing else is close
    sel = [r["value"] for r in results]
    aud = [r["metrics"]["audit_accuracy"] for r in results]
    assert rep.correlation == pytest.approx(float(np.corrcoef(sel, aud)[0, 1]))
    assert rep.restore_best_epoch == {"best_select_epoch": 2, "last_epoch": 3, "audit_at_best_select_epoch": 0.8,
                                      "audit_at_last_epoch": 0.7, "audit_change_if_restored": pytest.approx(0.1)}
    assert rep.test_uses == 0 and rep.notes == [] and rep.ensemble_check is None


def test_check_study_minimising_a_loss(tmp_path: Path) -> None:
    results = _study(tmp_path, [0.5, 0.7, 0.9], [0.5, 0.72, 0.7])
    for r in results:  # the objective is a loss: lower is better
        r["value"], r["metrics"] = 1 - r["value"], {"audit_loss": 1 - r["metrics"]["audit_accuracy"]}
    results[2]["history"] = {"val_loss": [0.3, 0.1, 0.2], "audit_loss": [0.4, 0.25, 0.3]}
    rep = check_study(tmp_path, results, metric="loss", direction="minimize", incumbent=2, n_resamples=500,
                      max_tie_candidates=1)
    assert rep.incumbents == [0, 1, 2]
    assert rep.overtuning == pytest.approx(-(0.3 - 0.28))  # larger is better after the sign: audit got worse
    assert rep.per_example_score == "nll" and rep.tied == []
    assert rep.incumbent_check is not None and rep.incumbent_check.gap > 0  # select NLL below audit NLL
    assert rep.restore_best_epoch["best_select_epoch"] == 2
    assert rep.restore_best_epoch["audit_change_if_restored"] == pytest.approx(0.05)


def test_check_study_without_per_example_scores_says_so(tmp_path: Path) -> None:
    results = _study(tmp_path, [0.5, 0.7], [0.5, 0.6], states=["COMPLETE", "COMPLETE"])
    for r in results:  # a metric the model reports that has no per-example form
        r["metrics"]["audit_auc"] = r["metrics"]["audit_accuracy"]
    rep = check_study(tmp_path, results, metric="auc", direction="maximize", incumbent=1)
    assert rep.notes == ["no per-example score for metric 'auc': gap and ties not tested"]
    assert rep.incumbent_check is None and rep.correlation is None  # fewer than 3 trials: no correlation
    rep = check_study(tmp_path, results, metric="accuracy", direction="maximize", incumbent=7)  # not a finished trial
    assert rep.incumbent_check is None and rep.overtuning is None and len(rep.notes) == 1


def test_check_study_counts_only_complete_trials(tmp_path: Path) -> None:
    results = _study(tmp_path, [0.5, 0.99, 0.7, 0.6], [0.5, 0.5, 0.6, 0.65], states=["COMPLETE", "FAIL", "COMPLETE",
                                                                                      "COMPLETE"])
    rep = check_study(tmp_path, results, metric="accuracy", direction="maximize", incumbent=2, n_resamples=500)
    assert rep.incumbents == [0, 2] and 1 not in rep.tied
    assert rep.restore_best_epoch is None
    (tmp_path / "test_uses.jsonl").write_text('{"a": 1}\n{"b": 2}\n')
    assert check_study(tmp_path, results, metric="accuracy", direction="maximize", incumbent=2,
                       n_resamples=200).test_uses == 2


def test_no_correlation_when_audit_is_constant_or_missing(tmp_path: Path) -> None:
    results = _study(tmp_path, [0.5, 0.7, 0.6], [0.6, 0.6, 0.6])
    assert check_study(tmp_path, results, metric="accuracy", direction="maximize", incumbent=1,
                       n_resamples=200).correlation is None
    results = _study(tmp_path, [0.5, 0.5, 0.5], [0.4, 0.6, 0.5])
    assert check_study(tmp_path, results, metric="accuracy", direction="maximize", incumbent=0,
                       n_resamples=200).correlation is None
    results = _study(tmp_path, [0.5, 0.7, 0.6], [0.4, 0.6, 0.5])
    del results[2]["metrics"]["audit_accuracy"]
    assert check_study(tmp_path, results, metric="accuracy", direction="maximize", incumbent=0,
                       n_resamples=200).correlation is None
    results = _study(tmp_path, [0.5, 0.7, 0.6], [0.4, 0.6, 0.55])
    assert check_study(tmp_path, results, metric="accuracy", direction="maximize", incumbent=1,
                       n_resamples=200).correlation == pytest.approx(float(np.corrcoef([0.5, 0.7, 0.6],
                                                                                       [0.4, 0.6, 0.55])[0, 1]))


def test_restore_effect_needs_both_histories_of_equal_length(tmp_path: Path) -> None:
    results = _study(tmp_path, [0.5, 0.7], [0.5, 0.6])
    for hist in ({"val_accuracy": [0.5, 0.6]}, {"audit_accuracy": [0.5, 0.6]},
                 {"val_accuracy": [0.5, 0.6], "audit_accuracy": [0.5]}):
        results[1]["history"] = hist
        assert check_study(tmp_path, results, metric="accuracy", direction="maximize", incumbent=1,
                           n_resamples=200).restore_best_epoch is None


def test_statistical_error_is_the_bootstrap_se_of_the_select_metric(tmp_path: Path) -> None:
    results = _study(tmp_path, [0.8], [0.8])
    se = statistical_error(tmp_path, results[0], "accuracy", seed=3)
    assert se == pytest.approx(math.sqrt(0.8 * 0.2 / 200), rel=0.15)
    assert se == statistical_error(tmp_path, results[0], "accuracy", seed=3)
    assert statistical_error(tmp_path, results[0], "auc") is None
    assert statistical_error(tmp_path, {**results[0], "predictions_path": None}, "accuracy") is None
    nll_se = statistical_error(tmp_path, results[0], "loss")
    assert nll_se is not None and nll_se > se  # per-example NLL spreads more than 0/1 hits here


# -- the stopping rule ---------------------------------------------------------------------------------------------
SPACE = SearchSpace([
    Param("units", "int", low=8, high=128, step=8, default=8),
    Param("lr", "float", low=1e-4, high=1e-1, log=True, default=1e-3),
    Param("act", "choice", values=("relu", "tanh"), default="relu"),
    Param("bn", "boolean", default=False),
    Param("fixed", "fixed", values=(7,), default=7),
    Param("drop", "float", low=0.0, high=0.5, default=0.0, conditions=()),
])


def test_encoding_puts_every_parameter_in_the_unit_cube() -> None:
    x = encode(SPACE, {"units": 68, "lr": 1e-2, "act": "tanh", "bn": True, "fixed": 7, "drop": 0.125})
    np.testing.assert_allclose(x, [0.5, 2 / 3, 0.0, 1.0, 0.0, 1.0, 0.25])
    missing = encode(SPACE, {"units": 8})  # inactive parameters: the middle of a range, no choice
    np.testing.assert_allclose(missing, [0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.5])


def test_random_samples_respect_ranges_grids_log_scale_and_conditions() -> None:
    space = discover(_conditional)
    rng = np.random.default_rng(0)
    samples = [sample_random(space, rng) for _ in range(400)]
    for s in samples:
        space.check(s)  # exactly the active parameters, each a value the parameter can take
    lrs = np.array([s["lr"] for s in samples])
    assert np.median(np.log10(lrs)) == pytest.approx(-2.5, abs=0.2)  # log-uniform over [1e-4, 1e-1]
    assert lrs.min() >= 1e-4 and lrs.max() <= 1e-1 and lrs.min() < 2e-4 and lrs.max() > 5e-2
    rates = np.array([s["rate"] for s in samples if "rate" in s])
    assert np.median(rates) == pytest.approx(0.25, abs=0.05) and rates.min() < 0.02 and rates.max() > 0.48
    assert {s["model"] for s in samples} == {"a", "b"}
    assert {s["depth"] for s in samples if "depth" in s} == {1, 2, 3, 4}
    assert {s["units"] for s in samples} == set(range(8, 129, 8))
    assert sample_random(space, np.random.default_rng(5)) == sample_random(space, np.random.default_rng(5))


def _conditional(hp: Any) -> None:
    hp.Float("lr", 1e-4, 1e-1, sampling="log")
    hp.Int("units", 8, 128, step=8)
    hp.Choice("model", ["a", "b"])
    with hp.conditional_scope("model", ["a"]):
        hp.Int("depth", 1, 4)
    with hp.conditional_scope("model", ["b"]):
        hp.Float("rate", 0.0, 0.5)


def _history(n: int, seed: int = 0) -> tuple[SearchSpace, list[dict[str, Any]], list[float]]:
    space = discover(lambda hp: (hp.Float("x", 0.0, 1.0), hp.Float("y", 0.0, 1.0)))
    rng = np.random.default_rng(seed)
    params = [{"x": float(a), "y": float(b)} for a, b in rng.uniform(0, 1, size=(n, 2))]
    return space, params, [1.0 - (p["x"] - 0.3) ** 2 - (p["y"] - 0.6) ** 2 for p in params]


def test_a_space_with_nothing_left_to_search_has_no_regret() -> None:
    space = discover(lambda hp: hp.Fixed("k", 3))
    assert regret_bound(space, [{"k": 3}] * 5, [0.1, 0.5, 0.2, 0.3, 0.4], "maximize") == 0.0


def test_regret_bound_is_in_the_objectives_units_and_direction() -> None:
    space, params, values = _history(12)
    b = regret_bound(space, params, values, "maximize", n_candidates=64)
    assert b > 0
    # a loss ten times the scale, shifted: the bound scales with it and does not shift
    scaled = regret_bound(space, params, [-(10 * v + 5) for v in values], "minimize", n_candidates=64)
    assert scaled == pytest.approx(10 * b, rel=1e-3)
    assert regret_bound(space, params, values, "maximize", n_candidates=64, delta=0.001) > b  # more confidence


def test_regret_bound_uses_the_top_trials_only() -> None:
    space, params, values = _history(40, seed=2)
    worst_changed = list(values)
    for i in np.argsort(values)[:15]:  # the 15 worst of 40 lie outside the top 20 (half, at least 20)
        worst_changed[i] = values[i] - 5.0
    a = regret_bound(space, params, values, "maximize", n_candidates=64)
    assert regret_bound(space, params, worst_changed, "maximize", n_candidates=64) == pytest.approx(a, rel=1e-6)


def test_regret_bound_shrinks_where_the_optimum_is_sampled_densely() -> None:
    space, params, values = _history(8)
    dense = params + [{"x": 0.3 + dx, "y": 0.6 + dy} for dx in (-0.02, 0.0, 0.02) for dy in (-0.02, 0.0, 0.02)]
    dense_values = values + [1.0 - (p["x"] - 0.3) ** 2 - (p["y"] - 0.6) ** 2 for p in dense[8:]]
    assert regret_bound(space, dense, dense_values, "maximize", n_candidates=64) < \
        regret_bound(space, params, values, "maximize", n_candidates=64)


def _pooled(tmp: Path, members: list[tuple[int, float]], split: str) -> np.ndarray:
    """Log-probabilities of the count-weighted mean of members' probabilities, by hand."""
    p = 0.0
    for t, c in members:
        with np.load(tmp / "trials" / f"{t:05d}" / "predictions.npz") as f:
            z = f[f"{split}/digit"].astype(np.float32).astype(np.float64)
        p = p + c * np.exp(z - z.max(1, keepdims=True)) / np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)
    return np.log(p / sum(c for _, c in members))


def test_the_ensembles_gap_is_measured_on_its_pooled_prediction(tmp_path: Path) -> None:
    results = _study(tmp_path, [0.6, 0.7, 0.8], [0.55, 0.65, 0.6])
    members = [{"trial": 1, "count": 1}, {"trial": 2, "count": 2}]
    with np.load(tmp_path / "labels.npz") as f:
        y = {s: f[f"{s}/digit"] for s in ("select", "audit")}
    for metric in ("accuracy", "loss"):
        for r in results:
            r["metrics"]["audit_loss"] = 1.0
        rep = check_study(tmp_path, results, metric=metric, direction="maximize" if metric == "accuracy" else "minimize",
                          incumbent=2, ensemble_counts=(members, "probs"), n_resamples=500)
        e = rep.ensemble_check
        assert e is not None
        lp = {s: _pooled(tmp_path, [(1, 1.0), (2, 2.0)], s) for s in ("select", "audit")}
        if metric == "accuracy":
            want = {s: float((lp[s].argmax(1) == y[s]).mean()) for s in lp}
            assert e.gap == pytest.approx(want["select"] - want["audit"], abs=1e-9)
        else:
            want = {s: float(-lp[s][np.arange(len(y[s])), y[s]].mean()) for s in lp}
            assert e.gap == pytest.approx(want["audit"] - want["select"], rel=1e-4)
        assert e.select == pytest.approx(want["select"], rel=1e-4) and e.audit == pytest.approx(want["audit"], rel=1e-4)
        assert e.threshold == pytest.approx(2 * e.gap_se) and e.select_ci is not None
        assert rep.overfit == (rep.incumbent_check.overfit or e.overfit)


def test_a_one_member_ensemble_is_checked_like_that_member(tmp_path: Path) -> None:
    results = _study(tmp_path, [0.6, 0.9], [0.55, 0.6])
    rep = check_study(tmp_path, results, metric="accuracy", direction="maximize", incumbent=1, threshold=0.1,
                      ensemble_counts=([{"trial": 1, "count": 1}], "logits"))
    assert rep.ensemble_check is not None and rep.incumbent_check is not None
    assert rep.ensemble_check.select == pytest.approx(rep.incumbent_check.select)
    assert rep.ensemble_check.audit == pytest.approx(rep.incumbent_check.audit)
    assert rep.ensemble_check.threshold == 0.1 and rep.ensemble_check.overfit


def test_a_regression_ensemble_is_checked_on_its_averaged_prediction(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    n = 100
    (tmp_path / "data.json").write_text(json.dumps({"heads": [REG]}))
    (tmp_path / "study.json").write_text(json.dumps({"direction": "minimize", "objective": "mse"}))
    y = {s: rng.normal(size=(n, 1)) for s in ("select", "audit", "test")}
    np.savez(tmp_path / "labels.npz", **{f"{s}/price": v for s, v in y.items()})
    results, outs = [], {}
    for t, noise in enumerate((0.3, 0.6)):
        outs[t] = {f"{s}/price": y[s] + rng.normal(size=(n, 1)) * noise * (1.0 if s == "select" else 2.0)
                   for s in y}
        trial = tmp_path / "trials" / f"{t:05d}"
        trial.mkdir(parents=True, exist_ok=True)
        np.savez(trial / "predictions.npz", **outs[t])
        r = {"number": t, "state": "COMPLETE", "params": {"t": t}, "predictions_path": str(trial / "predictions.npz"),
             "value": float(((outs[t]["select/price"] - y["select"]) ** 2).mean()),
             "metrics": {"audit_mse": float(((outs[t]["audit/price"] - y["audit"]) ** 2).mean())}}
        (trial / "result.json").write_text(json.dumps(r))
        results.append(r)
    rep = check_study(tmp_path, results, metric="mse", direction="minimize", incumbent=0, n_resamples=500,
                      ensemble_counts=([{"trial": 0, "count": 3}, {"trial": 1, "count": 1}], "probs"))
    assert rep.per_example_score == "sq_err"
    pooled = {s: (3 * outs[0][f"{s}/price"].astype(np.float32) + outs[1][f"{s}/price"].astype(np.float32)) / 4
              for s in ("select", "audit")}
    mse = {s: float(((pooled[s] - y[s]) ** 2).mean()) for s in pooled}
    e = rep.ensemble_check
    assert e is not None and e.select == pytest.approx(mse["select"], rel=1e-5)
    assert e.audit == pytest.approx(mse["audit"], rel=1e-5) and e.gap == pytest.approx(mse["audit"] - mse["select"],
                                                                                       rel=1e-4)
    assert e.overfit  # audit noise is twice select's
    for r in results:
        r["metrics"]["audit_mae"] = 1.0
    mae = check_study(tmp_path, results, metric="mae", direction="minimize", incumbent=0, n_resamples=200,
                      ensemble_counts=([{"trial": 0, "count": 3}, {"trial": 1, "count": 1}], "probs")).ensemble_check
    assert mae is not None and mae.select == pytest.approx(float(np.abs(pooled["select"] - y["select"]).mean()), rel=1e-5)


def test_ties_are_looked_for_among_the_best_trials_and_equal_values_keep_the_first_incumbent(tmp_path: Path) -> None:
    results = _study(tmp_path, [0.3, 0.9, 0.3, 0.895, 0.9, 0.2], [0.3, 0.7, 0.3, 0.69, 0.7, 0.2])
    rep = check_study(tmp_path, results, metric="accuracy", direction="maximize", incumbent=1, n_resamples=501,
                      max_tie_candidates=3, threshold=0.5)
    assert rep.incumbents == [0, 1]  # trial 4 equals trial 1: not a new incumbent
    assert rep.overtuning == pytest.approx(0.7 - 0.3)  # two incumbents are enough for overtuning
    assert rep.tied == [4, 3]  # the best three by select (incumbent included), best first
    assert rep.incumbent_check is not None and rep.incumbent_check.threshold == 0.5 and not rep.incumbent_check.overfit


def test_parameters_that_never_vary_do_not_change_the_bound() -> None:
    space, params, values = _history(12)
    fixed_mode = SearchSpace([*space.params, Param("mode", "fixed", values=("a",), default="a"),
                              Param("k", "float", low=0.0, high=1.0, default=0.5,
                                    conditions=(Condition("mode", ("b",)),))])
    b = regret_bound(space, params, values, "maximize", n_candidates=64)
    assert regret_bound(fixed_mode, [{**p, "mode": "a"} for p in params], values, "maximize",
                        n_candidates=64) == pytest.approx(b, rel=1e-9)  # k is never active: a constant column


def test_the_default_bound_of_a_recorded_history() -> None:
    """The stopping rule's bound with the study's settings (top half, at least 20 trials, delta 0.1, 2048 random
    candidates), pinned: a change to the GP, its kernel or GP-UCB's beta moves it and must be deliberate.
    Re-record only for such a change (or a scikit-learn release that changes the GP fit)."""
    space, params, values = _history(12)
    assert regret_bound(space, params, values, "maximize") == pytest.approx(PINNED_BOUND, rel=1e-4)


def test_a_snapshot_member_is_checked_on_its_own_predictions(tmp_path: Path) -> None:
    results = _study(tmp_path, [0.6, 0.7], [0.55, 0.65])
    snap = tmp_path / "trials" / "00001" / "snapshots" / "epoch_001"
    snap.mkdir(parents=True)
    rng = np.random.default_rng(9)
    with np.load(tmp_path / "labels.npz") as f:
        y = {s: f[f"{s}/digit"] for s in ("select", "audit", "test")}
    preds = {f"{s}/digit": 3.0 * np.eye(10)[np.where(rng.random(200) < 0.9, y[s], (y[s] + 1) % 10)] for s in y}
    np.savez(snap / "predictions.npz", **preds)
    results[1]["history"] = {"val_accuracy": [0.9, 0.7]}
    (tmp_path / "trials" / "00001" / "result.json").write_text(json.dumps(results[1]))
    rep = check_study(tmp_path, results, metric="accuracy", direction="maximize", incumbent=1, n_resamples=200,
                      ensemble_counts=([{"trial": 1, "epoch": 1, "count": 1}], "probs"))
    want = {s: float((preds[f"{s}/digit"].argmax(1) == y[s]).mean()) for s in ("select", "audit")}
    assert rep.ensemble_check is not None
    assert (rep.ensemble_check.select, rep.ensemble_check.audit) == (pytest.approx(want["select"]),
                                                                     pytest.approx(want["audit"]))


def test_an_ensemble_certain_of_a_wrong_class_has_a_finite_loss(tmp_path: Path) -> None:
    results = _study(tmp_path, [0.6, 0.7], [0.55, 0.65])
    path = Path(results[1]["predictions_path"])
    with np.load(path) as f:
        preds = {k: f[k] * 1e4 for k in f.files}  # probability exactly 0 for every other class
    np.savez(path, **preds)
    for r in results:
        r["metrics"]["audit_loss"] = 1.0
    rep = check_study(tmp_path, results, metric="loss", direction="minimize", incumbent=1, n_resamples=200,
                      ensemble_counts=([{"trial": 1, "count": 1}], "probs"))
    assert rep.ensemble_check is not None and np.isfinite(rep.ensemble_check.select)
    assert rep.ensemble_check.audit == pytest.approx(0.35 * -np.log(1e-12), rel=0.05)  # the wrong 35%, clipped


def test_binary_and_mae_ensembles_are_checked(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    n = 120
    (tmp_path / "data.json").write_text(json.dumps({"heads": [BINARY]}))
    (tmp_path / "study.json").write_text(json.dumps({"direction": "maximize", "objective": "accuracy"}))
    y = {s: rng.integers(2, size=(n, 1)).astype(float) for s in ("select", "audit", "test")}
    np.savez(tmp_path / "labels.npz", **{f"{s}/flag": v for s, v in y.items()})
    z = {s: np.where(rng.random((n, 1)) < 0.8, 2 * y[s] - 1, 1 - 2 * y[s]) * 2.0 for s in y}
    trial = tmp_path / "trials" / "00000"
    trial.mkdir(parents=True)
    np.savez(trial / "predictions.npz", **{f"{s}/flag": v for s, v in z.items()})
    r = {"number": 0, "state": "COMPLETE", "params": {}, "predictions_path": str(trial / "predictions.npz"),
         "value": 0.8, "metrics": {"audit_accuracy": 0.8}}
    (trial / "result.json").write_text(json.dumps(r))
    rep = check_study(tmp_path, [r], metric="accuracy", direction="maximize", incumbent=0, n_resamples=200,
                      ensemble_counts=([{"trial": 0, "count": 1}], "probs"))
    assert rep.ensemble_check is not None and rep.incumbent_check is not None
    assert rep.ensemble_check.select == pytest.approx(rep.incumbent_check.select)
    assert rep.ensemble_check.audit == pytest.approx(rep.incumbent_check.audit)


def test_one_hot_labels_are_checked_like_integer_labels(tmp_path: Path) -> None:
    results = _study(tmp_path, [0.6, 0.7], [0.55, 0.65])
    members = ([{"trial": 1, "count": 1}], "probs")
    plain = check_study(tmp_path, results, metric="accuracy", direction="maximize", incumbent=1, n_resamples=200,
                        ensemble_counts=members)
    with np.load(tmp_path / "labels.npz") as f:
        y = {k: f[k] for k in f.files}
    np.savez(tmp_path / "labels.npz", **{k: np.eye(10)[v] for k, v in y.items()})
    (tmp_path / "data.json").write_text(json.dumps({"heads": [{**MULTI, "one_hot": True}]}))
    hot = check_study(tmp_path, results, metric="accuracy", direction="maximize", incumbent=1, n_resamples=200,
                      ensemble_counts=members)
    assert hot.ensemble_check is not None and plain.ensemble_check is not None
    assert (hot.ensemble_check.select, hot.ensemble_check.audit) == (plain.ensemble_check.select,
                                                                     plain.ensemble_check.audit)
    assert hot.incumbent_check is not None and hot.incumbent_check.gap == plain.incumbent_check.gap
