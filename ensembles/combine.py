"""Pooling members' outputs: mean of probabilities, mean of logits, geometric mean, majority vote.

Classification heads are handled as logits of shape (n, C); a binary head's
single logit ``z`` is the two-class logits ``[0, z]``. Regression heads are
averaged. The same arithmetic runs in the Keras artifact (``ensembles.layers``).
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np

from ensembles.metrics import log_softmax, softmax

Combine = Literal["probs", "logits", "geometric", "vote"]
COMBINES: tuple[str, ...] = ("probs", "logits", "geometric", "vote")
VOTE_EPS = 1e-3  # vote shares are smoothed so NLL stays finite


def as_class_logits(z: np.ndarray, kind: str) -> np.ndarray:
    """Binary heads' (n, 1) logit becomes two-class logits (n, 2)."""
    if kind == "binary":
        z = z.reshape(len(z), 1)
        return np.concatenate([np.zeros_like(z), z], axis=1)
    return z


def pooled_log_probs(logits: np.ndarray, weights: np.ndarray, method: str) -> np.ndarray:
    """Log-probabilities of the pooled prediction before temperature.

    ``logits``: (M, n, C) members' class logits; ``weights``: (M,) summing to 1.
    """
    w = weights.reshape(-1, 1, 1).astype(logits.dtype)
    if method == "probs":
        return np.log(np.clip((w * softmax(logits)).sum(0), 1e-12, 1.0))
    if method == "logits":
        return log_softmax((w * logits).sum(0))
    if method == "geometric":
        return log_softmax((w * log_softmax(logits)).sum(0))
    if method == "vote":
        n_classes = logits.shape[-1]
        votes = np.eye(n_classes, dtype=logits.dtype)[logits.argmax(-1)]
        share = (w * votes).sum(0)
        share = (share + VOTE_EPS) / (1.0 + VOTE_EPS * n_classes)
        return np.log(share)
    raise ValueError(f"combine must be one of {COMBINES}, got {method!r}")


def apply_temperature(log_probs: np.ndarray, temperature: float) -> np.ndarray:
    return log_softmax(log_probs / temperature)


def combine(
    logits: Sequence[np.ndarray] | np.ndarray, weights: Sequence[float] | np.ndarray, method: str = "probs",
    temperature: float = 1.0,
) -> np.ndarray:
    """Pooled class probabilities (n, C) of members' class logits."""
    z = np.asarray(logits, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    return np.exp(apply_temperature(pooled_log_probs(z, w, method), temperature))


def combine_regression(preds: Sequence[np.ndarray] | np.ndarray, weights: Sequence[float] | np.ndarray) -> np.ndarray:
    p = np.asarray(preds, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    return (w.reshape(-1, *([1] * (p.ndim - 1))) * p).sum(0)


def fit_temperature(log_probs: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising NLL of ``log_probs`` on ``y`` (fit on the select half only)."""
    from scipy.optimize import minimize_scalar

    def loss(log_t: float) -> float:
        lp = apply_temperature(log_probs, float(np.exp(log_t)))
        return float(-lp[np.arange(len(y)), y].mean())

    res = minimize_scalar(loss, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))
