"""Choosing members: the top k by the select metric, or greedy forward selection with replacement.

Greedy selection follows Caruana et al. (2004), as auto-sklearn and AutoGluon
do: start from the best single member, repeatedly add (with replacement) the
member that most improves the pooled prediction on the select half, stop at the
size cap or when nothing improves. It only ever looks at ``select``.
Every candidate's pooled score is computed at once with array operations.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ensembles.combine import VOTE_EPS
from ensembles.embedding import triplet_hits, triplet_losses
from ensembles.metrics import log_softmax, softmax
from ensembles.pool import Pool

CHUNK = 64  # candidates scored per array operation (bounds memory: CHUNK x n x C)
TRIED = 8  # with a confidence, the candidates (best point gain first) bootstrapped per step before stopping


def _basis(z: np.ndarray, method: str) -> np.ndarray:
    """What is averaged for a combination: probabilities, logits, log-probabilities or votes."""
    if method == "probs":
        return softmax(z)
    if method == "logits":
        return z
    if method == "geometric":
        return log_softmax(z)
    if method == "vote":
        return np.eye(z.shape[-1], dtype=z.dtype)[z.argmax(-1)]
    raise ValueError(f"unknown combine {method!r}")


def _finish(q: np.ndarray, method: str) -> np.ndarray:
    """Pooled average → log-probabilities."""
    if method == "probs":
        return np.log(np.clip(q, 1e-12, 1.0))
    if method == "vote":
        c = q.shape[-1]
        return np.log((q + VOTE_EPS) / (1.0 + VOTE_EPS * c))
    return log_softmax(q)


def _row_loss(log_probs: np.ndarray, y: np.ndarray, metric: str) -> np.ndarray:
    """Loss per candidate and row (lower is better): NLL or error; ``log_probs`` (..., n, C) → (..., n)."""
    if metric == "nll":
        return -log_probs[..., np.arange(len(y)), y]
    return (log_probs.argmax(-1) != y).astype(np.float64)


def _loss(log_probs: np.ndarray, y: np.ndarray, metric: str) -> np.ndarray:
    """Loss per candidate (lower is better): NLL or error rate; ``log_probs`` (..., n, C)."""
    return _row_loss(log_probs, y, metric).mean(-1)


def likely_better(gain: np.ndarray, confidence: float, *, strict: bool, n_boot: int = 1000,
                  seed: int = 0) -> bool:
    """Whether rows' paired gains (``gain[i]`` > 0: row i scored better) sum above zero (``strict``) or
    at least to zero in at least ``confidence`` of ``n_boot`` bootstrap resamples of the rows.

    A paired percentile bootstrap: resampling rows keeps each row's two scores together, so the test
    asks whether the change would survive another draw of the select half. Fixed ``seed``: the same
    pool always gives the same answer.
    """
    rng = np.random.default_rng(seed)
    n, passed = len(gain), 0
    for start in range(0, n_boot, 100):  # 100 resamples at a time bounds memory at 100 x n
        sums = gain[rng.integers(0, n, (min(100, n_boot - start), n))].sum(1)
        passed += int((sums > 0).sum() if strict else (sums >= 0).sum())
    return passed >= confidence * n_boot


class _Scorer:
    """Scores pooled predictions on one split, summed over heads."""

    def __init__(self, pool: Pool, split: str, method: str, metric: str) -> None:
        self.method, self.metric = method, metric
        self.heads = pool.heads
        self.bases = {}
        self.labels = pool.labels[split]
        self.true_class: dict[str, np.ndarray] = {}
        for h in pool.heads:
            z = pool.outputs[split][h.name]
            self.bases[h.name] = _basis(z, method) if h.is_classification else z
            if h.is_classification and method == "probs" and metric == "nll":
                # NLL of a mean of probabilities needs only the true class's column: C times less work
                y = self.labels[h.name]
                self.true_class[h.name] = self.bases[h.name][:, np.arange(len(y)), y]

    def loss(self, counts: np.ndarray) -> float:
        k = counts.sum()
        total = 0.0
        for h in self.heads:
            pooled = np.tensordot(counts / k, self.bases[h.name], axes=1)
            total += self._head_loss(pooled[None], h)[0]
        return float(total)

    def rows(self, counts: np.ndarray) -> np.ndarray:
        """Each select row's loss under the ensemble ``counts``, summed over heads; its mean is :meth:`loss`."""
        k = counts.sum()
        return sum(self._head_rows(np.tensordot(counts / k, self.bases[h.name], axes=1)[None], h)[0]
                   for h in self.heads)

    def _head_loss(self, pooled: np.ndarray, h: Any) -> np.ndarray:
        return self._head_rows(pooled, h).mean(-1)

    def _head_rows(self, pooled: np.ndarray, h: Any) -> np.ndarray:
        """Loss per candidate and row, (K, n), of pooled predictions (K, n, ...)."""
        y = self.labels[h.name]
        if h.is_classification:
            return _row_loss(_finish(pooled, self.method), y, self.metric)
        if h.kind == "embedding":
            # pooled is a plain weighted mean here; re-normalising does not change which pair is
            # closest, and the loss of the mean is what greedy selection compares.
            if self.metric == "nll":
                return triplet_losses(pooled, y)
            hit, valid = triplet_hits(pooled, y)
            return 1.0 - hit * valid * len(y) / max(valid.sum(), 1)
        err = pooled.reshape(pooled.shape[0], len(y), -1) - y.reshape(1, len(y), -1)
        return (err**2).mean(2)

    def loss_adding_each(self, counts: np.ndarray, allowed: np.ndarray) -> np.ndarray:
        """Loss of the ensemble ``counts`` plus one more copy of each allowed candidate."""
        k = counts.sum()
        m = len(counts)
        out = np.full(m, np.inf)
        idx_all = np.flatnonzero(allowed)
        totals = np.zeros(len(idx_all))
        for h in self.heads:
            if h.name in self.true_class:
                t = self.true_class[h.name]
                acc_t = counts @ t if k > 0 else np.zeros_like(t[0])
                pooled_t = (acc_t[None] + t[idx_all]) / (k + 1)
                totals += -np.log(np.clip(pooled_t, 1e-12, 1.0)).mean(-1)
                continue
            b = self.bases[h.name]
            acc = np.tensordot(counts, b, axes=1) if k > 0 else np.zeros_like(b[0])
            for start in range(0, len(idx_all), CHUNK):
                idx = idx_all[start:start + CHUNK]
                pooled = (acc[None] + b[idx]) / (k + 1)
                totals[start:start + CHUNK] += self._head_loss(pooled, h)
        out[idx_all] = totals
        return out


def one_per_config(pool: Pool) -> np.ndarray:
    """Indices keeping only the best-ranked member of each identical configuration."""
    seen: set[str] = set()
    keep = []
    for i in pool.ranked():
        key = repr(sorted(pool.params[i].items()))
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return np.array(sorted(keep))


def top_k(pool: Pool, k: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Equal weights on the k best members by the select objective; also the counts after each addition."""
    ranked = pool.ranked()[:k]
    counts = np.zeros(len(pool))
    steps = []
    for i in ranked:
        counts[i] += 1
        steps.append(counts.copy())
    return counts, steps


def greedy(
    pool: Pool, *, method: str = "probs", metric: str = "nll", max_size: int = 10,
    allowed: np.ndarray | None = None, guard: str | None = None, confidence: float = 0.0, small_steps: bool = False,
    twins: bool = False,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Caruana's forward selection with replacement on the select half; returns counts and each step's counts.

    With ``guard`` (the study's objective as ``accuracy`` or ``nll``) selection starts from the best
    trial by the objective (``pool.best_trial()``, a trial's final model, not a snapshot) and an addition
    must improve ``metric`` while keeping the guard no worse than that trial's, so the result is never
    below the best single trial on select. Without it, selection starts from the member best by ``metric`` (Caruana's rule).
    With ``confidence`` > 0 an addition must also earn its place beyond the noise of the select half
    (:func:`likely_better`): it improves ``metric`` in at least that fraction of bootstrap resamples of
    the rows (the guard stays the point check above); the ``TRIED`` candidates with the largest gains are
    tried best first and selection stops when none passes. With ``small_steps``, when no addition passes at
    weight 1/(k+1) the smallest step the size cap allows is tried before stopping: the ensemble so far scaled
    to ``max_size - 1`` copies (the same prediction) plus one member, weight ``1/max_size``. With ``twins`` (and
    ``guard``) selection starts from the best trial averaged with its seed refits: the largest share of them
    (:func:`twin_starts`) that keeps the guard. The twins are not chosen by the metric on select, so the start
    spends none of select's noise on them.
    """
    scorer = _Scorer(pool, "select", method, metric)
    allowed = np.ones(len(pool), bool) if allowed is None else allowed
    counts = np.zeros(len(pool))
    guard_scorer = _Scorer(pool, "select", method, guard) if guard else None
    if guard_scorer is not None:
        first = pool.best_trial(allowed)
        counts[first] = 1
        current, floor = scorer.loss(counts), guard_scorer.loss(counts)
        if twins:
            start = next((c for c in twin_starts(pool, first, allowed, max_size)
                          if guard_scorer.loss(c) <= floor + 1e-12), None)
            if start is not None:
                counts, current = start, scorer.loss(start)
    else:
        single = scorer.loss_adding_each(counts, allowed)
        first = int(np.argmin(single))
        counts[first] = 1
        current, floor = single[first], np.inf
    steps = [counts.copy()]
    step = _Step(scorer, guard_scorer, allowed, floor, confidence)
    while counts.sum() < max_size:
        best, loss = step.next(counts, current)
        if best < 0 and small_steps and (max_size - 1) // counts.sum() > 1:
            scaled = counts * ((max_size - 1) // counts.sum())
            best, loss = step.next(scaled, current)
            counts = scaled if best >= 0 else counts
        if best < 0:
            break
        counts[best] += 1
        current = loss
        steps.append(counts.copy())
    return counts, steps


def twin_start(pool: Pool, first: int, allowed: np.ndarray) -> np.ndarray:
    """Counts of one for member ``first`` and every allowed seed refit of its trial: a seed ensemble of the best
    configuration (its members differ only by their seed)."""
    counts = np.zeros(len(pool))
    counts[first] = 1
    for i in range(len(pool)):
        if allowed[i] and pool.numbers[i] == pool.numbers[first] and pool.refit(i) is not None:
            counts[i] = 1
    return counts


def twin_starts(pool: Pool, first: int, allowed: np.ndarray, max_size: int) -> list[np.ndarray]:
    """Seed ensembles of the best trial within ``max_size`` copies, the twins' share of the weight largest first:
    ``m`` copies of member ``first`` and one of each of ``j`` of its seed refits (best by the objective first)."""
    seeds = twin_start(pool, first, allowed)
    twins = [int(i) for i in pool.ranked() if seeds[i] and i != first]
    shapes = [(m, j) for j in range(len(twins), 0, -1) for m in range(1, max_size - j + 1)]
    starts = []
    for m, j in sorted(shapes, key=lambda s: (-s[1] / (s[0] + s[1]), s[0])):
        counts = np.zeros(len(pool))
        counts[first] = m
        counts[twins[:j]] = 1
        starts.append(counts)
    return starts


class _Step:
    """One greedy step: the member whose addition lowers the metric (beyond select's noise, with a
    confidence) and keeps the guard, with the loss it reaches; -1 when none does."""

    def __init__(self, scorer: _Scorer, guard_scorer: _Scorer | None, allowed: np.ndarray, floor: float,
                 confidence: float) -> None:
        self.scorer, self.guard_scorer, self.allowed = scorer, guard_scorer, allowed
        self.floor, self.confidence = floor, confidence

    def next(self, counts: np.ndarray, current: float) -> tuple[int, float]:
        cand = self.scorer.loss_adding_each(counts, self.allowed)
        if self.guard_scorer is not None:
            cand[self.guard_scorer.loss_adding_each(counts, self.allowed) > self.floor + 1e-12] = np.inf
        order = [int(i) for i in np.argsort(cand, kind="stable") if cand[i] < current - 1e-12]
        if self.confidence > 0:
            order = [next((i for i in order[:TRIED] if _earns_place(self.scorer, counts, i, self.confidence)), -1)]
        if not order or order[0] < 0:
            return -1, current
        return order[0], float(cand[order[0]])


def _earns_place(scorer: _Scorer, counts: np.ndarray, i: int, confidence: float) -> bool:
    """Whether adding member ``i`` to ``counts`` improves the metric in at least ``confidence`` of bootstrap
    resamples of the select rows."""
    new = counts.copy()
    new[i] += 1
    return likely_better(scorer.rows(counts) - scorer.rows(new), confidence, strict=True)
