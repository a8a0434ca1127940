"""Fitted member weights (``method: weights``): non-negative, summing to one, fitted on ``select``.

The weights are a softmax of free parameters, fitted by Adam on the NLL of the pooled prediction
over part of ``select``; the rest of ``select`` (``holdout``, drawn with a fixed seed) stops the fit
at its lowest NLL. Written here in NumPy (a few hundred steps on an (M, n, C) array) rather than with
a Keras model, so that ``ensembles`` stays independent of the backend and of a training loop.
Weights under ``min_weight`` are dropped and the rest renormalised, so the artifact holds only the
members that matter.
"""

from __future__ import annotations

import numpy as np

from ensembles.metrics import log_softmax, softmax
from ensembles.pool import Pool
from ensembles.select import _basis as select_basis


def _basis(z: np.ndarray, method: str) -> np.ndarray:
    """What is averaged, as greedy selection averages it; weights have no gradient through a vote."""
    if method == "vote":
        raise ValueError(f"weights are fitted for combine probs, logits or geometric, not {method!r}")
    return select_basis(z, method)


def _nll_and_grad(b: dict[str, np.ndarray], y: dict[str, np.ndarray], w: np.ndarray, method: str,
                  rows: np.ndarray) -> tuple[float, np.ndarray]:
    """Summed-over-heads NLL on ``rows`` and its gradient with respect to the weights."""
    total, grad = 0.0, np.zeros_like(w)
    for name, basis in b.items():
        bb, yy = basis[:, rows], y[name][rows]
        if method == "probs":
            t = bb[:, np.arange(len(yy)), yy]  # (M, n): each member's probability of the true class
            p = np.clip(w @ t, 1e-12, None)
            total += float(-np.log(p).mean())
            grad += -(t / p).mean(1)
        else:
            z = np.tensordot(w, bb, axes=1)
            lp = log_softmax(z)
            total += float(-lp[np.arange(len(yy)), yy].mean())
            d = np.exp(lp)
            d[np.arange(len(yy)), yy] -= 1.0
            grad += np.einsum("nc,mnc->m", d, bb) / len(yy)
    return total, grad


def fit_weights(pool: Pool, method: str = "probs", *, holdout: float = 0.3, seed: int = 0, steps: int = 500,
                lr: float = 0.05, patience: int = 30, min_weight: float = 0.01,
                init: np.ndarray | None = None) -> np.ndarray:
    """Weights (M,) over the pool's members, fitted on ``select`` with early stopping on a held-out part."""
    heads = [h for h in pool.heads if h.is_classification]
    if not heads or len(heads) != len(pool.heads):
        raise ValueError("fitted weights need classification heads only")
    b = {h.name: _basis(pool.outputs["select"][h.name].astype(np.float64), method) for h in heads}
    y = {h.name: pool.labels["select"][h.name] for h in heads}
    n = len(next(iter(y.values())))
    order = np.random.default_rng(seed).permutation(n)
    cut = max(1, int(round(n * holdout)))
    held, fit = order[:cut], order[cut:]
    a = np.log(np.clip(init, 1e-3, None)) if init is not None else np.zeros(len(pool))
    m, v = np.zeros_like(a), np.zeros_like(a)
    best_a, best_loss, since = a.copy(), np.inf, 0
    for step in range(1, steps + 1):
        w = softmax(a)
        held_loss, _ = _nll_and_grad(b, y, w, method, held)
        if held_loss < best_loss - 1e-7:
            best_a, best_loss, since = a.copy(), held_loss, 0
        else:
            since += 1
            if since >= patience:
                break
        _, g_w = _nll_and_grad(b, y, w, method, fit)
        g = w * (g_w - w @ g_w)  # through the softmax
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        a = a - lr * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
    w = softmax(best_a)
    w[w < min_weight] = 0.0
    if w.sum() == 0:
        w[int(np.argmax(softmax(best_a)))] = 1.0
    return w / w.sum()
