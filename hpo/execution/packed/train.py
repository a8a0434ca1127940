"""Train a packed population in one ``fit`` and read the result per member: histories, logits and scores;
with the FLOP count and learning-rate draws the benchmarks and tests use."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import keras
import numpy as np

from hpo.execution.packed.model import build_packed_mlp, member_logits
from hpo.execution.packed.spec import PackedMLPSpec


def evaluate_members(logits: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Per-member accuracy and mean cross-entropy from ``(members, n, classes)`` logits and labels ``(n,)``."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y).astype(np.int64)
    acc = (z.argmax(-1) == y[None]).mean(1)
    zmax = z.max(-1, keepdims=True)
    logp = z - zmax - np.log(np.exp(z - zmax).sum(-1, keepdims=True))
    loss = -np.take_along_axis(logp, y[None, :, None], axis=-1)[..., 0].mean(1)
    return {"accuracy": acc.tolist(), "loss": loss.tolist(), "mean_accuracy": float(acc.mean()),
            "median_accuracy": float(np.median(acc))}


def member_histories(history: dict[str, list[float]], members: int) -> list[dict[str, list[float]]]:
    """Split a packed ``History.history`` (``member_{m}_accuracy``, ``val_member_{m}_loss``, ...) per member."""
    out: list[dict[str, list[float]]] = [{} for _ in range(members)]
    for key, values in history.items():
        prefix = "val_" if key.startswith("val_") else ""
        rest = key[len(prefix):]
        if not rest.startswith("member_"):
            continue
        index, _, metric = rest[len("member_"):].partition("_")
        if index.isdigit() and int(index) < members:
            out[int(index)][prefix + metric] = [float(v) for v in values]
    return out


@dataclass
class PackedResult:
    """What :func:`train_packed` returns."""

    model: keras.Model
    spec: PackedMLPSpec
    histories: list[dict[str, list[float]]]  # one per member: accuracy, loss, val_accuracy, val_loss per epoch
    history: dict[str, list[float]]  # the packed History (summed loss, member_* metrics)
    logits: dict[str, np.ndarray]  # name -> (members, n, classes), for each array of predict_on
    wall_s: float  # build + compile + fit + predict
    fit_s: float


def train_packed(spec: PackedMLPSpec, x_train: Any, y_train: Any, *, epochs: int = 10, batch_size: int = 128,
                 validation_data: tuple[Any, Any] | None = None, predict_on: dict[str, Any] | None = None,
                 shuffle: bool = True, member_metrics: bool = True, callbacks: Sequence[Any] = (),
                 verbose: int = 0, jit_compile: Any = "auto") -> PackedResult:
    """Build, compile and fit the packed population; return per-member histories and logits on ``predict_on``.

    ``x_train``/``y_train`` are shared by all members (``(n, *input_shape)``, labels ``(n,)``) or, with
    ``spec.per_member_inputs``, per member (``(n, members, *input_shape)``, labels ``(n, members)``).
    Seed the process (``keras.utils.set_random_seed``) for a reproducible shuffle.
    """
    t0 = time.perf_counter()
    model = build_packed_mlp(spec, member_metrics=member_metrics, jit_compile=jit_compile)
    t_fit = time.perf_counter()
    hist = model.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, validation_data=validation_data,
                     shuffle=shuffle, callbacks=list(callbacks), verbose=verbose)
    fit_s = time.perf_counter() - t_fit
    logits = {name: member_logits(model, x, batch_size=max(batch_size, 1024)) for name, x in (predict_on or {}).items()}
    wall = time.perf_counter() - t0
    history = {k: [float(v) for v in vs] for k, vs in hist.history.items()}
    return PackedResult(model=model, spec=spec, histories=member_histories(history, spec.members), history=history,
                        logits=logits, wall_s=wall, fit_s=fit_s)


def matmul_flops(spec: PackedMLPSpec, n_samples: int, epochs: int) -> float:
    """Dense-layer matmul FLOPs of training: ``2 * n * in * out`` per layer per member, x3 (forward + backward)."""
    dims = [int(np.prod(spec.input_shape))] + [spec.units] * spec.layers + [spec.n_classes]
    per_sample = sum(2 * a * b for a, b in zip(dims[:-1], dims[1:]))
    return float(3 * per_sample * spec.members * n_samples * epochs)


def log_uniform(low: float, high: float, n: int, seed: int = 0) -> list[float]:
    """``n`` learning rates drawn log-uniformly (a search's ``sampling="log"``), for benchmarks and tests."""
    rng = np.random.default_rng(seed)
    return [float(math.exp(v)) for v in rng.uniform(math.log(low), math.log(high), n)]
