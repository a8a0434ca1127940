"""One temperature per member, fitted on ``select`` before members are combined.

Trials of one search differ in how confident they are (a trial trained with strong L2 can be right
96% of the time with probabilities near uniform), so an average of their probabilities or logits is
dominated by the most confident members rather than the most accurate. Dividing each member's
logits by its own temperature (Guo et al. 2017, fitted as a one-dimensional minimisation of its NLL
on ``select``) puts every member on a comparable footing before selection and combination. The
artifact applies the same temperatures (:class:`ensembles.layers.Combine`'s ``member_temperatures``).

A temperature fitted on a few hundred select rows is itself noisy, and the best trial was chosen on those
same rows. With a ``confidence``, a member keeps its fitted temperature only when calibration earns it:
each select row is scored by a temperature fitted on the other folds of select (cross-fitting, so no row
judges a fit it took part in), and the per-row NLL gains over the raw logits must sum above zero in that
share of paired bootstrap resamples (:func:`ensembles.select.likely_better`); otherwise the member keeps
its raw logits (temperature 1).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ensembles.combine import apply_temperature, fit_temperature
from ensembles.metrics import log_softmax
from ensembles.pool import Pool
from ensembles.select import likely_better

FOLDS = 5  # cross-fitting folds of select for judging a temperature


def cross_fitted_gain(log_probs: np.ndarray, y: np.ndarray, folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """Each row's NLL under the raw ``log_probs`` minus its NLL under a temperature fitted on the other folds."""
    fold = np.random.default_rng(seed).permutation(len(y)) % folds
    rows = np.arange(len(y))
    log_probs = log_softmax(log_probs)  # raw logits are scored as they are (temperature 1)
    gain = np.empty(len(y))
    for f in range(folds):
        out = fold == f
        t = fit_temperature(log_probs[~out], y[~out])
        scaled = apply_temperature(log_probs[out], t)
        gain[out] = scaled[rows[: out.sum()], y[out]] - log_probs[out][rows[: out.sum()], y[out]]
    return gain


def member_temperature(log_probs: np.ndarray, y: np.ndarray, confidence: float = 0.0) -> float:
    """The temperature minimising NLL on ``select``; with ``confidence`` > 0, 1.0 unless calibration earns it
    (its cross-fitted NLL gain is above zero in that share of bootstrap resamples of the rows)."""
    t = fit_temperature(log_probs, y)
    if confidence > 0 and not likely_better(cross_fitted_gain(log_probs, y), confidence, strict=True):
        return 1.0
    return t


def member_temperatures(pool: Pool, confidence: float = 0.0) -> dict[str, np.ndarray]:
    """Per classification head, each member's temperature on ``select`` (:func:`member_temperature`)."""
    out: dict[str, np.ndarray] = {}
    for h in pool.heads:
        if not h.is_classification:
            continue
        z = pool.outputs["select"][h.name].astype(np.float64)
        y = pool.labels["select"][h.name]
        out[h.name] = np.array([member_temperature(log_softmax(z[m]), y, confidence) for m in range(len(pool))])
    return out


def calibrated(pool: Pool, temperatures: dict[str, np.ndarray]) -> Pool:
    """A copy of ``pool`` whose classification logits (every split) are divided by each member's temperature."""
    outputs = {}
    for split, heads in pool.outputs.items():
        outputs[split] = {}
        for name, z in heads.items():
            t = temperatures.get(name)
            outputs[split][name] = z if t is None else (z / t.reshape(-1, 1, 1).astype(z.dtype))
    return dataclasses.replace(pool, outputs=outputs)
