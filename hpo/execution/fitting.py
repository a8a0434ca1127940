"""How a trial's model is built, fitted with the framework's callbacks, scored on ``select`` and ``audit``, and its
logits saved: the pieces :func:`hpo.execution.trial.run_trial` and the cross-validated trial
(:mod:`hpo.execution.folds`) share."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from hpo.data import Splits, concat
from hpo.errors import TrialFailed, TrialPruned
from hpo.execution.forward import Outputs, evaluate, has_program
from hpo.execution.scoring import (Scorable, count_rows, flatten_predictions, predict, score, score_and_outputs,
                                  scorable)
from hpo.execution.shapes import fit_inputs, forward_rows, padded_predict, pads_safely
from hpo.execution.templates import user_model
from hpo.execution.xla import compiles_per_shape
from hpo.metric_names import split_name
from hpo.results import TrialResult
from hpo.space import Builder, call_builder

__all__ = ["EpochListener", "Fit", "TrialPruned", "TrialSettings", "ends_at_last_scoring", "final_scores",
           "fit_model", "make_model", "save_predictions"]


class EpochListener(Protocol):
    """Receives each epoch's logs; may raise :class:`TrialPruned`."""

    def __call__(self, epoch: int, logs: Mapping[str, float]) -> None: ...


@dataclass
class TrialSettings:
    """How every trial of a study is trained and scored."""

    epochs: int = 10
    batch_size: int = 64
    objective: str = "accuracy"
    direction: str = "maximize"
    early_stopping_patience: int | None = None
    restore_best_weights: bool = False
    timeout_s: float | None = None
    deterministic: bool = True
    save_models: bool = True
    audit_per_epoch: bool = True
    callbacks: Callable[[Path], list[Any]] | None = None  # user callbacks, made fresh for each trial directory
    fit_params: tuple[str, ...] = ()  # searched training.batch_size / training.epochs: read from each trial's params
    snapshot_epochs: tuple[int, ...] = ()  # epochs whose logits (and model) are kept as ensemble candidates
    snapshot_budget_mb: float = 200.0
    folds: int = 1  # training.folds: >1 trains that many models on folds of train+select (hpo.execution.folds)
    fold_seed: int = 0  # the seed of the fold assignment, the same for every trial of a study
    measure_latency: bool = False  # time predict calls (measures.latency_ms_per_1k): only when the study uses it

    def for_trial(self, params: Mapping[str, Any], epochs: int | None = None) -> tuple[int, int]:
        """(epochs, batch_size) of one trial: an engine's epoch budget (Hyperband), else its searched values,
        else the study's."""
        e = epochs or (params["epochs"] if "epochs" in self.fit_params else self.epochs)
        b = params["batch_size"] if "batch_size" in self.fit_params else self.batch_size
        return int(e), int(b)


def make_model(build: Builder, hp: Any, splits_spec: Any, compile_default: Callable[..., Any] | None = None) -> Any:
    """Build a model; compile it with the space's defaults when the builder did not."""
    model = call_builder(build, hp, splits_spec)
    if model is None:
        raise TrialFailed("the builder returned None instead of a keras.Model")
    if not getattr(model, "compiled", False):
        if compile_default is None:
            from hpo.space.compile import compile_for

            compile_default = compile_for
        compile_default(model, hp, splits_spec)
    return model


def _callbacks(settings: TrialSettings, listener: EpochListener | None, monitor: str, started: float,
               audit: Scorable | None, audit_history: dict[str, list[float]],
               select: Scorable | None = None,
               seen: dict[str, list[float]] | None = None, outputs: dict[str, Any] | None = None) -> list[Any]:
    """Keras callbacks of a trial. ``select`` and ``audit`` come from :func:`~hpo.execution.scoring.scorable`:
    tensors already on the backend's device when small (one compiled call each), NumPy otherwise (``evaluate``).
    ``outputs`` receives the model's outputs on select and audit at each epoch's end where the scoring computed
    them (under JAX)."""
    import keras

    class _StopOnNaN(keras.callbacks.Callback):
        """Stops fit at the first batch whose loss is NaN or infinite (as ``keras.callbacks.TerminateOnNaN``).

        Written here rather than subclassed because it runs on Keras' callback thread: Keras runs batch-end
        callbacks there only when every callback says it is safe there (TerminateOnNaN does not, so each
        batch's loss was pulled to Python on the training thread), and TerminateOnNaN reaches the model through
        ``Callback.model``, which under JAX copies the training loop's state into the model. On the helper
        thread that copy raced the next train step, which donates those buffers: the model was left holding
        deleted arrays ("Array has been deleted") instead of the trial failing on its NaN loss. ``_model``
        reaches the flag without touching the state."""

        async_safe = True

        def on_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            loss = (logs or {}).get("loss")
            if loss is not None and not np.isfinite(np.asarray(loss)).all():
                self._model.stop_training = True

    class _Listen(keras.callbacks.Callback):
        """Scores select (as ``val_*``, when fit is not given validation data) and audit (for reports only),
        forwards epoch logs (tracking, pruning), enforces the time budget."""

        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            if select is not None and logs is not None:
                # Written into Keras' own logs dict: the callbacks after this one (EarlyStopping, the user's,
                # History) see val_* exactly as if fit had validated. One compiled call instead of fit's
                # per-epoch evaluate, which builds a fresh data pipeline and callback list every epoch.
                scores, out = score_and_outputs(self.model, select)
                logs.update({f"val_{k}": v for k, v in scores.items()})
                _keep(outputs, "select", out)
            logs = dict(logs or {})
            if audit is not None:
                # Never seen by the pruner or the sampler: they only read val_* (select).
                scores, out = score_and_outputs(self.model, audit)
                _keep(outputs, "audit", out)
                for k, v in scores.items():
                    audit_history.setdefault(f"audit_{k}", []).append(float(v))
                    logs[f"audit_{k}"] = float(v)
            if seen is not None:  # what a trial stopped by its pruner trained, kept in its record
                for k, v in logs.items():
                    seen.setdefault(k, []).append(float(v))
            if listener is not None:
                listener(epoch, logs)
            if settings.timeout_s is not None and time.monotonic() - started > settings.timeout_s:
                self.model.stop_training = True
                self.timed_out = True

    cbs: list[Any] = [_StopOnNaN(), _Listen()]
    if settings.early_stopping_patience is not None:
        cbs.append(keras.callbacks.EarlyStopping(
            monitor=monitor, patience=settings.early_stopping_patience,
            mode="max" if settings.direction == "maximize" else "min",
            restore_best_weights=settings.restore_best_weights,
        ))
    return cbs


def _keep(outputs: dict[str, Any] | None, split: str, out: Any) -> None:
    """The split's outputs at this epoch's end in ``outputs``; none kept when they were not computed."""
    if outputs is not None:
        if out is None:
            outputs.pop(split, None)
        else:
            outputs[split] = out


@dataclass
class Fit:
    """How one trial fits: its builder (a HyperModel's ``fit`` override is called), ``hp``, the epoch it ends at,
    batch size, and the epoch it starts from (a trial continuing another one's checkpoint: the epochs that one
    trained)."""

    build: Builder
    hp: Any
    epochs: int
    batch_size: int
    initial_epoch: int = 0


def _call_fit(model: Any, fit: Fit, settings: TrialSettings, x: Any, y: Any, **kwargs: Any) -> Any:
    """``model.fit``, or a KerasTuner HyperModel's ``fit(hp, model, x, y, **kwargs)`` override with the framework's
    validation data, callbacks and epochs; batch size and epochs are left to the override when it declares them
    itself (KerasTuner's convention: ``model.fit(*args, batch_size=hp.Int(...), **kwargs)``)."""
    from hpo.space.fit_params import overrides_fit

    if fit.initial_epoch:
        kwargs["initial_epoch"] = fit.initial_epoch
    if not overrides_fit(fit.build):
        args, how = fit_inputs(model, fit.batch_size, x, y)
        return model.fit(*args, epochs=fit.epochs, **how, **kwargs)
    own = set(fit.hp.values) - set(settings.fit_params)  # the HyperModel's own hp values (fit's included)
    extra = {k: v for k, v in (("epochs", fit.epochs), ("batch_size", fit.batch_size)) if k not in own}
    returned = fit.build.fit(fit.hp, model, x, y, **extra, **kwargs)
    hist = returned if hasattr(returned, "history") and isinstance(returned.history, dict) else \
        getattr(model, "history", None)
    if hist is None or not getattr(hist, "history", None):
        raise TrialFailed("the HyperModel's fit override trained nothing through model.fit (no History); call "
                          "model.fit(*args, **kwargs) in it so the framework's validation and callbacks run")
    return hist


def fit_model(model: Any, result: TrialResult, splits: Splits, settings: TrialSettings, trial_dir: Path,
         listener: EpochListener | None, fit: Fit, extra_callbacks: list[Any] | None,
         started: float, outputs: dict[str, Any] | None = None) -> dict[str, list[float]]:
    """Fit ``model`` with the trial's callbacks; fills ``result.history`` and ``result.epochs`` and returns the
    per-epoch audit scores. ``outputs`` receives the model's outputs on select and audit as the last epoch's
    scoring computed them (under JAX; see :func:`save_predictions`)."""
    audit_history: dict[str, list[float]] = {}
    rows = padded_rows(model, splits)
    audit = scorable(splits.x["audit"], splits.y["audit"], rows) if settings.audit_per_epoch else None
    select = scorable(splits.x["select"], splits.y["select"], rows)
    small_select = not select.large
    result.history = {}
    cbs = _callbacks(settings, listener, f"val_{settings.objective}", started, audit, audit_history,
                     select if small_select else None, seen=result.history, outputs=outputs) + \
        list(extra_callbacks or [])
    if settings.snapshot_epochs:
        from hpo.execution.snapshots import snapshot_callback

        cbs.append(snapshot_callback(settings.snapshot_epochs, settings.snapshot_budget_mb,
                                     lambda m, d: save_predictions(m, splits, d, outputs), trial_dir,
                                     settings.save_models,
                                     fit.epochs, saved_model=user_model))
    if settings.callbacks is not None:
        trial_dir.mkdir(parents=True, exist_ok=True)
        cbs.extend(settings.callbacks(trial_dir))
    fit_started = time.monotonic()
    hist = _call_fit(model, fit, settings, splits.x["train"], splits.y["train"],
                     validation_data=None if small_select else select[:2], verbose=0, callbacks=cbs)
    fit_s = time.monotonic() - fit_started
    result.history = {k: [float(v) for v in vals] for k, vals in hist.history.items()} | audit_history
    result.epochs = len(result.history.get("loss", []))
    result.measures["epoch_seconds"] = fit_s / max(result.epochs, 1)
    losses = result.history.get("loss", [])
    if not losses or any(not math.isfinite(v) for v in losses):
        raise TrialFailed(f"loss became NaN or infinite at epoch {len(losses)}")
    return audit_history


def ends_at_last_scoring(settings: TrialSettings, build: Builder | None = None) -> bool:
    """True when a trial's final weights are the ones its last epoch's select and audit scoring saw: no weights
    restored, no user callbacks, no HyperModel ``fit`` override of ``build`` (any of which might change them
    after that epoch's end)."""
    from hpo.space.fit_params import overrides_fit

    return not settings.restore_best_weights and settings.callbacks is None and \
        (build is None or not overrides_fit(build))


def final_scores(model: Any, result: TrialResult, splits: Splits, settings: TrialSettings,
                  audit_history: Mapping[str, list[float]], build: Builder | None = None) -> None:
    """``result.metrics`` (select_* and audit_*) and ``result.value``, the objective on select. ``build``: the
    trial's builder (a HyperModel whose ``fit`` override may change the weights after the last epoch's scoring:
    then the final model is scored again)."""
    # Without weight restoring or user callbacks, the final weights are the ones the last epoch's
    # validation (select) and audit scores were computed with: reuse them instead of evaluating again.
    reuse = ends_at_last_scoring(settings, build)
    if reuse:
        result.metrics.update({split_name(k): v[-1] for k, v in result.history.items() if k.startswith("val_")})
        result.metrics.update({k: v[-1] for k, v in audit_history.items()})
    for split in ("select", "audit"):
        if reuse and any(k.startswith(f"{split}_") for k in result.metrics):
            continue
        scores = score(model, splits.x[split], splits.y[split], padded_rows(model, splits))
        result.metrics.update({f"{split}_{k}": float(v) for k, v in scores.items()})
    key = f"select_{settings.objective}"
    if key not in result.metrics:
        raise TrialFailed(f"objective metric {settings.objective!r} not reported; the model reports "
                          f"{sorted(k[7:] for k in result.metrics if k.startswith('select_'))}")
    result.value = result.metrics[key]
    if not math.isfinite(result.value):
        raise TrialFailed(f"objective {key} is {result.value}")


def _outputs(model: Any, splits: Splits, split: str, rows: int) -> Any:
    """The model's outputs on one split under JAX: through the program that scores select and audit every epoch
    (:mod:`hpo.execution.forward`), fed placeholder labels whose scores are dropped, when the split fits one
    padded call of ``rows`` rows, so a trial compiles no separate predict step; else the compiled predict step."""
    import keras

    if has_program(model) and count_rows(splits, split) <= rows:
        placeholder = keras.tree.map_structure(np.zeros_like, splits.y[split])  # the test labels stay unread
        xy = scorable(splits.x[split], placeholder, rows)
        if xy.on_device and not xy.large:
            return evaluate(model, xy.x, xy.y, xy.sample_weight, xy.rows)[1].numpy()
    return padded_predict(model, splits.x[split], rows)


def count_rows_of(y: Any) -> int:
    """Rows of an array tree."""
    from hpo.data import leaves

    return int(leaves(y)[0].shape[0])


def padded_rows(model: Any, splits: Splits) -> int | None:
    """The one row count select, audit and test are padded to for scoring and predicting, under a backend that
    compiles per shape (JAX) when the model's numbers are unchanged by padding; None otherwise."""
    if not compiles_per_shape() or not pads_safely(model):
        return None
    return forward_rows([count_rows(splits, n) for n in ("select", "audit", "test")])


def save_predictions(model: Any, splits: Splits, trial_dir: Path, known: Mapping[str, Outputs] | None = None) -> Path:
    """The model's outputs on select, audit and test, saved as ``predictions.npz`` (``split/head`` arrays).
    ``known``: outputs of some splits already computed with the model's present weights (under JAX, by the last
    epoch's scoring: see :func:`fit_model`), used as they are."""
    head_names = [h.name for h in splits.spec.heads]
    arrays: dict[str, np.ndarray] = {}
    names = ("select", "audit", "test")
    rows = forward_rows([count_rows(splits, n) for n in names]) if compiles_per_shape() else None
    if rows is not None:  # JAX: compiled programs on padded splits (eager calls compile every op)
        for split in names:
            kept = (known or {}).get(split)
            out = kept.numpy() if kept is not None else _outputs(model, splits, split, rows)
            for head, arr in flatten_predictions(out, head_names).items():
                arrays[f"{split}/{head}"] = arr.astype("float32")
    else:  # one eager pass over the three splits: one traced function instead of three
        sizes = [count_rows(splits, n) for n in names]
        pred = flatten_predictions(predict(model, concat([splits.x[n] for n in names])), head_names)
        bounds = np.cumsum([0, *sizes])
        for i, split in enumerate(names):
            for head, arr in pred.items():
                arrays[f"{split}/{head}"] = arr[bounds[i]:bounds[i + 1]].astype("float32")
    pred_path = trial_dir / "predictions.npz"
    tmp = trial_dir / "predictions.tmp.npz"
    np.savez_compressed(tmp, **arrays)
    tmp.replace(pred_path)
    return pred_path
