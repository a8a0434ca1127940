"""Guards against overfitting the validation set.

A search that picks the best of many trials on one validation set partly picks
luck. Every study therefore reports, from the trials' saved per-example
predictions:

* the incumbent's ``gap`` between ``select`` (what the driver optimised) and
  ``audit`` (never optimised), with paired-bootstrap confidence intervals, and an
  alarm when the gap exceeds a threshold (default: twice its bootstrap standard error);
* the Pearson correlation of select and audit across trials;
* overtuning: the audit score of the final incumbent minus the best audit score of
  the earlier incumbents (Schneider, Bisch, Feurer 2025);
* the trials statistically tied with the incumbent on select;
* what restoring the best select epoch would have done to audit;
* how often the locked test split was used.

It also holds the optional stopping rule (:func:`regret_bound`, after Makarova et
al. 2022 as Optuna's terminator computes it). The bookkeeping of test-split uses is
:mod:`ensembles.ledger`'s, re-exported here for the study.
All scores are sign-adjusted so that larger is better.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ensembles.ledger import TEST_USES_FILE, record_test_use, test_uses

__all__ = [
    "TEST_USES_FILE", "GapCheck", "GuardReport", "bootstrap_mean", "check_study", "encode", "metric_head",
    "paired_tie", "per_example", "record_test_use", "regret_bound", "sample_random", "statistical_error", "test_uses",
]


# -- per-example scores ---------------------------------------------------------------------
def metric_head(metric: str, heads: Sequence[Mapping[str, Any]]) -> tuple[Mapping[str, Any], str] | None:
    """The head and per-example score (``accuracy``, ``nll``, ``abs_err``, ``sq_err``) behind a Keras metric name."""
    kinds = {"accuracy": "accuracy", "loss": None, "mae": "abs_err", "mse": "sq_err"}
    for h in heads:
        for suffix, kind in kinds.items():
            names = [suffix] if len(heads) == 1 else []
            names.append(f"{h['name']}_{suffix}")
            if metric in names:
                if kind is None:
                    kind = "nll" if h["kind"] in ("multiclass", "binary") else "sq_err"
                if kind == "accuracy" and h["kind"] == "regression":
                    return None
                return h, kind
    return None


def per_example(predictions: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray], split: str,
                head: Mapping[str, Any], kind: str) -> np.ndarray:
    """One score per example (higher is better for accuracy; a loss otherwise) from saved outputs."""
    from ensembles.combine import as_class_logits
    from ensembles.metrics import log_softmax

    out = np.asarray(predictions[f"{split}/{head['name']}"], dtype=np.float64)
    y = np.asarray(labels[f"{split}/{head['name']}"])
    if head["kind"] == "regression":
        err = out.reshape(len(y), -1) - y.reshape(len(y), -1)
        return np.abs(err).mean(1) if kind == "abs_err" else (err**2).mean(1)
    z = as_class_logits(out, head["kind"])
    yi = y.argmax(-1) if (head["kind"] == "multiclass" and head.get("one_hot")) else y.reshape(len(y)).astype(int)
    if kind == "accuracy":
        return (z.argmax(-1) == yi).astype(np.float64)
    return -log_softmax(z)[np.arange(len(yi)), yi]


def bootstrap_mean(x: np.ndarray, *, n_resamples: int, confidence: float, seed: int) -> tuple[float, float, float]:
    """Percentile bootstrap (``scipy.stats.bootstrap``) of a mean: (low, high, standard error)."""
    from scipy.stats import bootstrap

    if np.all(x == x[0]):
        return float(x[0]), float(x[0]), 0.0
    res = bootstrap((x,), np.mean, n_resamples=n_resamples, confidence_level=confidence, method="percentile",
                    vectorized=True, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high), float(res.standard_error)


def paired_tie(a: np.ndarray, b: np.ndarray, *, n_resamples: int, confidence: float, seed: int) -> bool:
    """Whether the paired bootstrap CI of mean(a - b) contains 0 (a and b score the same examples)."""
    from scipy.stats import bootstrap

    d = a - b
    if np.all(d == d[0]):
        return bool(d[0] == 0)
    res = bootstrap((d,), np.mean, n_resamples=n_resamples, confidence_level=confidence, method="percentile",
                    vectorized=True, rng=np.random.default_rng(seed))
    return bool(res.confidence_interval.low <= 0 <= res.confidence_interval.high)


# -- the report -----------------------------------------------------------------------------
@dataclass
class GapCheck:
    """Select against audit for one model (the incumbent or the ensemble)."""

    select: float
    audit: float
    gap: float  # select − audit, sign-adjusted: > 0 means select looks better than audit
    gap_se: float
    threshold: float
    overfit: bool
    select_ci: tuple[float, float] | None = None
    audit_ci: tuple[float, float] | None = None


@dataclass
class GuardReport:
    metric: str
    direction: str
    incumbent: int
    per_example_score: str | None
    incumbent_check: GapCheck | None
    correlation: float | None
    overtuning: float | None
    incumbents: list[int]
    tied: list[int]
    ensemble_check: GapCheck | None = None
    restore_best_epoch: dict[str, Any] | None = None
    test_uses: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def overfit(self) -> bool:
        return bool((self.incumbent_check and self.incumbent_check.overfit)
                    or (self.ensemble_check and self.ensemble_check.overfit))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["overfit"] = self.overfit
        return d

    def verdict(self) -> str:
        """One line for people."""
        c = self.incumbent_check
        if c is None:
            return "guards: no per-example scores for this metric; gap not tested"
        word = "OVERFIT ALARM" if self.overfit else "ok"
        corr = "n/a" if self.correlation is None else f"{self.correlation:.2f}"
        return (f"guards {word}: select−audit gap {c.gap:+.4f} (threshold {c.threshold:.4f}, 2×SE={2 * c.gap_se:.4f}); "
                f"select/audit correlation across trials {corr}; tied with the incumbent: {len(self.tied)} trial(s)")


def _gap_check(sel: np.ndarray, aud: np.ndarray, kind: str, threshold: float | None,
               n_resamples: int, confidence: float, seed: int) -> GapCheck:
    s_lo, s_hi, s_se = bootstrap_mean(sel, n_resamples=n_resamples, confidence=confidence, seed=seed)
    a_lo, a_hi, a_se = bootstrap_mean(aud, n_resamples=n_resamples, confidence=confidence, seed=seed + 1)
    better = 1.0 if kind == "accuracy" else -1.0  # per-example losses: lower is better
    gap = better * (float(sel.mean()) - float(aud.mean()))
    se = math.sqrt(s_se**2 + a_se**2)  # independent halves
    thr = threshold if threshold is not None else 2.0 * se
    return GapCheck(select=float(sel.mean()), audit=float(aud.mean()), gap=gap, gap_se=se, threshold=thr,
                    overfit=bool(gap > thr and gap > 0), select_ci=(s_lo, s_hi), audit_ci=(a_lo, a_hi))


def check_study(
    run_dir: Path, results: Sequence[Mapping[str, Any]], *, metric: str, direction: str, incumbent: int,
    threshold: float | None = None, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0,
    max_tie_candidates: int = 50, ensemble_counts: tuple[Any, ...] | None = None,
) -> GuardReport:
    """The guard report of a finished study from its completed trials' saved predictions."""
    run_dir = Path(run_dir)
    heads = json.loads((run_dir / "data.json").read_text())["heads"]
    sign = 1.0 if direction == "maximize" else -1.0
    complete = sorted((r for r in results if r["state"] == "COMPLETE"), key=lambda r: r["number"])
    by_number = {r["number"]: r for r in complete}
    audit_key = f"audit_{metric}"
    notes: list[str] = []

    sel_vals = np.array([r["value"] for r in complete], dtype=float)
    aud_vals = np.array([r["metrics"].get(audit_key, np.nan) for r in complete], dtype=float)
    corr = None
    if len(complete) >= 3 and np.isfinite(aud_vals).all() and sel_vals.std() > 0 and aud_vals.std() > 0:
        corr = float(np.corrcoef(sel_vals, aud_vals)[0, 1])

    # incumbent trajectory in trial order, and overtuning
    incumbents: list[int] = []
    best = -math.inf
    for r in complete:
        if sign * r["value"] > best:
            best = sign * r["value"]
            incumbents.append(r["number"])
    overtuning = None
    if len(incumbents) >= 2 and incumbent in by_number:
        earlier = [sign * by_number[n]["metrics"][audit_key] for n in incumbents if n != incumbent]
        overtuning = sign * by_number[incumbent]["metrics"][audit_key] - max(earlier)

    report = GuardReport(metric=metric, direction=direction, incumbent=incumbent, per_example_score=None,
                         incumbent_check=None, correlation=corr, overtuning=overtuning, incumbents=incumbents,
                         tied=[], test_uses=test_uses(run_dir), notes=notes)
    found = metric_head(metric, heads)
    if found is None or incumbent not in by_number:
        notes.append(f"no per-example score for metric {metric!r}: gap and ties not tested")
        return report
    head, kind = found
    report.per_example_score = kind
    with np.load(run_dir / "labels.npz") as f:
        labels = {k: f[k] for k in f.files}

    def scores(r: Mapping[str, Any], split: str) -> np.ndarray:
        with np.load(r["predictions_path"]) as f:
            return per_example({k: f[k] for k in f.files}, labels, split, head, kind)

    inc = by_number[incumbent]
    inc_sel = scores(inc, "select")
    report.incumbent_check = _gap_check(inc_sel, scores(inc, "audit"), kind, threshold, n_resamples, confidence, seed)
    ranked = sorted(complete, key=lambda r: -sign * r["value"])[:max_tie_candidates]
    for i, r in enumerate(ranked):
        if r["number"] != incumbent and paired_tie(inc_sel, scores(r, "select"), n_resamples=n_resamples // 2,
                                                   confidence=confidence, seed=seed + 10 + i):
            report.tied.append(r["number"])
    if ensemble_counts is not None:
        report.ensemble_check = _ensemble_check(run_dir, ensemble_counts, head, kind, labels, threshold,
                                                n_resamples, confidence, seed)
    report.restore_best_epoch = _restore_effect(inc, metric, sign)
    return report


def _ensemble_check(run_dir: Path, members: tuple[Any, ...], head: Mapping[str, Any], kind: str,
                    labels: Mapping[str, np.ndarray], threshold: float | None, n_resamples: int, confidence: float,
                    seed: int) -> GapCheck | None:
    from ensembles.build import predict_members
    from ensembles.pool import load_pool

    records, combine = members  # the ensemble's members as its report lists them, and how they are combined
    pool = load_pool(run_dir, snapshots=any(m.get("epoch") for m in records),
                     refits=any(m.get("refit") is not None for m in records))
    out = {}
    for split in ("select", "audit"):
        p = predict_members(pool, records, combine, {}, split)[head["name"]]
        if head["kind"] == "regression":
            out[split] = per_example({f"{split}/{head['name']}": p}, labels, split, head, kind)
        else:
            logp = np.log(np.clip(p, 1e-12, 1.0))
            out[split] = per_example({f"{split}/{head['name']}": logp}, labels, split, {**head, "kind": "multiclass"}, kind)
    return _gap_check(out["select"], out["audit"], kind, threshold, n_resamples, confidence, seed + 5)


def _restore_effect(inc: Mapping[str, Any], metric: str, sign: float) -> dict[str, Any] | None:
    """What restoring the incumbent's best select epoch would have changed on audit."""
    h = inc.get("history", {})
    sel, aud = h.get(f"val_{metric}"), h.get(f"audit_{metric}")
    if not sel or not aud or len(sel) != len(aud):
        return None
    best = int(np.argmax(sign * np.asarray(sel)))
    return {"best_select_epoch": best + 1, "last_epoch": len(sel), "audit_at_best_select_epoch": aud[best],
            "audit_at_last_epoch": aud[-1], "audit_change_if_restored": sign * (aud[best] - aud[-1])}


# -- stopping rule ----------------------------------------------------------------------------
def encode(space: Any, params: Mapping[str, Any]) -> np.ndarray:
    """Parameters as a vector in [0, 1]^d (log scale for log parameters, one-hot for choices)."""
    out: list[float] = []
    for p in space.params:
        if p.kind == "fixed":
            continue
        v = params.get(p.name)
        if p.kind in ("choice", "boolean"):
            grid = list(p.grid or ())
            out.extend(1.0 if v is not None and v == g else 0.0 for g in grid)
        else:
            if v is None:
                out.append(0.5)
                continue
            lo, hi, x = float(p.low), float(p.high), float(v)
            if p.log:
                lo, hi, x = math.log(lo), math.log(hi), math.log(max(x, 1e-300))
            out.append((x - lo) / (hi - lo) if hi > lo else 0.5)
    return np.asarray(out, dtype=float)


def regret_bound(space: Any, params: Sequence[Mapping[str, Any]], values: Sequence[float], direction: str, *,
                 seed: int = 0, n_candidates: int = 2048, top_ratio: float = 0.5, min_top: int = 20,
                 delta: float = 0.1) -> float:
    """A high-probability upper bound on how much better than the incumbent any configuration can be.

    As Makarova et al. (2022) and Optuna's ``RegretBoundEvaluator``: fit a Gaussian process to the
    top trials, and bound the regret by max UCB over the space minus max LCB over those trials,
    with GP-UCB's beta scaled down by 5. Written on scikit-learn's GP because Optuna's terminator
    needs PyTorch and works only inside Optuna.
    """
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    sign = 1.0 if direction == "maximize" else -1.0
    y = sign * np.asarray(values, dtype=float)
    x = np.stack([encode(space, p) for p in params])
    rng = np.random.default_rng(seed)
    cand = np.stack([encode(space, sample_random(space, rng)) for _ in range(n_candidates)])
    varying = np.ptp(np.concatenate([x, cand]), axis=0) > 0  # columns that can never change carry nothing
    if not varying.any():
        return 0.0  # nothing left to search: every parameter is fixed or never active
    x, cand = x[:, varying], cand[:, varying]
    n = len(y)
    top_n = int(np.clip(int(n * top_ratio), min(min_top, n), n))
    order = np.argsort(-y)[:top_n]
    x, y = x[order], y[order]
    mu, sd = y.mean(), y.std() or 1.0
    ys = (y - mu) / sd
    d = x.shape[1]
    kernel = ConstantKernel(1.0, (1e-2, 1e2)) * Matern(length_scale=np.ones(d), length_scale_bounds=(1e-2, 1e2), nu=2.5) \
        + WhiteKernel(1e-2, (1e-6, 1e0))
    gp = GaussianProcessRegressor(kernel=kernel, normalize_y=False, random_state=seed, n_restarts_optimizer=2)
    gp.fit(x, ys)
    beta = 2 * math.log(d * top_n**2 * math.pi**2 / 6 / delta) / 5
    cand = np.concatenate([cand, x])
    m_c, s_c = gp.predict(cand, return_std=True)
    m_t, s_t = gp.predict(x, return_std=True)
    ucb = (m_c + math.sqrt(beta) * s_c).max()
    lcb = (m_t - math.sqrt(beta) * s_t).max()
    return float(max(ucb - lcb, 0.0) * sd)


def sample_random(space: Any, rng: np.random.Generator) -> dict[str, Any]:
    """One configuration drawn uniformly (log-uniformly for log parameters), conditions respected."""
    out: dict[str, Any] = {}
    for p in space.params:
        if not p.is_active(out):
            continue
        grid = p.grid
        if grid is not None:
            out[p.name] = grid[int(rng.integers(len(grid)))]
        elif p.log:
            out[p.name] = p.snap(math.exp(rng.uniform(math.log(p.low), math.log(p.high))))
        else:
            out[p.name] = p.snap(rng.uniform(p.low, p.high))
    return out


def statistical_error(run_dir: Path, result: Mapping[str, Any], metric: str, *, n_resamples: int = 1000,
                      seed: int = 0) -> float | None:
    """Bootstrap standard error of one trial's select metric (None without per-example scores)."""
    heads = json.loads((Path(run_dir) / "data.json").read_text())["heads"]
    found = metric_head(metric, heads)
    if found is None or not result.get("predictions_path"):
        return None
    head, kind = found
    with np.load(Path(run_dir) / "labels.npz") as f:
        labels = {k: f[k] for k in f.files}
    with np.load(result["predictions_path"]) as f:
        x = per_example({k: f[k] for k in f.files}, labels, "select", head, kind)
    return bootstrap_mean(x, n_resamples=n_resamples, confidence=0.95, seed=seed)[2]
