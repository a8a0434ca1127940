"""Pooling and member selection on synthetic pools: each combination is its textbook definition, greedy selection
is Caruana's rule (checked against a brute-force re-implementation), and its fast scoring equals scoring the
pooled prediction the artifact computes. No training: these run in milliseconds (and under mutation testing)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ensembles.combine import (
    COMBINES, VOTE_EPS, apply_temperature, as_class_logits, combine, combine_regression, fit_temperature,
    pooled_log_probs,
)
from ensembles.embedding import triplet_hits, triplet_losses
from ensembles.pool import HeadInfo, Pool
from ensembles.select import (CHUNK, _basis, _earns_place, _finish, _loss, _row_loss, _Scorer, greedy,
                              likely_better, one_per_config, top_k)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _pool(m: int = 6, n: int = 40, c: int = 4, *, seed: int = 0, heads: tuple[str, ...] = ("multiclass",),
          values: np.ndarray | None = None, direction: str = "maximize", params: list[dict[str, Any]] | None = None,
          sharp: float = 1.0) -> Pool:
    """Members that are noisy copies of a true signal, so pooling helps and members differ in quality."""
    rng = np.random.default_rng(seed)
    infos, outputs, labels = [], {s: {} for s in ("select", "audit", "test")}, {s: {} for s in ("select", "audit", "test")}
    for k, kind in enumerate(heads):
        name = f"h{k}"
        for s in outputs:
            if kind == "multiclass":
                y = rng.integers(c, size=n)
                noise = rng.normal(size=(m, n, c)) * np.linspace(2.0, 3.0, m)[:, None, None]
                outputs[s][name] = sharp * (2.0 * np.eye(c)[y][None] + noise)
            elif kind == "regression":
                y = rng.normal(size=(n, 2))
                outputs[s][name] = y[None] + rng.normal(size=(m, n, 2)) * np.linspace(0.2, 1.5, m)[:, None, None]
            else:  # embedding: triplets of 3 points in 2-d, votes for the odd one out
                y = rng.dirichlet(np.ones(3), size=n)
                outputs[s][name] = rng.normal(size=(m, n, 3, 2))
            labels[s][name] = y
        infos.append(HeadInfo(name, kind, n_classes=c if kind == "multiclass" else 1))
    if values is None:
        values = rng.permutation(m).astype(float)
    return Pool(numbers=list(range(m)), params=params or [{"i": i} for i in range(m)], values=np.asarray(values, float),
                direction=direction, heads=infos, outputs=outputs, labels=labels, model_paths=[None] * m)


def _pooled_nll(pool: Pool, counts: np.ndarray, method: str, split: str = "select") -> float:
    """Select NLL of the pooled prediction as the artifact computes it (``pooled_log_probs``)."""
    z, y = pool.outputs[split]["h0"], pool.labels[split]["h0"]
    lp = pooled_log_probs(z, counts / counts.sum(), method)
    return float(-lp[np.arange(len(y)), y].mean())


def _pooled_error(pool: Pool, counts: np.ndarray, method: str) -> float:
    z, y = pool.outputs["select"]["h0"], pool.labels["select"]["h0"]
    return float(1.0 - (pooled_log_probs(z, counts / counts.sum(), method).argmax(-1) == y).mean())


# -- combine.py ------------------------------------------------------------------------------------------------
def test_a_binary_logit_is_the_two_class_logits_zero_and_z() -> None:
    z = np.array([[-1.5], [0.0], [2.0]])
    out = as_class_logits(z, "binary")
    assert out.shape == (3, 2)
    np.testing.assert_array_equal(out, [[0.0, -1.5], [0.0, 0.0], [0.0, 2.0]])
    np.testing.assert_array_equal(as_class_logits(np.array([-1.5, 0.0, 2.0]), "binary"), out)  # (n,) too
    multi = np.arange(6.0).reshape(2, 3)
    assert as_class_logits(multi, "multiclass") is multi


def test_each_combination_is_its_definition() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(size=(3, 5, 4)) * 2
    w = np.array([0.5, 0.3, 0.2])
    p = _softmax(z)
    expect = {
        "probs": (w[:, None, None] * p).sum(0),
        "logits": _softmax((w[:, None, None] * z).sum(0)),
        "geometric": _softmax((w[:, None, None] * np.log(p)).sum(0)),
    }
    votes = np.eye(4)[z.argmax(-1)]
    share = (w[:, None, None] * votes).sum(0)
    expect["vote"] = (share + VOTE_EPS) / (1 + 4 * VOTE_EPS)
    for method, probs in expect.items():
        got = np.exp(pooled_log_probs(z, w, method))
        np.testing.assert_allclose(got, probs, rtol=1e-10, atol=1e-14, err_msg=method)
        np.testing.assert_allclose(got.sum(-1), 1.0, rtol=1e-12)
        np.testing.assert_allclose(combine(z, w, method), probs, rtol=1e-10, err_msg=method)
        np.testing.assert_allclose(combine(list(z), list(10 * w), method), probs, rtol=1e-10, err_msg=method)


def test_probs_pooling_clips_a_zero_probability_instead_of_minus_infinity() -> None:
    z = np.array([[[0.0, -1e4]], [[0.0, -1e4]]])
    lp = pooled_log_probs(z, np.array([0.5, 0.5]), "probs")
    assert lp[0, 1] == pytest.approx(np.log(1e-12))
    assert lp[0, 0] == pytest.approx(0.0, abs=1e-12)


def test_an_unknown_combination_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match=r"combine must be one of \('probs', 'logits', 'geometric', 'vote'\), got 'max'"):
        pooled_log_probs(np.zeros((1, 2, 3)), np.ones(1), "max")
    assert COMBINES == ("probs", "logits", "geometric", "vote")


def test_temperature_divides_the_log_probabilities() -> None:
    lp = np.log(np.array([[0.7, 0.2, 0.1]]))
    np.testing.assert_allclose(np.exp(apply_temperature(lp, 2.0)), _softmax(lp / 2.0))
    np.testing.assert_allclose(np.exp(apply_temperature(lp, 1.0)), [[0.7, 0.2, 0.1]])
    z = np.log(np.array([[[0.6, 0.3, 0.1]]]))
    np.testing.assert_allclose(combine(z, [1.0], "probs", temperature=0.5), _softmax(np.log([[0.6, 0.3, 0.1]]) / 0.5))


def test_regression_pooling_is_the_normalised_weighted_mean() -> None:
    preds = np.array([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]])
    np.testing.assert_allclose(combine_regression(preds, [3.0, 1.0]), 0.75 * preds[0] + 0.25 * preds[1])
    np.testing.assert_allclose(combine_regression([np.array([1.0, 2.0]), np.array([3.0, 6.0])], [1, 1]), [2.0, 4.0])


def test_fitted_temperature_recovers_the_one_that_generated_the_labels() -> None:
    rng = np.random.default_rng(0)
    n, c, t_true = 4000, 5, 0.5
    lp = np.log(_softmax(rng.normal(size=(n, c))))
    p = _softmax(lp / t_true)
    y = np.array([rng.choice(c, p=row) for row in p])
    assert fit_temperature(lp, y) == pytest.approx(t_true, rel=0.1)


def test_fitted_temperature_stays_inside_its_bounds() -> None:
    rng = np.random.default_rng(0)
    lp = np.log(_softmax(rng.normal(size=(500, 3)) * 5))
    y_random = rng.integers(3, size=500)  # predictions carry nothing: the flattest allowed temperature
    assert fit_temperature(lp, y_random) == pytest.approx(20.0, rel=1e-3)
    y_argmax = lp.argmax(-1)  # always right: the sharpest allowed temperature
    assert fit_temperature(lp, y_argmax) == pytest.approx(0.05, rel=1e-3)


# -- select.py: the arithmetic greedy selection compares ---------------------------------------------------------
def test_bases_are_what_each_combination_averages() -> None:
    z = np.random.default_rng(2).normal(size=(2, 3, 4))
    np.testing.assert_allclose(_basis(z, "probs"), _softmax(z))
    assert _basis(z, "logits") is z
    np.testing.assert_allclose(_basis(z, "geometric"), np.log(_softmax(z)))
    np.testing.assert_array_equal(_basis(z, "vote"), np.eye(4)[z.argmax(-1)])
    with pytest.raises(ValueError, match="unknown combine 'max'"):
        _basis(z, "max")


def test_finishing_an_average_gives_the_artifacts_log_probabilities() -> None:
    rng = np.random.default_rng(3)
    z = rng.normal(size=(3, 6, 4))
    w = np.array([0.2, 0.3, 0.5])
    for method in COMBINES:
        avg = np.tensordot(w, _basis(z, method), axes=1)
        np.testing.assert_allclose(_finish(avg, method), pooled_log_probs(z, w, method), rtol=1e-10, atol=1e-12,
                                   err_msg=method)
    assert _finish(np.array([[0.0, 1.0]]), "probs")[0, 0] == pytest.approx(np.log(1e-12))


def test_losses_are_nll_and_error_rate() -> None:
    lp = np.log(np.array([[[0.7, 0.3], [0.4, 0.6], [0.9, 0.1]]]))
    y = np.array([0, 0, 1])
    assert _loss(lp, y, "nll")[0] == pytest.approx(-(np.log(0.7) + np.log(0.4) + np.log(0.1)) / 3)
    assert _loss(lp, y, "accuracy")[0] == pytest.approx(2 / 3)


@pytest.mark.parametrize("method", COMBINES)
@pytest.mark.parametrize("metric", ["nll", "accuracy"])
def test_scored_loss_is_the_pooled_predictions_loss(method: str, metric: str) -> None:
    pool = _pool(m=5)
    scorer = _Scorer(pool, "select", method, metric)
    ref = _pooled_nll if metric == "nll" else _pooled_error
    for counts in (np.array([1.0, 0, 0, 0, 0]), np.array([2.0, 0, 1, 0, 3]), np.ones(5)):
        assert scorer.loss(counts) == pytest.approx(ref(pool, counts, method), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("method", COMBINES)
@pytest.mark.parametrize("metric", ["nll", "accuracy"])
def test_adding_each_candidate_scores_like_the_pooled_prediction(method: str, metric: str) -> None:
    """Scoring every one-member addition at once (in chunks, with the true-class shortcut) is the loss of each."""
    pool = _pool(m=CHUNK + 6, n=12, c=3, seed=4)
    scorer = _Scorer(pool, "select", method, metric)
    ref = _pooled_nll if metric == "nll" else _pooled_error
    allowed = np.ones(len(pool), bool)
    allowed[[3, CHUNK + 2]] = False
    for counts in (np.zeros(len(pool)), np.eye(len(pool))[7] * 2 + np.eye(len(pool))[CHUNK + 1]):
        got = scorer.loss_adding_each(counts, allowed)
        assert np.isinf(got[[3, CHUNK + 2]]).all()
        for i in np.flatnonzero(allowed):
            assert got[i] == pytest.approx(ref(pool, counts + np.eye(len(pool))[i], method), rel=1e-9, abs=1e-12)


def test_heads_losses_add_up_for_regression_and_embedding_heads() -> None:
    pool = _pool(m=4, n=10, heads=("multiclass", "regression", "embedding"), seed=5)
    for metric in ("nll", "accuracy"):
        scorer = _Scorer(pool, "select", "probs", metric)
        counts = np.array([1.0, 2.0, 0.0, 1.0])
        w = counts / counts.sum()
        cls = (_pooled_nll if metric == "nll" else _pooled_error)(pool, counts, "probs")
        reg_pred = np.tensordot(w, pool.outputs["select"]["h1"], axes=1)
        reg = float(((reg_pred - pool.labels["select"]["h1"]) ** 2).mean())
        emb_pred = np.tensordot(w, pool.outputs["select"]["h2"], axes=1)
        votes = pool.labels["select"]["h2"]
        if metric == "nll":
            emb = float(triplet_losses(emb_pred, votes).mean())
        else:
            hit, valid = triplet_hits(emb_pred, votes)
            emb = 1.0 - float((hit * valid).sum() / max(valid.sum(), 1))
        assert scorer.loss(counts) == pytest.approx(cls + reg + emb, rel=1e-9)
        each = scorer.loss_adding_each(np.zeros(4), np.ones(4, bool))
        for i in range(4):
            assert each[i] == pytest.approx(scorer.loss(np.eye(4)[i]), rel=1e-9)


def test_an_embedding_head_with_no_valid_triplet_scores_every_member_worst() -> None:
    pool = _pool(m=3, n=6, heads=("embedding",), seed=6)
    pool.labels["select"]["h0"] = np.full((6, 3), 1 / 3)  # no triplet has a majority: nothing to count
    scorer = _Scorer(pool, "select", "probs", "accuracy")
    assert scorer.loss(np.array([1.0, 0, 0])) == 1.0


# -- select.py: which members are chosen --------------------------------------------------------------------------
def _caruana(pool: Pool, method: str, metric: str, max_size: int, allowed: np.ndarray | None = None,
             guard: str | None = None) -> list[np.ndarray]:
    """Forward selection with replacement, by brute force on the artifact's pooled prediction."""
    m = len(pool)
    allowed = np.ones(m, bool) if allowed is None else allowed
    loss = {"nll": _pooled_nll, "accuracy": _pooled_error}
    if guard:
        first = next(i for i in pool.ranked() if allowed[i])
        floor = loss[guard](pool, np.eye(m)[first], method)
    else:
        first = min(np.flatnonzero(allowed), key=lambda i: loss[metric](pool, np.eye(m)[i], method))
        floor = np.inf
    counts = np.eye(m)[first]
    current, steps = loss[metric](pool, counts, method), [counts.copy()]
    while counts.sum() < max_size:
        best, best_loss = None, current - 1e-12
        for i in np.flatnonzero(allowed):
            c = counts + np.eye(m)[i]
            if guard and loss[guard](pool, c, method) > floor + 1e-12:
                continue
            if loss[metric](pool, c, method) < best_loss:
                best, best_loss = i, loss[metric](pool, c, method)
        if best is None:
            break
        counts = counts + np.eye(m)[best]
        current = best_loss
        steps.append(counts.copy())
    return steps


@pytest.mark.parametrize("method", COMBINES)
@pytest.mark.parametrize("guard", [None, "accuracy", "nll"])
def test_greedy_selection_is_caruanas_forward_selection(method: str, guard: str | None) -> None:
    pool = _pool(m=7, n=60, seed=7)
    counts, steps = greedy(pool, method=method, metric="nll", max_size=6, guard=guard)
    expect = _caruana(pool, method, "nll", 6, guard=guard)
    assert [s.tolist() for s in steps] == [s.tolist() for s in expect]
    np.testing.assert_array_equal(counts, expect[-1])
    assert len(steps) >= 2, "the synthetic members are noisy copies: pooling must help"


def test_greedy_with_the_accuracy_metric_and_allowed_members() -> None:
    pool = _pool(m=7, n=60, seed=8)
    allowed = np.array([True, False, True, True, False, True, True])
    for guard in (None, "nll"):
        counts, steps = greedy(pool, method="probs", metric="accuracy", max_size=5, allowed=allowed, guard=guard)
        expect = _caruana(pool, "probs", "accuracy", 5, allowed=allowed, guard=guard)
        assert [s.tolist() for s in steps] == [s.tolist() for s in expect]
        assert counts[~allowed].sum() == 0


def test_guarded_greedy_starts_from_the_best_member_by_the_objective() -> None:
    values = np.array([0.1, 0.9, 0.5, 0.3, 0.2, 0.4])
    pool = _pool(m=6, values=values, seed=9)
    _, steps = greedy(pool, guard="accuracy", max_size=1)
    assert np.flatnonzero(steps[0]).tolist() == [1]
    allowed = np.array([True, False, True, True, True, True])
    _, steps = greedy(pool, guard="accuracy", max_size=1, allowed=allowed)
    assert np.flatnonzero(steps[0]).tolist() == [2]  # the best allowed one
    minimizing = _pool(m=6, values=values, direction="minimize", seed=9)
    _, steps = greedy(minimizing, guard="nll", max_size=1)
    assert np.flatnonzero(steps[0]).tolist() == [0]


def test_greedy_stops_at_the_size_cap_and_when_nothing_improves() -> None:
    pool = _pool(m=6, n=60, seed=10)
    counts, steps = greedy(pool, max_size=3)
    assert counts.sum() == 3 and len(steps) == 3
    assert [s.sum() for s in steps] == [1, 2, 3]
    one = _pool(m=1, n=30, seed=10)
    counts, steps = greedy(one, max_size=5)  # a second copy of the only member changes nothing
    assert counts.tolist() == [1.0] and len(steps) == 1
    same = _pool(m=3, n=30, seed=11)
    same.outputs["select"]["h0"][:] = same.outputs["select"]["h0"][0]  # identical members: no addition helps
    counts, steps = greedy(same, max_size=5)
    assert counts.sum() == 1 and len(steps) == 1


def test_one_per_config_keeps_the_best_ranked_member_of_each_configuration() -> None:
    params = [{"a": 1, "b": 2}, {"a": 1}, {"b": 2, "a": 1}, {"a": 2}, {"a": 1}]
    pool = _pool(m=5, values=np.array([0.5, 0.9, 0.8, 0.1, 0.95]), params=params)
    assert one_per_config(pool).tolist() == [2, 3, 4]
    minimizing = _pool(m=5, values=np.array([0.5, 0.9, 0.8, 0.1, 0.95]), params=params, direction="minimize")
    assert one_per_config(minimizing).tolist() == [0, 1, 3]


def test_top_k_weights_the_k_best_equally_and_records_each_addition() -> None:
    pool = _pool(m=5, values=np.array([0.3, 0.9, 0.1, 0.7, 0.5]))
    counts, steps = top_k(pool, 3)
    assert counts.tolist() == [0, 1, 0, 1, 1]
    assert [s.tolist() for s in steps] == [[0, 1, 0, 0, 0], [0, 1, 0, 1, 0], [0, 1, 0, 1, 1]]
    counts, steps = top_k(pool, 10)
    assert counts.tolist() == [1] * 5 and len(steps) == 5


@pytest.mark.parametrize("seed, guard", [(3, "accuracy"), (28, "accuracy"), (28, "nll")])
def test_the_guard_refuses_additions_that_lose_on_the_objective(seed: int, guard: str) -> None:
    """Pools (found by search) where the guard binds: it refuses additions that would tie or lose on the study's
    objective, and the with-replacement path adds one member twice."""
    pool = _pool(m=6, n=40, seed=seed)
    counts, steps = greedy(pool, method="probs", metric="nll", max_size=6, guard=guard)
    expect = _caruana(pool, "probs", "nll", 6, guard=guard)
    assert [s.tolist() for s in steps] == [s.tolist() for s in expect]
    assert counts.max() >= 2
    other = "nll" if guard == "accuracy" else "accuracy"
    if seed == 28:  # here the two guards choose differently: the guard's metric is the one asked for
        assert [s.tolist() for s in _caruana(pool, "probs", "nll", 6, guard=other)] != [s.tolist() for s in expect]


def test_greedy_takes_at_most_ten_members_by_default() -> None:
    pool = _pool(m=30, n=300, seed=12)
    pool.outputs["select"]["h0"] *= 0.5  # many noisy, under-confident members: additions keep helping
    assert greedy(pool, max_size=20)[0].sum() > 10
    assert greedy(pool)[0].sum() == 10


def test_selection_keeps_the_members_precision() -> None:
    """Bases are computed in the members' dtype (float32 logits stay float32: half the memory per candidate chunk)."""
    z = np.random.default_rng(13).normal(size=(3, 5, 4)).astype(np.float32)
    for method in COMBINES:
        assert _basis(z, method).dtype == np.float32, method
        assert pooled_log_probs(z, np.array([0.2, 0.3, 0.5]), method).dtype == np.float32, method


def test_combine_returns_float64_probabilities_from_any_input() -> None:
    """float32 logits and weights are pooled in float64: weights 1 and 2 are exactly 1/3 and 2/3 of float64."""
    z32 = np.random.default_rng(14).normal(size=(2, 5, 3)).astype(np.float32)
    w32 = np.array([1.0, 2.0], dtype=np.float32)
    got = combine(z32, np.array([3.0, 7.0], dtype=np.float32))  # the default combination: mean of probabilities
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, combine(z32.astype(np.float64), [0.3, 0.7], "probs"), rtol=1e-13)
    p32 = z32[:, :, 0]
    reg = combine_regression(p32, w32)
    assert reg.dtype == np.float64
    np.testing.assert_allclose(reg, (p32[0].astype(np.float64) + 2 * p32[1].astype(np.float64)) / 3, rtol=1e-13)


def test_a_member_certain_of_a_wrong_class_scores_a_finite_loss() -> None:
    pool = _pool(m=3, n=10, c=3, seed=15)
    z = pool.outputs["select"]["h0"]
    y = pool.labels["select"]["h0"]
    z[1] = 0.0
    z[1, np.arange(10), (y + 1) % 3] = 1e4  # probability exactly 0 for every true class
    scorer = _Scorer(pool, "select", "probs", "nll")
    each = scorer.loss_adding_each(np.zeros(3), np.ones(3, bool))
    assert np.isfinite(each).all()
    assert each[1] == pytest.approx(-np.log(1e-12))
    assert greedy(pool, max_size=1)[0].tolist() != [0.0, 1.0, 0.0]


def test_one_valid_triplet_decides_the_embedding_accuracy() -> None:
    pool = _pool(m=2, n=4, heads=("embedding",), seed=16)
    votes = np.full((4, 3), 1 / 3)
    votes[2] = [0.8, 0.1, 0.1]  # only triplet 2 has a majority
    pool.labels["select"]["h0"] = votes
    pool.outputs["select"]["h0"][0, 2] = [[5.0, 5.0], [0.0, 0.0], [0.1, 0.0]]  # member 0: image 0 is the odd one
    pool.outputs["select"]["h0"][1, 2] = [[0.0, 0.0], [5.0, 5.0], [0.1, 0.0]]  # member 1: image 1
    scorer = _Scorer(pool, "select", "probs", "accuracy")
    assert scorer.loss(np.eye(2)[0]) == 0.0  # one hit in one valid triplet
    assert scorer.loss(np.eye(2)[1]) == 1.0


def test_a_single_member_pool_is_selected_with_every_combination() -> None:
    one = _pool(m=1, n=30, seed=17)
    for method in COMBINES:
        counts, steps = greedy(one, method=method, max_size=3)
        assert counts.tolist() == [1.0] and len(steps) == 1


def test_heads_in_any_order_add_up() -> None:
    """A classification head after another head: the shortcut's losses add to the others'."""
    pool = _pool(m=4, n=10, heads=("regression", "multiclass"), seed=18)
    scorer = _Scorer(pool, "select", "probs", "nll")
    each = scorer.loss_adding_each(np.zeros(4), np.ones(4, bool))
    for i in range(4):
        assert each[i] == pytest.approx(scorer.loss(np.eye(4)[i]), rel=1e-9)


# -- confident greedy (ensemble.confidence): additions must beat the noise of the select half -------------------
def test_a_single_rows_gain_decides_every_resample() -> None:
    """With one row every resample sums to that row's gain: strict needs it above zero, non-strict at zero."""
    for n_boot in (1000, 250, 37):  # resamples drawn 100 at a time: a partial last chunk counts as well
        assert likely_better(np.array([0.5]), 1.0, strict=True, n_boot=n_boot)
        assert not likely_better(np.array([0.0]), 0.01, strict=True, n_boot=n_boot)
        assert likely_better(np.array([0.0]), 1.0, strict=False, n_boot=n_boot)
        assert not likely_better(np.array([-0.5]), 0.01, strict=False, n_boot=n_boot)


def test_the_bootstrap_fraction_is_the_resampled_sums_above_zero() -> None:
    """Two rows, gains +1 and -1: a resample sums to +2, 0 or -2 with chances 1/4, 1/2, 1/4, so about 25% of
    resamples are strictly better and about 75% no worse; the confidence is compared against that fraction."""
    gain = np.array([1.0, -1.0])
    assert likely_better(gain, 0.2, strict=True) and not likely_better(gain, 0.3, strict=True)
    assert likely_better(gain, 0.7, strict=False) and not likely_better(gain, 0.8, strict=False)
    # the same answer every time (a fixed seed), and another seed still near the same fraction
    assert all(likely_better(gain, 0.2, strict=True) for _ in range(3))
    assert likely_better(gain, 0.2, strict=True, seed=7) and not likely_better(gain, 0.3, strict=True, seed=7)


def test_a_gain_carried_by_few_rows_is_noise_and_a_broad_one_is_not() -> None:
    broad = np.full(200, 0.01)
    few = np.zeros(200)
    few[:3] = [1.0, 1.0, -0.9]  # a positive sum, from three rows only
    assert likely_better(broad, 0.95, strict=True)
    assert few.sum() > 0 and not likely_better(few, 0.95, strict=True)


@pytest.mark.parametrize("method,metric", [("probs", "nll"), ("logits", "nll"), ("probs", "accuracy")])
def test_each_rows_loss_averages_to_the_ensembles_loss(method: str, metric: str) -> None:
    pool = _pool(m=5, n=50, seed=21)
    scorer = _Scorer(pool, "select", method, metric)
    counts = np.array([2.0, 0.0, 1.0, 0.0, 1.0])
    rows = scorer.rows(counts)
    assert rows.shape == (50,)
    assert rows.mean() == pytest.approx(scorer.loss(counts), abs=1e-12)
    z, y = pool.outputs["select"]["h0"], pool.labels["select"]["h0"]
    pooled = np.tensordot(counts / counts.sum(), _basis(z, method), axes=1)
    assert np.allclose(rows, _row_loss(_finish(pooled[None], method), y, metric)[0])


def test_two_heads_rows_add_up() -> None:
    pool = _pool(m=4, n=30, seed=22, heads=("multiclass", "regression"))
    scorer = _Scorer(pool, "select", "probs", "nll")
    counts = np.array([1.0, 1.0, 0.0, 0.0])
    assert scorer.rows(counts).mean() == pytest.approx(scorer.loss(counts), abs=1e-12)


def _noise_pool(seed: int) -> Any:
    """Member 0 is good; member 1 is member 0 with a different guess on three rows that happen to be right:
    adding it lowers the mean select NLL through those three rows alone."""
    pool = _pool(m=2, n=200, c=4, seed=seed, values=np.array([0.9, 0.1]), sharp=3.0)
    z, y = pool.outputs["select"]["h0"], pool.labels["select"]["h0"]
    z[1] = z[0]
    wrong = np.flatnonzero(z[0].argmax(-1) != y)[:3]
    z[1, wrong] = 0.0
    z[1, wrong, y[wrong]] = 8.0
    return pool


def test_confidence_keeps_the_best_single_when_an_addition_gains_on_a_few_rows_only() -> None:
    pool = _noise_pool(seed=23)
    plain, _ = greedy(pool, guard="accuracy", max_size=5)
    assert plain[1] > 0  # the point estimate takes it
    confident, steps = greedy(pool, guard="accuracy", max_size=5, confidence=0.95)
    assert confident.tolist() == [1.0, 0.0] and len(steps) == 1
    scorer = _Scorer(pool, "select", "probs", "nll")
    assert not _earns_place(scorer, np.array([1.0, 0.0]), 1, 0.95)


def test_confidence_accepts_an_addition_that_helps_on_most_rows() -> None:
    pool = _pool(m=4, n=300, seed=24, values=np.array([0.9, 0.5, 0.4, 0.3]))
    scorer = _Scorer(pool, "select", "probs", "nll")
    helpful = [i for i in range(1, 4) if _earns_place(scorer, np.array([1.0, 0, 0, 0]), i, 0.95)]
    assert helpful, "independent noisy members average to a better prediction on most rows"
    counts, steps = greedy(pool, guard="nll", max_size=6, confidence=0.95)
    assert counts.sum() > 1 and counts[0] >= 1
    plain, _ = greedy(pool, guard="nll", max_size=6)
    assert counts.sum() <= plain.sum()  # never more members than the point estimate would take
    # every accepted addition earned its place at the step it was taken
    for before, after in zip(steps, steps[1:]):
        assert _earns_place(scorer, before, int(np.flatnonzero(after - before)[0]), 0.95)
