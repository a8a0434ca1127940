"""Rules that keep select's noise out of an ensemble: a member's temperature only where calibration earns it."""

from __future__ import annotations

import numpy as np
import pytest

from ensembles.calibrate import cross_fitted_gain, member_temperature
from ensembles.combine import fit_temperature
from ensembles.metrics import log_softmax


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
