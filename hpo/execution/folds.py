"""K-fold cross-validation of one trial (``training.folds: k``).

A cross-validated study pools ``train`` and ``select`` (:func:`pool_splits`: both names then hold the pool,
train rows first); ``audit`` and the locked ``test`` split stay held out. Every trial of the study cuts the pool
into the same k folds (:func:`assign_folds`: scikit-learn's ``StratifiedKFold`` on the first head's classes for
classification, ``KFold`` otherwise, shuffled with the study's seed), trains one model per fold on the other folds
and scores it on its own fold. The trial is scored on its out-of-fold predictions:

* ``select_*`` (the objective among them): each fold model's score on its held-out fold, weighted by the fold's
  rows; for per-example metrics (accuracy, cross-entropy, MSE, MAE) that is the metric of the out-of-fold
  predictions over the whole pool;
* ``predictions.npz`` keeps the layout every reader knows: ``select/<head>`` the out-of-fold logits (pool order,
  the rows of ``labels.npz`` ``select``), ``audit/<head>`` and ``test/<head>`` the mean of the k fold models'
  logits, which is what the bagged model outputs; ``audit_*`` are the bagged model's scores;
* ``model.keras`` is the bagged model: one functional Keras model whose layers are the fold models
  (``fold_0`` ...) and a ``keras.layers.Average`` of their outputs per head (loads with ``safe_mode=True``);
  ``folds.npz`` holds the fold of every pool row (``fold``) and each fold model's own audit and test logits;
* fold ``f``'s epoch ``e`` reaches the listener as step ``f * epochs + e`` with ``fold`` and ``fold_epoch`` in its
  logs: the pruner compares trials at the same fold and epoch, so a poor configuration can be pruned in its first
  fold; ``history`` is the mean over the folds of every epoch's scores (folds stopped early count where they ran).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from hpo.data import Splits, concat, hash_arrays, leaves, take
from hpo.errors import ConfigError, TrialFailed, TrialPruned
from hpo.execution.fitting import EpochListener, Fit, TrialSettings, final_scores, fit_model, make_model
from hpo.execution.measures import model_measures
from hpo.execution.scoring import flatten_predictions, predict, score
from hpo.repro import seed_everything
from hpo.results import TrialResult, TrialState

FOLD_KEYS = ("fold", "fold_epoch")  # what a cross-validated trial adds to its epoch logs


def pool_splits(splits: Splits) -> Splits:
    """A cross-validated study's splits: ``train`` and ``select`` both the pool train+select, audit and test as
    they are."""
    x = concat([splits.x["train"], splits.x["select"]])
    y = concat([splits.y["train"], splits.y["select"]])
    h = hash_arrays(x, y)
    return Splits(x={"train": x, "select": x, "audit": splits.x["audit"], "test": splits.x["test"]},
                  y={"train": y, "select": y, "audit": splits.y["audit"], "test": splits.y["test"]},
                  spec=splits.spec, name=splits.name, hashes={**splits.hashes, "train": h, "select": h})


def class_labels(splits: Splits) -> np.ndarray | None:
    """The pool's classes of the first head (what folds are stratified on); None for regression/embeddings."""
    head = splits.spec.heads[0]
    if head.kind not in ("multiclass", "binary"):
        return None
    ys = splits.y["select"]
    y = np.asarray(ys[head.name] if isinstance(ys, dict) else leaves(ys)[0])
    return y.argmax(-1) if head.one_hot else y.reshape(len(y)).astype(int)


def check_folds(k: int, splits: Splits) -> None:
    """Refuse ``k`` folds the pool (train+select of ``splits``, a :func:`pool_splits` result) cannot hold."""
    n = splits.size("select")
    if k > n:
        raise ConfigError("training.folds", f"{k} folds need at least {k} rows in train+select, which has {n}")
    labels = class_labels(splits)
    if labels is None:
        return
    classes, counts = np.unique(labels, return_counts=True)
    if k > counts.min():
        c = classes[counts.argmin()]
        raise ConfigError("training.folds", f"{k} stratified folds need at least {k} rows of every class in "
                                            f"train+select; class {c} has {counts.min()}: use at most "
                                            f"{counts.min()} folds")


def assign_folds(splits: Splits, k: int, seed: int) -> np.ndarray:
    """The fold (0..k-1) of every pool row: stratified for classification, the same for every trial of a study."""
    from sklearn.model_selection import KFold, StratifiedKFold

    labels = class_labels(splits)
    n = splits.size("select")
    cv = StratifiedKFold(k, shuffle=True, random_state=seed) if labels is not None else \
        KFold(k, shuffle=True, random_state=seed)
    fold = np.empty(n, dtype=np.int64)
    for f, (_, held) in enumerate(cv.split(np.zeros(n), labels)):
        fold[held] = f
    return fold


def fold_seed(trial_seed: int, fold: int) -> int:
    """The seed fold ``fold``'s model trains with (weights, dropout, batch order); fold 0 keeps the trial's."""
    return (trial_seed + 7919 * fold) % 2**31


def _fold_splits(splits: Splits, held: np.ndarray) -> Splits:
    """One fold's splits: the other folds train, the fold itself is its ``select``; audit and test unchanged."""
    tr, va = np.flatnonzero(~held), np.flatnonzero(held)
    x, y = splits.x["select"], splits.y["select"]
    return Splits(x={"train": take(x, tr), "select": take(x, va), "audit": splits.x["audit"], "test": splits.x["test"]},
                  y={"train": take(y, tr), "select": take(y, va), "audit": splits.y["audit"], "test": splits.y["test"]},
                  spec=splits.spec, name=splits.name, hashes=dict(splits.hashes))


def _fold_listener(listener: EpochListener | None, fold: int, epochs: int) -> EpochListener | None:
    if listener is None:
        return None

    def on_epoch(epoch: int, logs: Mapping[str, float]) -> None:
        listener(fold * epochs + epoch, {**logs, "fold": float(fold), "fold_epoch": float(epoch)})

    return on_epoch


def mean_history(histories: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    """Every key's per-epoch mean over the folds (a fold that stopped early counts for the epochs it ran)."""
    out: dict[str, list[float]] = {}
    for key in dict.fromkeys(k for h in histories for k in h):
        runs = [h[key] for h in histories if h.get(key)]
        out[key] = [float(np.mean([r[e] for r in runs if len(r) > e])) for e in range(max(len(r) for r in runs))]
    return out


def run_folds(result: TrialResult, splits: Splits, settings: TrialSettings, trial_dir: Path,
              listener: EpochListener | None, fit: Fit, extra_callbacks: list[Any] | None, started: float) -> None:
    """Train and score one configuration by k-fold cross-validation; fills ``result`` (see the module's doc)."""
    k = settings.folds
    fold = assign_folds(splits, k, settings.fold_seed)
    result.cv = {"k": k, "fold_seed": settings.fold_seed, "stratified": class_labels(splits) is not None,
                 "folds": []}
    models, runs = [], []
    try:
        for f in range(k):
            _check_budget(settings, started, f)
            seed = fold_seed(result.seed, f)
            seed_everything(seed, settings.deterministic)
            run = TrialResult(number=result.number, params=result.params, seed=seed, state=TrialState.FAILED)
            runs.append(run)
            own = _fold_splits(splits, fold == f)
            model = make_model(fit.build, fit.hp, splits.spec)
            audit_history = fit_model(model, run, own, settings, trial_dir / "folds" / f"fold_{f}",
                                      _fold_listener(listener, f, fit.epochs), fit, extra_callbacks, started)
            final_scores(model, run, own, settings, audit_history, fit.build)
            models.append(model)
            result.cv["folds"].append({"fold": f, "rows": int((fold == f).sum()), "seed": seed, "epochs": run.epochs,
                                       "metrics": dict(run.metrics)})
    except TrialPruned:
        result.history = mean_history([r.history for r in runs])
        result.epochs = sum(len(r.history.get("loss", [])) for r in runs)
        raise
    result.history = mean_history([r.history for r in runs])
    result.epochs = sum(r.epochs for r in runs)
    weights = np.array([(fold == f).sum() for f in range(k)], dtype=float) / len(fold)
    result.metrics = {key: float(sum(w * r.metrics[key] for w, r in zip(weights, runs)))
                      for key in runs[0].metrics if key.startswith("select_")}
    result.value = result.metrics[f"select_{settings.objective}"]
    trial_dir.mkdir(parents=True, exist_ok=True)
    result.predictions_path = str(_save_fold_predictions(models, splits, fold, trial_dir))
    bag = bagged_model(models, splits.spec)
    result.metrics.update(_audit_scores(bag, models[0], splits, result.cv["folds"]))
    # The trial's model is the bag: its size and latency; seconds per epoch over every fold's epochs.
    fit_s = sum(r.measures["epoch_seconds"] * max(r.epochs, 1) for r in runs)
    result.measures = model_measures(bag, splits, latency=settings.measure_latency) | {"epoch_seconds": fit_s / max(result.epochs, 1)}
    if settings.save_models:
        bag.save(trial_dir / "model.keras")
        result.model_path = str(trial_dir / "model.keras")


def _check_budget(settings: TrialSettings, started: float, fold: int) -> None:
    """``training.trial_timeout_s`` stops a fold at the end of the epoch that passes it, as it stops any trial;
    a fold that would start after it fails the trial (an out-of-fold score needs every fold)."""
    if fold and settings.timeout_s is not None and time.monotonic() - started > settings.timeout_s:
        raise TrialFailed(f"training.trial_timeout_s ({settings.timeout_s:g} s) passed after {fold} of "
                          f"{settings.folds} folds; the out-of-fold score needs every fold")


def _save_fold_predictions(models: list[Any], splits: Splits, fold: np.ndarray, trial_dir: Path) -> Path:
    """``predictions.npz`` (out-of-fold select, fold-mean audit and test logits) and ``folds.npz``."""
    heads = [h.name for h in splits.spec.heads]
    n_audit = splits.size("audit")
    per_fold: dict[str, np.ndarray] = {"fold": fold}
    oof: dict[str, np.ndarray] = {}
    for f, model in enumerate(models):
        held = np.flatnonzero(fold == f)
        x = concat([take(splits.x["select"], held), splits.x["audit"], splits.x["test"]])
        pred = flatten_predictions(predict(model, x), heads)
        for head, arr in pred.items():
            arr = np.asarray(arr, dtype=np.float32)
            oof.setdefault(head, np.zeros((len(fold), *arr.shape[1:]), dtype=np.float32))[held] = arr[:len(held)]
            per_fold[f"fold_{f}/audit/{head}"] = arr[len(held):len(held) + n_audit]
            per_fold[f"fold_{f}/test/{head}"] = arr[len(held) + n_audit:]
    arrays = {f"select/{h}": oof[h] for h in heads}
    for split in ("audit", "test"):
        for h in heads:
            stacked = np.stack([per_fold[f"fold_{f}/{split}/{h}"] for f in range(len(models))])
            arrays[f"{split}/{h}"] = stacked.astype(np.float64).mean(0).astype(np.float32)
    for name, data in (("folds.npz", per_fold), ("predictions.npz", arrays)):
        tmp = trial_dir / f"{name[:-4]}.tmp.npz"
        np.savez_compressed(tmp, **data)
        tmp.replace(trial_dir / name)
    return trial_dir / "predictions.npz"


def bagged_model(models: list[Any], spec: Any) -> Any:
    """One Keras model averaging the fold models' outputs (logits) per head: the trial's model."""
    import keras

    inputs = {name: keras.Input(shape=tuple(shape), name=name) for name, shape in spec.inputs.items()}
    x = next(iter(inputs.values())) if len(inputs) == 1 else inputs
    heads = [h.name for h in spec.heads]
    per_head: dict[str, list[Any]] = {h: [] for h in heads}
    for f, model in enumerate(models):
        model.name = f"fold_{f}"
        out = model(x)
        outs = out if isinstance(out, dict) else dict(zip(heads, out)) if isinstance(out, (list, tuple)) \
            else {heads[0]: out}
        for h in heads:
            per_head[h].append(outs[h])
    outputs = {h: keras.layers.Average(name=h)(per_head[h]) for h in heads}
    return keras.Model(x, outputs[heads[0]] if len(heads) == 1 else outputs, name="bagged")


def _audit_scores(bag: Any, first: Any, splits: Splits, folds: list[dict[str, Any]]) -> dict[str, float]:
    """The bagged model's scores on audit, compiled as the fold models were; where their compile config does
    not carry over (losses that do not serialise, outputs named otherwise), the mean of the fold
    models' own audit scores. (The bagged loss counts every fold model's weight penalty.)"""
    try:
        bag.compile_from_config(first.get_compile_config())
        return {f"audit_{k}": float(v) for k, v in score(bag, splits.x["audit"], splits.y["audit"]).items()}
    except Exception:
        keys = [key for key in folds[0]["metrics"] if key.startswith("audit_")]
        if not keys:
            raise TrialFailed("the fold models reported no audit scores") from None
        return {key: float(np.mean([f["metrics"][key] for f in folds])) for key in keys}
