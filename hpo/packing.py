"""Packed trials: the trials of a search that share an architecture train as one packed model (``executor.pack``).

A small model leaves an accelerator (or a CPU's vector units) mostly idle, and each trial pays Keras' build,
tracing and compilation again. With ``executor.pack: N`` the study asks its engine for up to N trials at a
time, groups those whose shape parameters agree (layers, units, activation, optimizer; see
:data:`ensembles.packed.SHAPE_PARAMS`) and trains each group as one model whose weights carry a member axis
(:mod:`ensembles.packed`). Every member keeps what makes it its own trial: its seed (initial weights), learning
rate, dropout rate and L2; its per-epoch metrics on select and audit go to its own MLflow run and to the
pruner; its logits and its model (unpacked to plain Keras layers) are saved like any trial's.

How trials come to share an architecture: with Optuna, the first trial of a pack is sampled freely and the
others are enqueued with its shape parameters fixed (Optuna's partial ``enqueue_trial``), so the sampler picks
their learning rate, dropout and L2; with Hyperopt and KerasTuner, the asked trials are grouped as they come
(packs form where the space fixes the shape parameters or offers few of them).

What members share: the order of the training rows in each epoch (one shuffle, seeded by the pack's first
trial) and the number of epochs. A trial's record names its pack (``pack`` in ``result.json``) so it can be
reproduced. Only the ``mlp`` space on one multiclass head packs; :func:`check` says why not otherwise.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from hpo.config import StudyConfig
from hpo.data import Splits
from hpo.errors import ConfigError, TrialPruned
from hpo.space import SearchSpace
from hpo.trial import TrialResult, TrialSettings, TrialState, release_memory

Listener = Callable[[int, Mapping[str, float]], None]
PACK_METRICS = ("accuracy", "loss")


def check(cfg: StudyConfig, splits: Splits, space: SearchSpace, *, in_process: bool, builtin_builder: bool) -> None:
    """Refuse ``executor.pack > 1`` before any trial runs when this study cannot pack, naming what to change."""
    from ensembles.packed_layers import PACKED_OPTIMIZERS

    if cfg.executor.pack <= 1:
        return
    where = "executor.pack"
    if cfg.space.builder != "mlp" or not builtin_builder:
        raise ConfigError(where, f"packed trials cover the built-in 'mlp' builder only (this study uses "
                                 f"{cfg.space.builder!r}{'' if builtin_builder else ' with a builder given from Python'}); "
                                 "set executor.pack: 1")
    if len(splits.spec.inputs) != 1 or len(splits.spec.heads) != 1 or splits.spec.heads[0].kind != "multiclass":
        raise ConfigError(where, "packed trials need one input and one multiclass output head; set executor.pack: 1")
    if not in_process:
        raise ConfigError(where, "packed trials run in the study's own process; set executor.mode: inprocess "
                                 "(or executor.pack: 1 to use worker processes)")
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
    """What members of one pack must share; None for a trial that cannot pack (batch normalization)."""
    from ensembles.packed import SHAPE_PARAMS

    if params.get("batchnorm"):
        return None
    return (epochs, *(params.get(k) for k in SHAPE_PARAMS))


def shape_params(space: SearchSpace, params: Mapping[str, Any]) -> dict[str, Any]:
    """The searched shape parameters of ``params`` (what later members of its pack are enqueued with)."""
    from ensembles.packed import SHAPE_PARAMS

    searched = {p.name for p in space.params if p.kind != "fixed"}
    return {k: params[k] for k in SHAPE_PARAMS if k in searched and k in params}


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
    import keras

    from ensembles.metrics import classification_metrics, softmax
    from ensembles.packed import PackedMLPSpec, build_packed_mlp, unpack
    from hpo.refit import class_labels, flat_rows
    from hpo.repro import seed_everything
    from hpo.trial import predict

    def member_logits(model: Any, xs: np.ndarray) -> np.ndarray:
        """(members, n, classes), from an eager forward pass: Keras' predict would retrace for each split's size."""
        return np.swapaxes(np.asarray(predict(model, xs)), 0, 1)

    started = time.monotonic()
    members = len(numbers)
    results = [TrialResult(number=n, params=dict(p), seed=s, state=TrialState.FAILED)
               for n, p, s in zip(numbers, params, seeds)]
    head = splits.spec.heads[0]
    n_epochs = epochs or settings.epochs
    model = None
    try:
        seed_everything(seeds[0], settings.deterministic)
        x = {s: flat_rows(splits.x[s]) for s in ("train", "select", "audit", "test")}
        y = {s: class_labels(splits.y[s], head.one_hot) for s in ("train", "select", "audit", "test")}
        spec = PackedMLPSpec.from_params([dict(p) for p in params], input_shape=(x["train"].shape[1],),
                                         n_classes=head.n_classes, seeds=list(seeds), head_name=head.name)
        model = build_packed_mlp(spec, member_metrics=True)
        done: dict[int, tuple[TrialState, str]] = {}  # member -> why it stopped reporting (pruned or NaN)
        histories: list[dict[str, list[float]]] = [{} for _ in range(members)]
        splits_per_epoch = ("select", "audit") if settings.audit_per_epoch else ("select",)

        def member_scores(split: str, z: np.ndarray | None = None) -> list[dict[str, float]]:
            z = member_logits(model, x[split]) if z is None else z
            out = []
            for m in range(members):
                scores = classification_metrics(softmax(z[m].astype("float64")), y[split])
                # The same numbers Keras reports for a trial: accuracy, and the loss as mean cross-entropy.
                out.append({"accuracy": float(scores["accuracy"]), "loss": float(scores["nll"])})
            return out

        class _Members(keras.callbacks.Callback):
            """Splits the packed epoch into one epoch per member: its metrics, its listener, its pruning."""

            def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
                logs = logs or {}
                scored = {s: member_scores(s) for s in splits_per_epoch}
                for m in range(members):
                    if m in done:
                        continue
                    mlogs = {"loss": float(logs.get(f"member_{m}_loss", math.nan)),
                             "accuracy": float(logs.get(f"member_{m}_accuracy", math.nan))}
                    for k, v in scored["select"][m].items():
                        mlogs[f"val_{k}"] = v
                    for k, v in scored.get("audit", [{}] * members)[m].items():
                        mlogs[f"audit_{k}"] = v
                    for k, v in mlogs.items():
                        histories[m].setdefault(k, []).append(v)
                    if not math.isfinite(mlogs["loss"]):
                        done[m] = (TrialState.FAILED, f"loss became NaN or infinite at epoch {epoch + 1}")
                        continue
                    try:
                        listeners[m](epoch, mlogs)
                    except TrialPruned as exc:
                        done[m] = (TrialState.PRUNED, str(exc) or "pruned")
                if settings.timeout_s is not None and time.monotonic() - started > settings.timeout_s:
                    self.model.stop_training = True
                if len(done) == members:
                    self.model.stop_training = True

        model.fit(x["train"], y["train"], epochs=n_epochs, batch_size=settings.batch_size, verbose=0,
                  callbacks=[_Members()])
        logits = {s: member_logits(model, x[s]) for s in ("select", "audit", "test")}
        final = {s: member_scores(s, logits[s]) for s in ("select", "audit")}
        unpacked = unpack(model, spec=spec) if settings.save_models else []
        wall = time.monotonic() - started
        for m, r in enumerate(results):
            r.history = histories[m]
            r.epochs = len(histories[m].get("loss", []))
            r.duration_s = wall / members
            if m in done:
                r.state, r.error = done[m]
                continue
            # Members still reporting at the end: their last epoch's weights are the final ones.
            r.metrics = {f"{s}_{k}": v for s in ("select", "audit") for k, v in final[s][m].items()}
            r.value = r.metrics.get(f"select_{settings.objective}")
            if r.value is None or not math.isfinite(r.value):
                r.error = f"objective select_{settings.objective} is {r.value}"
                continue
            d = trial_dirs[m]
            d.mkdir(parents=True, exist_ok=True)
            tmp = d / "predictions.tmp.npz"
            np.savez_compressed(tmp, **{f"{s}/{head.name}": logits[s][m].astype("float32") for s in logits})
            tmp.replace(d / "predictions.npz")
            r.predictions_path = str(d / "predictions.npz")
            if settings.save_models:
                unpacked[m].save(d / "model.keras")
                r.model_path = str(d / "model.keras")
            r.state = TrialState.COMPLETE
    except Exception as exc:  # the packed fit itself failed: every member not already settled fails with it
        for r in results:
            if r.state is TrialState.FAILED and r.error is None:
                r.error = f"packed fit failed: {type(exc).__name__}: {exc}"
                r.duration_s = (time.monotonic() - started) / members
    finally:
        del model
        release_memory()
    return results
