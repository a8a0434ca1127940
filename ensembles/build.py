"""From a finished study to one ensemble: choose members, combine, evaluate, save the artifact."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ensembles.combine import apply_temperature, combine_regression, fit_temperature, pooled_log_probs
from ensembles.embedding import embedding_metrics, pool_embeddings
from ensembles.ledger import record_test_use
from ensembles.metrics import classification_metrics, regression_metrics
from ensembles.pool import SPLITS, Pool, load_pool
from ensembles.report import EnsembleReport, manifest
from ensembles.select import greedy, one_per_config, top_k

log = logging.getLogger(__name__)


def _key(split: str, head: str, name: str, multi: bool) -> str:
    return f"{split}_{head}_{name}" if multi else f"{split}_{name}"


def predict_pool(pool: Pool, counts: np.ndarray, method: str, temperature: dict[str, float], split: str) -> dict[str, np.ndarray]:
    """The ensemble's probabilities (classification) or outputs (regression) per head on ``split``."""
    idx = np.flatnonzero(counts)
    w = counts[idx] / counts[idx].sum()
    out = {}
    for h in pool.heads:
        z = pool.outputs[split][h.name][idx].astype(np.float64)
        if h.is_classification:
            lp = apply_temperature(pooled_log_probs(z, w, method), temperature.get(h.name, 1.0))
            out[h.name] = np.exp(lp)
        elif h.kind == "embedding":
            out[h.name] = pool_embeddings(z, w)
        else:
            out[h.name] = combine_regression(z, w)
    return out


def evaluate(pool: Pool, counts: np.ndarray, method: str, temperature: dict[str, float],
             splits: tuple[str, ...] = SPLITS) -> dict[str, float]:
    """Accuracy, NLL and ECE (classification) or MSE/MAE (regression) per split and head."""
    multi = len(pool.heads) > 1
    out: dict[str, float] = {}
    for s in splits:
        preds = predict_pool(pool, counts, method, temperature, s)
        for h in pool.heads:
            y = pool.labels[s][h.name]
            if h.is_classification:
                ms = classification_metrics(preds[h.name], y)
            elif h.kind == "embedding":
                ms = embedding_metrics(preds[h.name], y)
            else:
                ms = regression_metrics(preds[h.name], y)
            out.update({_key(s, h.name, k, multi): v for k, v in ms.items()})
    return out


def choose(pool: Pool, *, method: str = "greedy", combine: str = "probs", size: int = 5, metric: str = "nll",
           distinct_configs: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
    """Member counts chosen on the select half only (``top_k`` or ``greedy``) and the counts after each step."""
    if method == "top_k":
        if distinct_configs:
            keep = one_per_config(pool)
            counts_sub, steps_sub = top_k(pool.subset(keep), size)
            return _lift(counts_sub, keep, len(pool)), [_lift(c, keep, len(pool)) for c in steps_sub]
        return top_k(pool, size)
    if method == "greedy":
        allowed = None
        if distinct_configs:
            allowed = np.zeros(len(pool), bool)
            allowed[one_per_config(pool)] = True
        return greedy(pool, method=combine, metric=metric, max_size=size, allowed=allowed)
    raise ValueError(f"method must be 'greedy' or 'top_k', got {method!r}")


def _lift(counts: np.ndarray, keep: np.ndarray, n: int) -> np.ndarray:
    full = np.zeros(n)
    full[keep] = counts
    return full


def build_ensemble(
    run_dir: str | Path, *, method: str = "greedy", combine: str = "probs", size: int = 5, metric: str = "nll",
    temperature: bool = False, distinct_configs: bool = False, out_dir: str | Path | None = None,
    save_artifact: bool = True, tracking_uri: str | None = None, parent_run_id: str | None = None,
    max_candidates: int | None = None,
) -> EnsembleReport:
    """Ensemble the finished trials of the study in ``run_dir``; never retrains a member.

    Members and the optional temperature are chosen on ``select`` only; ``audit`` and
    ``test`` are evaluated. With ``save_artifact`` the ensemble is saved as one Keras
    model plus ``manifest.json`` in ``out_dir`` (default ``<run_dir>/ensemble``) and,
    given a tracking URI, logged to MLflow in a run nested under ``parent_run_id``.
    """
    run_dir = Path(run_dir)
    pool = load_pool(run_dir, max_candidates=max_candidates)
    if save_artifact:
        # The artifact needs the members' models: trials whose model was not kept (training.keep_top_models)
        # or that ran on another machine can only join an ensemble that is not saved.
        with_model = [i for i, p in enumerate(pool.model_paths) if p and Path(p).exists()]
        if not with_model:
            raise ValueError(f"no trial in {run_dir} kept its model; build the ensemble with save_artifact=False")
        if len(with_model) < len(pool):
            pool = pool.subset(with_model)
    counts, steps = choose(pool, method=method, combine=combine, size=size, metric=metric, distinct_configs=distinct_configs)
    temps: dict[str, float] = {}
    if temperature:
        idx = np.flatnonzero(counts)
        w = counts[idx] / counts[idx].sum()
        for h in pool.heads:
            if h.is_classification:
                lp = pooled_log_probs(pool.outputs["select"][h.name][idx].astype(np.float64), w, combine)
                temps[h.name] = fit_temperature(lp, pool.labels["select"][h.name])
    metrics = evaluate(pool, counts, combine, temps)
    record_test_use(pool.run_dir, f"ensemble {method}/{combine} of {int(counts.sum())}")
    best = int(pool.ranked()[0])
    single = np.zeros(len(pool))
    single[best] = 1
    best_single = {"trial": pool.numbers[best], "params": pool.params[best],
                   "metrics": evaluate(pool, single, combine, {})}
    curve = []
    for c in steps:
        m = evaluate(pool, c, combine, temps)
        curve.append({"size": float(c.sum()), **m})
    members = [
        {"trial": pool.numbers[i], "count": int(counts[i]), "weight": float(counts[i] / counts.sum()),
         "params": pool.params[i], "select_value": float(pool.values[i]), "model_path": pool.model_paths[i]}
        for i in np.flatnonzero(counts)
    ]
    report = EnsembleReport(method=method, combine=combine, metric=metric, members=members, temperature=temps,
                            metrics=metrics, best_single=best_single, curve=curve)
    if save_artifact:
        from ensembles.artifact import save_artifact as _save

        out = Path(out_dir) if out_dir else run_dir / "ensemble"
        _save(report, pool, out)
        report.artifact_dir = str(out)
        if tracking_uri is not None:
            from ensembles.artifact import log_to_mlflow

            report.mlflow_run_id, report.model_uri = log_to_mlflow(report, pool, out, tracking_uri, parent_run_id)
            (out / "manifest.json").write_text(json.dumps(manifest(report, pool), indent=2, default=str))
    return report
