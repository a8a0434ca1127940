"""Rules that keep select's noise out of an ensemble: a member's temperature only where calibration earns it."""

from __future__ import annotations

import numpy as np
import pytest

from ensembles.calibrate import cross_fitted_gain, member_temperature
from ensembles.combine import fit_temperature
from ensembles.metrics import log_softmax
from ensembles.pool import SPLITS, HeadInfo, Pool


def _calibrated(n: int, c: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Log-probabilities the labels were drawn from (the right temperature is 1)."""
    rng = np.random.default_rng(seed)
    lp = log_softmax(rng.normal(size=(n, c)) * 2.0)
    y = np.array([rng.choice(c, p=np.exp(row)) for row in lp])
    return lp, y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_calibrated_member_on_few_rows_keeps_its_raw_logits(seed: int) -> None:
    """216 rows (digits' select split) of a calibrated member: the plain fit moves off 1 by noise, the earned
    temperature stays exactly 1."""
    lp, y = _calibrated(216, 10, seed)
    assert fit_temperature(lp, y) != 1.0
    assert member_temperature(lp, y, confidence=0.95) == 1.0
    assert member_temperature(lp, y, confidence=0.0) == fit_temperature(lp, y)


@pytest.mark.parametrize("scale", [4.0, 0.2])
def test_a_badly_calibrated_member_earns_its_temperature(scale: float) -> None:
    """Over-confident (x4) or under-confident (x0.2) logits on 216 rows keep their fitted temperature."""
    lp, y = _calibrated(216, 10, seed=7)
    z = lp * scale
    t = member_temperature(z, y, confidence=0.95)
    assert t == fit_temperature(z, y) and t == pytest.approx(scale, rel=0.35)


def test_cross_fitted_gain_scores_each_row_with_a_fit_that_did_not_see_it() -> None:
    """Out-of-fold gains: near zero or below for calibrated logits (a fit on the same rows always gains a
    little), large for over-confident ones."""
    lp, y = _calibrated(500, 10, seed=3)
    gain = cross_fitted_gain(lp, y)
    assert gain.shape == (500,) and np.isfinite(gain).all()
    assert gain.sum() < 1.0  # no temperature helps calibrated rows out of sample; in sample it always helps a bit
    over = cross_fitted_gain(lp * 3.0, y)
    assert over.mean() > 0.5


def test_a_fifth_of_a_weaker_member_joins_when_half_of_it_would_not() -> None:
    """Small steps: a confidently wrong 5% of the best member's rows are softened by 1/5 of a weak, honest member
    (select NLL 0.53 -> 0.48) while a half share is worse (0.69): the 1/(k+1) step is refused, the 1/size step
    is taken, and the guard holds (accuracy unchanged)."""
    from ensembles.select import greedy

    from .test_ensemble_calibration import _synthetic_pool

    rng = np.random.default_rng(0)
    n, c = 1000, 10
    y = rng.integers(0, c, n)
    best = np.zeros((n, c))
    wrong = (y + 1 + rng.integers(0, c - 1, n)) % c
    err = rng.random(n) < 0.05
    best[np.arange(n), np.where(err, wrong, y)] = np.where(err, 6.0, 4.0)
    weak = rng.normal(0, 0.6, (n, c))
    weak[np.arange(n), y] += 1.2
    pool = _synthetic_pool([best, weak], y, [float((z.argmax(1) == y).mean()) for z in (best, weak)])
    plain, _ = greedy(pool, guard="accuracy", confidence=0.95, max_size=5)
    small, steps = greedy(pool, guard="accuracy", confidence=0.95, max_size=5, small_steps=True)
    assert plain.tolist() == [1, 0]
    assert small.tolist() == [4, 1] and [s.tolist() for s in steps] == [[1, 0], [4, 1]]


def _twin_pool(twin_noise: float, seed: int = 0) -> tuple[Pool, np.ndarray]:
    """Trial 0 (the best), two seed refits of it (its logits plus independent noise of ``twin_noise``) and a
    weaker trial 1; 216 rows, as digits' select split."""
    rng = np.random.default_rng(seed)
    n, c = 216, 10
    y = rng.integers(0, c, n)
    base = rng.normal(0, 1.0, (n, c))
    base[np.arange(n), y] += 2.5
    members = [base + rng.normal(0, 1.0, (n, c)) for _ in range(3)]
    members[1:] = [m + rng.normal(0, twin_noise, (n, c)) for m in members[1:]]
    weak = rng.normal(0, 1.0, (n, c))
    weak[np.arange(n), y] += 1.0
    outs = np.stack([*members, weak]).astype(np.float32)
    acc = [float((z.argmax(1) == y).mean()) for z in outs]
    acc[0] = max(acc) + 0.01  # trial 0 is the study's best trial by its objective
    pool = Pool(numbers=[0, 0, 0, 1], params=[{"m": 0}] * 3 + [{"m": 1}], values=np.array(acc), direction="maximize",
                heads=[HeadInfo("y", "multiclass", c)], outputs={s: {"y": outs} for s in SPLITS},
                labels={s: {"y": y} for s in SPLITS}, model_paths=[None] * 4, objective="accuracy",
                refits=[None, 0, 1, None])
    return pool, y


def test_twins_start_the_greedy_from_a_seed_ensemble_of_the_best_trial() -> None:
    """With ``twins`` the best trial and its two seed refits start the selection at equal weight; their average
    lowers select NLL below the best trial's, and without ``twins`` the selection starts from the trial alone."""
    from ensembles.select import _Scorer, greedy, twin_start

    pool, _ = _twin_pool(twin_noise=0.0)
    assert twin_start(pool, 0, np.ones(4, bool)).tolist() == [1, 1, 1, 0]
    counts, steps = greedy(pool, guard="accuracy", confidence=0.95, max_size=5, twins=True)
    assert steps[0].tolist() == [1, 1, 1, 0] and counts[:3].tolist() == [1, 1, 1]
    nll = _Scorer(pool, "select", "probs", "nll")
    assert nll.loss(steps[0]) < nll.loss(np.array([1.0, 0, 0, 0]))
    _, plain = greedy(pool, guard="accuracy", confidence=0.95, max_size=5)
    assert plain[0].tolist() == [1, 0, 0, 0]
    # refits not allowed (e.g. a distinct-configurations pool) are not part of the start
    allowed = np.array([True, False, True, True])
    assert twin_start(pool, 0, allowed).tolist() == [1, 0, 1, 0]


def test_noisy_twins_start_at_the_largest_share_that_keeps_select_accuracy() -> None:
    """The guard holds for the twin start too: refits much noisier than the best trial lower select accuracy at
    equal weight, so the start is the largest twin share that keeps it (shares tried largest first)."""
    from ensembles.select import _Scorer, greedy, twin_starts

    pool, _ = _twin_pool(twin_noise=6.0)
    acc = _Scorer(pool, "select", "probs", "accuracy")
    best = np.array([1.0, 0, 0, 0])
    starts = twin_starts(pool, 0, np.ones(4, bool), 5)
    shares = [1 - c[0] / c.sum() for c in starts]
    assert starts[0].tolist() == [1, 1, 1, 0] and shares == sorted(shares, reverse=True) and min(shares) == pytest.approx(0.2)
    assert acc.loss(starts[0]) > acc.loss(best)
    counts, steps = greedy(pool, guard="accuracy", confidence=0.95, max_size=5, twins=True)
    kept = next(c for c in starts if acc.loss(c) <= acc.loss(best) + 1e-12)
    assert steps[0].tolist() == kept.tolist() and kept[0] > 1
    assert acc.loss(counts) <= acc.loss(best)


def test_twins_that_flip_close_calls_at_any_share_are_not_the_start() -> None:
    """Twins confidently wrong on the best trial's close calls lower select accuracy at every share: the selection
    starts from the best trial alone."""
    from ensembles.select import greedy

    pool, y = _twin_pool(twin_noise=0.0)
    n, c = len(y), 10
    close = np.arange(n) % 5 == 0
    wrong = (y + 1) % c
    best = np.zeros((n, c), np.float32)
    best[np.arange(n), y] = np.where(close, 2.0, 6.0)
    best[np.arange(n), wrong] = np.where(close, 1.9, 0.0)
    twin = best.copy()
    twin[np.flatnonzero(close), wrong[close]] = 30.0
    for s in SPLITS:
        pool.outputs[s]["y"][0], pool.outputs[s]["y"][1], pool.outputs[s]["y"][2] = best, twin, twin
    counts, steps = greedy(pool, guard="accuracy", confidence=0.95, max_size=5, twins=True)
    assert steps[0].tolist() == [1, 0, 0, 0] and counts[1:3].tolist() == [0, 0]
