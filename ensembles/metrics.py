"""Metrics on predicted probabilities: accuracy, negative log-likelihood, expected calibration error."""

from __future__ import annotations

import numpy as np

EPS = 1e-12


def log_softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.exp(log_softmax(z, axis))


def accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    """Fraction of rows whose most probable class is the label."""
    return float((probs.argmax(-1) == y).mean())


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-probability of the true class."""
    p = probs[np.arange(len(y)), y]
    return float(-np.log(np.clip(p, EPS, 1.0)).mean())


def ece(probs: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error with equal-width confidence bins (15 by default)."""
    conf = probs.max(-1)
    correct = probs.argmax(-1) == y
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        m = idx == b
        if m.any():
            total += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(total)


def classification_metrics(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {"accuracy": accuracy(probs, y), "nll": nll(probs, y), "ece": ece(probs, y)}


def regression_metrics(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    err = pred.reshape(len(y), -1) - y.reshape(len(y), -1)
    return {"mse": float((err**2).mean()), "mae": float(np.abs(err).mean())}
