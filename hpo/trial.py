"""One trial: build, fit with callbacks, score ``select`` and ``audit``, save logits and the model.

The runner never raises for a bad trial: exceptions, NaN losses and budgets end
in a :class:`TrialResult` with state FAILED and the reason, pruning in state
PRUNED, so the study goes on.
"""

from __future__ import annotations

import enum
import logging
import math
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Protocol

import numpy as np

from hpo.data import Splits, concat, leaves
from hpo.errors import TrialFailed, TrialPruned
from hpo.repro import seed_everything
from hpo.space import Builder, SearchSpace, call_builder

log = logging.getLogger(__name__)


class TrialState(str, enum.Enum):
    COMPLETE = "COMPLETE"
    PRUNED = "PRUNED"
    FAILED = "FAILED"


@dataclass
class TrialResult:
    """What one trial produced."""

    number: int
    params: dict[str, Any]
    seed: int
    state: TrialState
    value: float | None = None  # the objective on select
    metrics: dict[str, float] = field(default_factory=dict)  # select_* and audit_*
    history: dict[str, list[float]] = field(default_factory=dict)
    epochs: int = 0
    duration_s: float = 0.0
    error: str | None = None
    predictions_path: str | None = None
    model_path: str | None = None
    pack: list[int] | None = None  # trial numbers trained together as one packed model (hpo.packing)


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


def make_model(build: Builder, hp: Any, splits_spec: Any, compile_default: Callable[..., Any] | None = None) -> Any:
    """Build a model; compile it with the space's defaults when the builder did not."""
    model = call_builder(build, hp, splits_spec)
    if model is None:
        raise TrialFailed("the builder returned None instead of a keras.Model")
    if not getattr(model, "compiled", False):
        if compile_default is None:
            from search_spaces.common import compile_for

            compile_default = compile_for
        compile_default(model, hp, splits_spec)
    return model


def _callbacks(settings: TrialSettings, listener: EpochListener | None, monitor: str, started: float,
               audit: tuple[Any, Any, bool] | None, audit_history: dict[str, list[float]],
               select: tuple[Any, Any, bool] | None = None) -> list[Any]:
    """Keras callbacks of a trial. ``select`` and ``audit`` come from :func:`_scorable`: tensors already on the
    backend's device when small (one ``test_on_batch`` each), NumPy otherwise (``evaluate``)."""
    import keras

    class _StopOnNaN(keras.callbacks.TerminateOnNaN):
        # Keras runs batch-end callbacks on a helper thread only when every callback says it is safe there;
        # TerminateOnNaN does not, so each batch's loss was pulled to Python on the training thread.
        async_safe = True

    class _Listen(keras.callbacks.Callback):
        """Scores select (as ``val_*``, when fit is not given validation data) and audit (for reports only),
        forwards epoch logs (tracking, pruning), enforces the time budget."""

        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            if select is not None and logs is not None:
                # Written into Keras' own logs dict: the callbacks after this one (EarlyStopping, the user's,
                # History) see val_* exactly as if fit had validated. One test_on_batch call instead of fit's
                # per-epoch evaluate, which builds a fresh data pipeline and callback list every epoch.
                logs.update({f"val_{k}": v for k, v in _score_on_batch(self.model, select).items()})
            logs = dict(logs or {})
            if audit is not None:
                # Never seen by the pruner or the sampler: they only read val_* (select).
                scores = score(self.model, audit[0], audit[1]) if audit[2] else _score_on_batch(self.model, audit)
                for k, v in scores.items():
                    audit_history.setdefault(f"audit_{k}", []).append(float(v))
                    logs[f"audit_{k}"] = float(v)
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


ONE_BATCH_BYTES = 64 * 2**20  # inputs up to this size are scored and predicted in one call


def _nbytes(x: Any) -> int:
    return int(sum(np.asarray(a).nbytes for a in leaves(x)))


def score(model: Any, x: Any, y: Any) -> dict[str, float]:
    """The compiled loss and metrics on (x, y). Small splits go through ``test_on_batch``: ``evaluate`` builds
    a new tf.data pipeline on every call, which cost ~0.1 s per epoch per split on small data."""
    if _nbytes(x) <= ONE_BATCH_BYTES:
        return {k: float(v) for k, v in model.test_on_batch(x, y, return_dict=True).items()}
    return {k: float(v) for k, v in model.evaluate(x, y, batch_size=1024, verbose=0, return_dict=True).items()}


def _score_on_batch(model: Any, xy: tuple[Any, ...]) -> dict[str, float]:
    return {k: float(v) for k, v in model.test_on_batch(xy[0], xy[1], return_dict=True).items()}


def _scorable(x: Any, y: Any) -> tuple[Any, Any, bool]:
    """``(x, y, large)``: a split small enough for one ``test_on_batch`` as backend tensors, made once per trial
    instead of converting the NumPy arrays on every epoch's call (~0.5 ms of a 1.5 ms call on CPU; a copy to the
    accelerator each time on GPU); a large one stays NumPy and is scored with ``evaluate``."""
    if _nbytes(x) > ONE_BATCH_BYTES:
        return x, y, True
    import keras

    try:
        return (keras.tree.map_structure(keras.ops.convert_to_tensor, x),
                keras.tree.map_structure(keras.ops.convert_to_tensor, y), False)
    except Exception:  # inputs the backend holds no tensor type for (strings on JAX, say): scored as NumPy
        return x, y, False


def predict(model: Any, x: Any, batch_size: int = 1024) -> Any:
    """The model's outputs on ``x``, called eagerly chunk by chunk: a fresh model's ``predict`` traces a
    function first (~0.3 s per trial on CPU), which a forward pass on a few thousand rows does not need."""
    import keras

    n = int(leaves(x)[0].shape[0])
    from hpo.data import take

    try:
        parts = [model(take(x, np.arange(i, min(i + batch_size, n))), training=False) for i in range(0, n, batch_size)]
    except Exception:  # a model that cannot be called eagerly on arrays: Keras' own predict
        return model.predict(x, batch_size=batch_size, verbose=0)
    parts = [keras.tree.map_structure(lambda t: keras.ops.convert_to_numpy(t), p) for p in parts]
    return keras.tree.map_structure(lambda *a: np.concatenate(a, axis=0), *parts)


def _flatten_predictions(pred: Any, head_names: list[str]) -> dict[str, np.ndarray]:
    if isinstance(pred, dict):
        return {k: np.asarray(v) for k, v in pred.items()}
    if isinstance(pred, (list, tuple)):
        return {h: np.asarray(p) for h, p in zip(head_names, pred)}
    return {head_names[0]: np.asarray(pred)}


def run_trial(
    *,
    number: int,
    params: Mapping[str, Any],
    seed: int,
    build: Builder,
    space: SearchSpace,
    splits: Splits,
    settings: TrialSettings,
    trial_dir: Path,
    listener: EpochListener | None = None,
    epochs: int | None = None,
    extra_callbacks: list[Any] | None = None,
) -> TrialResult:
    """Train and score one configuration; never raises for a failing trial."""
    import keras

    started = time.monotonic()
    result = TrialResult(number=number, params=dict(params), seed=seed, state=TrialState.FAILED)
    model = None
    try:
        seed_everything(seed, settings.deterministic)
        hp = space.hyperparameters_for(params)
        model = make_model(build, hp, splits.spec)
        monitor = f"val_{settings.objective}"
        audit_history: dict[str, list[float]] = {}
        audit = _scorable(splits.x["audit"], splits.y["audit"]) if settings.audit_per_epoch else None
        select = _scorable(splits.x["select"], splits.y["select"])
        small_select = not select[2]
        cbs = _callbacks(settings, listener, monitor, started, audit, audit_history,
                         select if small_select else None) + list(extra_callbacks or [])
        if settings.callbacks is not None:
            trial_dir.mkdir(parents=True, exist_ok=True)
            cbs.extend(settings.callbacks(trial_dir))
        hist = model.fit(
            splits.x["train"], splits.y["train"],
            validation_data=None if small_select else select[:2],
            epochs=epochs or settings.epochs, batch_size=settings.batch_size, verbose=0, callbacks=cbs,
        )
        result.history = {k: [float(v) for v in vals] for k, vals in hist.history.items()} | audit_history
        result.epochs = len(result.history.get("loss", []))
        losses = result.history.get("loss", [])
        if not losses or any(not math.isfinite(v) for v in losses):
            raise TrialFailed(f"loss became NaN or infinite at epoch {len(losses)}")
        # Without weight restoring or user callbacks, the final weights are the ones the last epoch's
        # validation (select) and audit scores were computed with: reuse them instead of evaluating again.
        reuse = not settings.restore_best_weights and settings.callbacks is None
        if reuse:
            result.metrics.update({f"select_{k[4:]}": v[-1] for k, v in result.history.items() if k.startswith("val_")})
            result.metrics.update({k: v[-1] for k, v in audit_history.items()})
        for split_name in ("select", "audit"):
            if reuse and any(k.startswith(f"{split_name}_") for k in result.metrics):
                continue
            scores = score(model, splits.x[split_name], splits.y[split_name])
            result.metrics.update({f"{split_name}_{k}": float(v) for k, v in scores.items()})
        key = f"select_{settings.objective}"
        if key not in result.metrics:
            raise TrialFailed(f"objective metric {settings.objective!r} not reported; the model reports "
                              f"{sorted(k[7:] for k in result.metrics if k.startswith('select_'))}")
        result.value = result.metrics[key]
        if not math.isfinite(result.value):
            raise TrialFailed(f"objective {key} is {result.value}")
        trial_dir.mkdir(parents=True, exist_ok=True)
        head_names = [h.name for h in splits.spec.heads]
        arrays: dict[str, np.ndarray] = {}
        # One predict call over the three splits: one traced function instead of three.
        names = ("select", "audit", "test")
        sizes = [count_rows(splits, n) for n in names]
        pred = _flatten_predictions(predict(model, concat([splits.x[n] for n in names])), head_names)
        bounds = np.cumsum([0, *sizes])
        for i, split_name in enumerate(names):
            for head, arr in pred.items():
                arrays[f"{split_name}/{head}"] = arr[bounds[i]:bounds[i + 1]].astype("float32")
        pred_path = trial_dir / "predictions.npz"
        tmp = trial_dir / "predictions.tmp.npz"
        np.savez_compressed(tmp, **arrays)
        tmp.replace(pred_path)
        result.predictions_path = str(pred_path)
        if settings.save_models:
            model_path = trial_dir / "model.keras"
            model.save(model_path)
            result.model_path = str(model_path)
        result.state = TrialState.COMPLETE
    except TrialPruned as exc:
        result.state = TrialState.PRUNED
        result.error = str(exc) or "pruned"
    except TrialFailed as exc:
        result.error = str(exc)
    except Exception as exc:  # a bad trial must not end the study
        result.error = f"{type(exc).__name__}: {exc}"
        log.debug("trial %d failed:\n%s", number, traceback.format_exc())
    finally:
        result.duration_s = time.monotonic() - started
        del model
        release_memory()
    return result


class _CollectionBudget:
    """When to run a full garbage collection between trials.

    Keras' ``clear_session()`` runs ``gc.collect()`` each time. A full collection walks every object
    in the process, and TensorFlow's tracing leaves thousands behind per trial, so on small trials it
    came to 0.6-1.2 s per trial, more than the training (experiments/RESULTS.md, overhead). Here a full
    collection runs only once the training time since the last one is at least ``RATIO`` times what
    the last collection took: at most ~1% of wall time, and after every trial when trials are long
    (where the models it frees, and their accelerator memory, are large). Python's own generational
    collector keeps running in between, and :func:`frozen_heap` keeps a study's collections to what
    its trials made (0.1 s instead of 0.3-0.4 s each on 2 cores).
    """

    RATIO = 100.0
    FIRST_COST_S = 0.1  # assumed cost before the first collection is measured (0.1-1.2 s seen on 2 CPU cores)

    def __init__(self) -> None:
        self.last_cost_s = self.FIRST_COST_S
        self.since = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self.since >= self.RATIO * self.last_cost_s

    def collect(self) -> None:
        import gc

        t0 = time.monotonic()
        gc.collect()
        self.since = time.monotonic()
        self.last_cost_s = self.since - t0


_GC = _CollectionBudget()


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep the objects that exist on entry (imported modules, TensorFlow's and Keras' own state, the data)
    out of the garbage collector's walks until exit.

    Every full collection walks every tracked object; with TensorFlow and Keras imported that is ~400,000
    objects before the first trial, and a collection took 0.3-0.4 s on 2 cores, 0.1 s with them frozen
    (``gc.freeze``). Cyclic garbage that already existed on entry is collected after exit instead of during
    the block. A process that froze objects itself is left as it is."""
    import gc

    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def release_memory(force: bool = False) -> None:
    """Drop Keras' global state after a trial; collect garbage when :class:`_CollectionBudget` allows."""
    import keras

    keras.backend.clear_session(free_memory=False)
    if force or _GC.due():
        _GC.collect()


def count_rows(splits: Splits, split: str) -> int:
    return int(leaves(splits.y[split])[0].shape[0])
