"""Embedding heads (triplet models): pooling and the course's triplet loss and accuracy, in NumPy."""

from __future__ import annotations

import numpy as np

DELTA = 0.5


def _d(e: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    e0, e1, e2 = e[..., 0, :], e[..., 1, :], e[..., 2, :]
    return ((e0 - e1) ** 2).sum(-1), ((e0 - e2) ** 2).sum(-1), ((e1 - e2) ** 2).sum(-1)


def triplet_losses(e: np.ndarray, votes: np.ndarray, delta: float = DELTA) -> np.ndarray:
    """Votes-weighted triplet loss per triplet; ``e`` (..., n, 3, d), ``votes`` (n, 3)."""
    d01, d02, d12 = _d(e)
    r = lambda a: np.maximum(a, 0.0)  # noqa: E731
    per_far = np.stack([r(d12 - d01 + delta) + r(d12 - d02 + delta),
                        r(d02 - d01 + delta) + r(d02 - d12 + delta),
                        r(d01 - d02 + delta) + r(d01 - d12 + delta)], axis=-1)
    return (votes * per_far).sum(-1)


def triplet_hits(e: np.ndarray, votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hit, valid) per triplet: the most-voted image is the odd one out; valid when the top vote > 0.5."""
    d01, d02, d12 = _d(e)
    correct = np.stack([(d01 > d12) & (d02 > d12), (d01 > d02) & (d12 > d02), (d02 > d01) & (d12 > d01)], axis=-1)
    far = votes.argmax(-1)
    hit = np.take_along_axis(correct, np.broadcast_to(far[..., None], correct.shape[:-1] + (1,)), -1)[..., 0]
    return hit.astype(np.float64), votes.max(-1) > 0.5


def triplet_accuracy(e: np.ndarray, votes: np.ndarray) -> np.ndarray | float:
    hit, valid = triplet_hits(e, votes)
    n = valid.sum()
    return (hit * valid).sum(-1) / n if n else 0.5


def pool_embeddings(z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted mean of members' embeddings, re-normalised to the members' weighted mean norm."""
    w = w.reshape(-1, *([1] * (z.ndim - 1)))
    mean = (w * z).sum(0)
    norm = (w * np.linalg.norm(z, axis=-1, keepdims=True)).sum(0)
    return mean / np.maximum(np.linalg.norm(mean, axis=-1, keepdims=True), 1e-12) * norm


def embedding_metrics(e: np.ndarray, votes: np.ndarray) -> dict[str, float]:
    return {"triplet_accuracy": float(triplet_accuracy(e, votes)), "triplet_loss": float(triplet_losses(e, votes).mean())}
