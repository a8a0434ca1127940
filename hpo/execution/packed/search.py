"""Packed trials: the trials of a search that share an architecture train as one packed model (``executor.pack``).

A small model leaves an accelerator (or a CPU's vector units) mostly idle, and each trial pays Keras' build,
tracing and compilation again. With ``executor.pack: N`` the study asks its engine for up to N trials at a
time, groups those whose shape parameters agree (layers, activation, batch normalization, optimizer; see
:data:`hpo.execution.packed.spec.SHAPE_PARAMS`) and trains each group as one model whose weights carry a member axis
(:mod:`hpo.execution.packed`). Every member keeps what makes it its own trial: its seed (initial weights), width
(members of different ``units`` are held at the next power of two of the widest and masked to their own, exactly
as their narrower models train), learning rate, dropout rate and L2; its per-epoch metrics on select and audit go to its own MLflow run and to the
pruner; its logits and its model (unpacked to plain Keras layers) are saved like any trial's.

How trials come to share an architecture: with Optuna, the first trial of a pack is sampled freely and the
others are enqueued with its shape parameters fixed (Optuna's partial ``enqueue_trial``), so the sampler picks
their width, learning rate, dropout and L2; with Hyperopt and KerasTuner, the asked trials are grouped as they come
(packs form where the space fixes the shape parameters or offers few of them).

What members share: the order of the training rows in each epoch (one shuffle, seeded by the pack's first
trial) and the number of epochs. A trial's record names its pack (``pack`` in ``result.json``) so it can be
reproduced. Only the ``mlp`` space on one multiclass head packs; :func:`check` says why not otherwise.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import keras
import numpy as np

from ensembles.metrics import classification_metrics, softmax
from hpo.config import StudyConfig
from hpo.data import Splits
from hpo.errors import ConfigError, TrialPruned
from hpo.execution.packed.model import build_packed_mlp, unpack
from hpo.execution.packed.optimizers import PACKED_OPTIMIZERS
from hpo.execution.packed.spec import SHAPE_PARAMS, PackedMLPSpec
from hpo.repro import seed_everything
from hpo.space import SearchSpace
from hpo.execution.memory import release_memory, start_trial_memory
from hpo.space.fit_params import FIT_PARAMS
from hpo.execution.packed.rows import class_labels, flat_rows
from hpo.execution.packed.reuse import compiled_pack
from hpo.execution.scoring import predict
from hpo.execution.shapes import PaddedEpochs, forward_rows, padded_predict, padding_fill
from hpo.execution.xla import compiles_per_shape, host_initialisers
from hpo.execution.trial import TrialSettings
from hpo.results import TrialResult, TrialState

Listener = Callable[[int, Mapping[str, float]], None]
PACK_METRICS = ("accuracy", "loss")
SPLITS = ("train", "select", "audit", "test")


def check(cfg: StudyConfig, splits: Splits, space: SearchSpace, *, builtin_builder: bool) -> None:
    """Refuse ``executor.pack > 1`` before any trial runs when this study cannot pack, naming what to change."""
    if cfg.executor.pack <= 1:
        return
    where = "executor.pack"
    if cfg.space.builder != "mlp" or not builtin_builder:
        raise ConfigError(where, f"packed trials cover the built-in 'mlp' builder only (this study uses "
                                 f"{cfg.space.builder!r}{'' if builtin_builder else ' with a builder given from Python'}); "
                                 "set executor.pack: 1")
    if len(splits.spec.inputs) != 1 or len(splits.spec.heads) != 1 or splits.spec.heads[0].kind != "multiclass":
        raise ConfigError(where, "packed trials need one input and one multiclass output head; set executor.pack: 1")
    if cfg.objective.metric not in PACK_METRICS:
        raise ConfigError(where, f"packed trials report {', '.join(PACK_METRICS)}; objective.metric is "
                                 f"{cfg.objective.metric!r}: set executor.pack: 1")
    for field_name, value in (("training.early_stopping_patience", cfg.training.early_stopping_patience),
                              ("training.callbacks", cfg.training.callbacks or None)):
        if value is not None:
            raise ConfigError(field_name, "is not supported with packed trials (executor.pack > 1): members "
                                          "share one fit; remove it or set executor.pack: 1")
    opt = next((p for p in space.params if p.name == "optimizer"), None)
    choices = list(opt.grid or ()) if opt is not None and opt.kind in ("choice", "fixed") else []
    if opt is not None and opt.kind == "fixed":
        choices = [opt.default]
    bad = [c for c in choices if str(c).lower() not in PACKED_OPTIMIZERS]
    if bad:
        raise ConfigError("space.params.optimizer", f"packed trials support the optimizers {sorted(PACKED_OPTIMIZERS)}, "
                                                   f"not {bad}; narrow the choice or set executor.pack: 1")


def shape_key(params: Mapping[str, Any], epochs: int | None) -> tuple[Any, ...] | None:
    """What members of one pack must share: epochs, batch size and the shape parameters (batch normalization is
    one). None would mark a trial that cannot pack (:func:`group` leaves it alone); every ``mlp`` trial packs today."""
    # Members share one fit: a searched batch size or epoch count (training.*) must be equal too.
    return (epochs or params.get("epochs"), params.get("batch_size"), *(params.get(k) for k in SHAPE_PARAMS))


def shape_params(space: SearchSpace, params: Mapping[str, Any]) -> dict[str, Any]:
    """The searched shape parameters of ``params`` (what later members of its pack are enqueued with)."""
    searched = {p.name for p in space.params if p.kind != "fixed"}
    return {k: params[k] for k in (*SHAPE_PARAMS, *FIT_PARAMS) if k in searched and k in params}


def group(items: Sequence[Any], key: Callable[[Any], tuple[Any, ...] | None]) -> list[list[Any]]:
    """Items with the same key together, in order of first appearance; unpackable items alone."""
    groups: dict[Any, list[Any]] = {}
    order: list[Any] = []
    for i, item in enumerate(items):
        k = key(item)
        k = ("alone", i) if k is None else k
        if k not in groups:
            groups[k] = []
            order.append(k)
        groups[k].append(item)
    return [groups[k] for k in order]


def train_pack(*, numbers: Sequence[int], params: Sequence[Mapping[str, Any]], seeds: Sequence[int],
               listeners: Sequence[Listener], trial_dirs: Sequence[Path], splits: Splits, settings: TrialSettings,
               epochs: int | None = None) -> list[TrialResult]:
    """Train one pack of trials; one :class:`TrialResult` per member, in the order given. Never raises for a
    failing trial: a failure of the packed fit fails every member with the reason."""
    started = time.monotonic()
    results = [TrialResult(number=n, params=dict(p), seed=s, state=TrialState.FAILED)
               for n, p, s in zip(numbers, params, seeds)]
    head = splits.spec.heads[0]
    model = None
    start_trial_memory()
    try:
        seed_everything(seeds[0], settings.deterministic)
        x, y = _rows(splits)
        spec = PackedMLPSpec.from_params([dict(p) for p in params], input_shape=(x["train"].shape[1],),
                                         n_classes=head.n_classes, seeds=list(seeds), head_name=head.name)
        epochs, batch_size = settings.for_trial(params[0], epochs)  # shared by the pack (see shape_key)
        with host_initialisers():  # initial weights, optimizer slots, unpacked members: drawn on the host (JAX)
            # A pack of shapes this process compiled before trains that compiled model (hpo.execution.packed.reuse)
            model = compiled_pack(build_packed_mlp(spec, member_metrics=True), spec, batch_size, True)
            reports = _Reports(histories=[{} for _ in results])
            per_epoch = ("select", "audit") if settings.audit_per_epoch else ("select",)
            rows = split_forward_rows(x)
            cbs = [_MemberEpochs(reports, listeners, {s: (x[s], y[s]) for s in per_epoch}, started,
                                 settings.timeout_s, rows)]
            fit_pack(model, spec, x["train"], y["train"], epochs=epochs, batch_size=batch_size, callbacks=cbs)
            _settle(results, model, spec, x, y, reports, trial_dirs=trial_dirs, settings=settings,
                    started=started, rows=rows)
    except Exception as exc:  # the packed fit itself failed: every member not already settled fails with it
        for r in results:
            if r.state is TrialState.FAILED and r.error is None:
                r.error = f"packed fit failed: {type(exc).__name__}: {exc}"
                r.duration_s = (time.monotonic() - started) / len(results)
    finally:
        del model
        release_memory()
    return results


def _rows(splits: Splits) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Every split's inputs as float32 rows and its labels as integer classes: what a packed MLP takes."""
    head = splits.spec.heads[0]
    return ({s: flat_rows(splits.x[s]) for s in SPLITS},
            {s: class_labels(splits.y[s], head.one_hot) for s in SPLITS})


def fit_pack(model: Any, spec: PackedMLPSpec, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int,
             callbacks: Sequence[Any] = ()) -> None:
    """Train the packed ``model`` on ``x``/``y``: under JAX with one train step shape (the last partial batch
    padded, see hpo.execution.shapes; with batch normalization the padding rows are NaN, which the model's
    ``PaddingRows`` keeps out of the batch statistics), shuffled by the dataset (Keras' own shuffle draws once
    more for a fresh model than for a reused one, hpo.execution.packed.reuse)."""
    if len(y) % batch_size and compiles_per_shape():
        fill = padding_fill(model)
        data = PaddedEpochs(x, y, batch_size, seed=int(np.random.randint(2**31 - 1)),
                            pad=fill is not None or not spec.batchnorm, fill=fill)
        model.fit(data, epochs=epochs, shuffle=False, verbose=0, callbacks=list(callbacks))
    else:
        model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=list(callbacks))


def split_forward_rows(x: Mapping[str, np.ndarray]) -> int | None:
    """The one row count select, audit and test are padded to under JAX (see hpo.execution.shapes); else None."""
    return forward_rows([len(x[s]) for s in ("select", "audit", "test")]) if compiles_per_shape() else None


def forward_logits(model: Any, xs: np.ndarray, rows: int | None) -> np.ndarray:
    """(members, n, classes). With ``rows`` (JAX), from the compiled ``predict_on_batch`` on ``rows``-row chunks,
    one program for every split (eager ops compile per shape); otherwise an eager forward pass (Keras' predict
    would retrace for each split's size)."""
    if rows is not None:
        return np.swapaxes(np.asarray(padded_predict(model, xs, rows)), 0, 1)
    return np.swapaxes(np.asarray(predict(model, xs)), 0, 1)


def _scores(z: np.ndarray, labels: np.ndarray) -> list[dict[str, float]]:
    """Each member's accuracy and loss from its logits ``z[m]``."""
    out = []
    for zm in z:
        scores = classification_metrics(softmax(zm.astype("float64")), labels)
        # The same numbers Keras reports for a trial: accuracy, and the loss as mean cross-entropy.
        out.append({"accuracy": float(scores["accuracy"]), "loss": float(scores["nll"])})
    return out


@dataclass
class _Reports:
    """What each member reported, epoch by epoch, and why a member stopped reporting (pruned or NaN)."""

    histories: list[dict[str, list[float]]]
    done: dict[int, tuple[TrialState, str]] = field(default_factory=dict)


class _MemberEpochs(keras.callbacks.Callback):
    """Splits the packed epoch into one epoch per member: its metrics, its listener, its pruning."""

    def __init__(self, reports: _Reports, listeners: Sequence[Listener],
                 scored_splits: Mapping[str, tuple[np.ndarray, np.ndarray]], started: float,
                 timeout_s: float | None, rows: int | None = None) -> None:
        super().__init__()
        self.rows = rows  # the padded forward size under JAX (see forward_logits)
        self.reports = reports
        self.listeners = listeners
        self.scored_splits = scored_splits  # split -> (rows, labels), scored after every epoch
        self.started = started
        self.timeout_s = timeout_s

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        members = len(self.listeners)
        scored = {s: _scores(forward_logits(self.model, xs, self.rows), ys) for s, (xs, ys) in self.scored_splits.items()}
        for m in range(members):
            if m in self.reports.done:
                continue
            mlogs = {"loss": float(logs.get(f"member_{m}_loss", math.nan)),
                     "accuracy": float(logs.get(f"member_{m}_accuracy", math.nan))}
            for k, v in scored["select"][m].items():
                mlogs[f"val_{k}"] = v
            for k, v in scored.get("audit", [{}] * members)[m].items():
                mlogs[f"audit_{k}"] = v
            self._report(m, epoch, mlogs)
        if self.timeout_s is not None and time.monotonic() - self.started > self.timeout_s:
            self.model.stop_training = True
        if len(self.reports.done) == members:
            self.model.stop_training = True

    def _report(self, m: int, epoch: int, mlogs: dict[str, float]) -> None:
        """Member ``m``'s epoch to its history and its listener; a NaN loss or a pruning ends its reports."""
        for k, v in mlogs.items():
            self.reports.histories[m].setdefault(k, []).append(v)
        if not math.isfinite(mlogs["loss"]):
            self.reports.done[m] = (TrialState.FAILED, f"loss became NaN or infinite at epoch {epoch + 1}")
            return
        try:
            self.listeners[m](epoch, mlogs)
        except TrialPruned as exc:
            self.reports.done[m] = (TrialState.PRUNED, str(exc) or "pruned")


def _settle(results: list[TrialResult], model: Any, spec: PackedMLPSpec, x: Mapping[str, np.ndarray],
            y: Mapping[str, np.ndarray], reports: _Reports, *, trial_dirs: Sequence[Path], settings: TrialSettings,
            started: float, rows: int | None = None) -> None:
    """Every member's result after the fit: its history, and its final metrics, predictions and model (or why not)."""
    logits = {s: forward_logits(model, x[s], rows) for s in ("select", "audit", "test")}
    final = {s: _scores(logits[s], y[s]) for s in ("select", "audit")}
    unpacked = unpack(model, spec=spec) if settings.save_models else []
    wall = time.monotonic() - started
    for m, r in enumerate(results):
        r.history = reports.histories[m]
        r.epochs = len(reports.histories[m].get("loss", []))
        r.duration_s = wall / len(results)
        if m in reports.done:
            r.state, r.error = reports.done[m]
            continue
        # Members still reporting at the end: their last epoch's weights are the final ones.
        r.metrics = {f"{s}_{k}": v for s in ("select", "audit") for k, v in final[s][m].items()}
        r.value = r.metrics.get(f"select_{settings.objective}")
        if r.value is None or not math.isfinite(r.value):
            r.error = f"objective select_{settings.objective} is {r.value}"
            continue
        _save_member(r, trial_dirs[m], {f"{s}/{spec.head_name}": z[m] for s, z in logits.items()},
                     unpacked[m] if settings.save_models else None)
        r.state = TrialState.COMPLETE


def _save_member(result: TrialResult, trial_dir: Path, predictions: Mapping[str, np.ndarray],
                 model: keras.Model | None) -> None:
    """A member's predictions (written whole, then renamed) and, when given, its unpacked model."""
    trial_dir.mkdir(parents=True, exist_ok=True)
    tmp = trial_dir / "predictions.tmp.npz"
    np.savez_compressed(tmp, **{k: z.astype("float32") for k, z in predictions.items()})
    tmp.replace(trial_dir / "predictions.npz")
    result.predictions_path = str(trial_dir / "predictions.npz")
    if model is not None:
        model.save(trial_dir / "model.keras")
        result.model_path = str(trial_dir / "model.keras")
