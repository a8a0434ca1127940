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
from ensembles.calibrate import calibrated, member_temperatures
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


def predict_members(pool: Pool, members: list[dict], method: str, temperature: dict[str, float],
                    split: str) -> dict[str, np.ndarray]:
    """What an ensemble's artifact predicts on ``split``, from its members' saved logits: each member's
    ``count`` (or weight) and ``temperature`` (per head, when calibrated) as the report lists them."""
    idx = [pool.index(m["trial"], m.get("epoch"), m.get("refit")) for m in members]
    sub = pool.subset(idx)
    temps = {h.name: np.array([m.get("temperature", {}).get(h.name, 1.0) for m in members])
             for h in pool.heads if h.is_classification and any(m.get("temperature") for m in members)}
    return predict_pool(calibrated(sub, temps), np.array([float(m["count"]) for m in members]), method,
                        temperature, split)


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


DEFAULT_CONFIDENCE = 0.95  # an addition must improve select in 95% of bootstrap resamples; 0: any improvement
# Not the default (experiments/ensemble_gain.py, ``earned_t_small_steps``): a member's temperature kept only
# where its cross-fitted select NLL gain is positive in at least half of the resamples, with greedy's small
# steps. Chosen on digits seeds 100-109 (0.5 over 0.8 and 0.95), it lowered test NLL in more held-out studies
# but fell 1.11 pt below the best single trial's test accuracy in one of 15 (seeds 5-19), so it is opt-in.
CALIBRATION_CONFIDENCE = 0.5
GUARDED_OBJECTIVES = {"accuracy": "accuracy", "sparse_categorical_accuracy": "accuracy",
                      "categorical_accuracy": "accuracy", "binary_accuracy": "accuracy", "loss": "nll"}


def guard_metric(pool: Pool, metric: str) -> str:
    """The study's objective as a metric selection can score on pooled predictions (``accuracy`` or ``nll``).

    An objective it cannot score (a per-head metric, AUC, ...) is guarded by ``metric`` itself: the
    selection still starts from the best member by the objective and only ever improves ``metric``.
    """
    g = GUARDED_OBJECTIVES.get(pool.objective or "")
    if g is None or not all(h.is_classification for h in pool.heads):
        return metric
    return g


def choose(pool: Pool, *, method: str = "greedy", combine: str = "probs", size: int = 5, metric: str = "nll",
           distinct_configs: bool = False, guard: bool = True, seed: int = 0,
           confidence: float = DEFAULT_CONFIDENCE, small_steps: bool = False, twins: bool = False,
           ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Member counts (or weights) chosen on the select half only, and the counts after each step.

    ``top_k``: the ``size`` best members by the objective. ``greedy``: forward selection with
    replacement; with ``guard`` it starts from the best member by the objective and never ends below
    it on select (:func:`ensembles.select.greedy`); with ``confidence`` > 0 each addition must also be
    better in that fraction of bootstrap resamples of select, so select noise does not add members, and
    with ``small_steps`` (opt-in) a step of weight 1/``size`` is tried when none passes at 1/(k+1). ``weights``: fitted weights (:mod:`ensembles.weights`)
    over every candidate, started from the guarded greedy counts; when they score below the best single
    member on the guard, the greedy counts are kept.
    """
    if not 0 <= confidence < 1:
        raise ValueError(f"confidence must be at least 0 and below 1, got {confidence}")
    keep = one_per_config(pool) if distinct_configs else np.arange(len(pool))
    sub = pool.subset(keep) if distinct_configs else pool
    if method == "top_k":
        counts, steps = top_k(sub, size)
    elif method in ("greedy", "weights"):
        g = guard_metric(sub, metric) if guard else None
        counts, steps = greedy(sub, method=combine, metric=metric, max_size=size, guard=g, confidence=confidence,
                               small_steps=small_steps, twins=twins)
        if method == "weights":
            counts, steps = _fitted(sub, counts, steps, combine, g or metric, seed)
    else:
        raise ValueError(f"method must be 'greedy', 'top_k' or 'weights', got {method!r}")
    if not distinct_configs:
        return counts, steps
    return _lift(counts, keep, len(pool)), [_lift(c, keep, len(pool)) for c in steps]


def _fitted(pool: Pool, counts: np.ndarray, steps: list[np.ndarray], combine: str, guard: str,
            seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    from ensembles.select import _Scorer
    from ensembles.weights import fit_weights

    w = fit_weights(pool, combine, seed=seed, init=0.5 * counts / counts.sum() + 0.5 / len(pool))
    scorer = _Scorer(pool, "select", combine, guard)
    single = np.zeros(len(pool))
    single[pool.best_trial()] = 1
    if scorer.loss(w) > scorer.loss(single) + 1e-12:
        log.info("fitted weights score below the best single member on select; keeping the greedy counts")
        return counts, steps
    return w, [*steps, w]


def _lift(counts: np.ndarray, keep: np.ndarray, n: int) -> np.ndarray:
    full = np.zeros(n)
    full[keep] = counts
    return full


def _pool_with_models(run_dir: Path, max_candidates: int | None, save_artifact: bool, snapshots: bool,
                      max_per_config: int | None, refits: bool) -> Pool:
    pool = load_pool(run_dir, max_candidates=max_candidates, snapshots=snapshots, max_per_config=max_per_config,
                     refits=refits)
    if save_artifact:
        # The artifact needs the members' models: trials whose model was not kept (training.keep_top_models)
        # or that ran on another machine can only join an ensemble that is not saved.
        with_model = [i for i, p in enumerate(pool.model_paths) if p and Path(p).exists()]
        if not with_model:
            raise ValueError(f"no trial in {run_dir} kept its model; build the ensemble with save_artifact=False")
        if len(with_model) < len(pool):
            pool = pool.subset(with_model)
    return pool


def build_ensemble(
    run_dir: str | Path, *, method: str = "greedy", combine: str = "probs", size: int = 5, metric: str = "nll",
    temperature: bool = False, calibrate: bool = True, guard: bool = True, distinct_configs: bool = False,
    out_dir: str | Path | None = None, save_artifact: bool = True, tracking_uri: str | None = None,
    parent_run_id: str | None = None, max_candidates: int | None = None, incumbent_counted: int | None = None,
    seed: int = 0, snapshots: bool = True, max_per_config: int | None = None,
    confidence: float = DEFAULT_CONFIDENCE, refits: bool = True, calibrate_confidence: float = 0.0,
    small_steps: bool = False, twins: bool = False,
) -> EnsembleReport:
    """Ensemble the finished trials of the study in ``run_dir``; never retrains a member.

    Candidates are the finished trials and, with ``snapshots``, their snapshots (earlier epochs saved while
    they trained, ``ensemble.snapshot_epochs``) and, with ``refits``, the members of the study's seed refit
    (``ensemble.seed_refit``; each listed with ``refit``: its index), at most ``max_per_config`` per configuration.
    Opt-in (measured in ``experiments/ensemble_gain.py``, not the default): ``calibrate_confidence`` > 0 keeps
    a member's temperature only when calibration earns it (:func:`ensembles.calibrate.member_temperature`;
    ``CALIBRATION_CONFIDENCE`` was the value tried), and ``small_steps`` lets greedy try a step of weight
    1/``size`` when no addition passes at 1/(k+1) (:func:`ensembles.select.greedy`). Members, their temperatures (``calibrate``: one per member, :mod:`ensembles.calibrate`), fitted
    weights and the optional pooled ``temperature`` are chosen on ``select`` only; ``audit`` is
    evaluated for the size curve, and the locked ``test`` split only for the final ensemble and the
    best single member (each read recorded in the run directory's test ledger; the best single's is
    not recorded again when it is ``incumbent_counted``, the trial whose test read the study already
    recorded). With ``save_artifact`` the ensemble is saved as one Keras model plus ``manifest.json``
    in ``out_dir`` (default ``<run_dir>/ensemble``) and, given a tracking URI, logged to MLflow in a
    run nested under ``parent_run_id``.
    """
    run_dir = Path(run_dir)
    raw = _pool_with_models(run_dir, max_candidates, save_artifact, snapshots, max_per_config, refits)
    temps = member_temperatures(raw, calibrate_confidence) if calibrate else {}
    pool = calibrated(raw, temps) if calibrate else raw
    counts, steps = choose(pool, method=method, combine=combine, size=size, metric=metric,
                           distinct_configs=distinct_configs, guard=guard, seed=seed, confidence=confidence,
                           small_steps=small_steps, twins=twins)
    pooled_t: dict[str, float] = {}
    if temperature:
        idx = np.flatnonzero(counts)
        w = counts[idx] / counts[idx].sum()
        for h in pool.heads:
            if h.is_classification:
                lp = pooled_log_probs(pool.outputs["select"][h.name][idx].astype(np.float64), w, combine)
                pooled_t[h.name] = fit_temperature(lp, pool.labels["select"][h.name])
    metrics = evaluate(pool, counts, combine, pooled_t)
    record_test_use(pool.run_dir, f"ensemble {method}/{combine} of {len(np.flatnonzero(counts))} members")
    best = pool.best_trial()  # the best trial, not a snapshot of one
    single = np.zeros(len(pool))
    single[best] = 1
    best_single = {"trial": pool.numbers[best], "params": pool.params[best],
                   "metrics": evaluate(raw, single, combine, {})}
    if incumbent_counted != pool.numbers[best]:
        record_test_use(pool.run_dir, f"best single trial {pool.numbers[best]} beside the ensemble")
    # the size curve never reads the locked test split: sizes are compared on select and audit only
    curve = [{"size": float(c.sum()), **evaluate(pool, c, combine, pooled_t, splits=("select", "audit"))}
             for c in steps]
    members = [
        {"trial": pool.numbers[i], "epoch": pool.epoch(i), "refit": pool.refit(i), "count": int(counts[i]) if float(counts[i]).is_integer() else float(counts[i]), "weight": float(counts[i] / counts.sum()),
         "temperature": {h: float(t[i]) for h, t in temps.items()},
         "params": pool.params[i], "select_value": float(pool.values[i]), "model_path": pool.model_paths[i]}
        for i in np.flatnonzero(counts)
    ]
    alone = len(members) == 1 and members[0]["trial"] == pool.numbers[best] and members[0]["epoch"] is None \
        and members[0]["refit"] is None
    report = EnsembleReport(method=method, combine=combine, metric=metric, members=members, temperature=pooled_t,
                            metrics=metrics, best_single=best_single, curve=curve, calibrated=calibrate,
                            guard=guard_metric(pool, metric) if guard and method != "top_k" else None,
                            best_single_alone=alone, confidence=confidence if method != "top_k" else None)
    if save_artifact:
        _save_and_log(report, pool, Path(out_dir) if out_dir else run_dir / "ensemble", tracking_uri, parent_run_id)
    return report


def _save_and_log(report: EnsembleReport, pool: Pool, out: Path, tracking_uri: str | None,
                  parent_run_id: str | None) -> None:
    from ensembles.artifact import log_to_mlflow, save_artifact

    save_artifact(report, pool, out)
    report.artifact_dir = str(out)
    if tracking_uri is not None:
        report.mlflow_run_id, report.model_uri = log_to_mlflow(report, pool, out, tracking_uri, parent_run_id)
        (out / "manifest.json").write_text(json.dumps(manifest(report, pool, out), indent=2, default=str))
