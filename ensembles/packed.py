"""Packed populations: ``members`` MLPs of one architecture trained as one Keras model.

A search (or the course's ensemble of 50) trains many small models one after another; each is too small
to keep a GPU busy, and each pays Keras' model building, tracing and compilation again. Here their Dense
weights get a leading member axis (``ensembles.packed_layers``) so one ``fit`` trains all of them, with
per-member seeds, dropout rates, L2 and learning rates. Each member's gradient and update are exactly
those of its independent training (the loss is the sum of the members' mean losses, the learning rate is
applied per member to the update), which ``tests/test_packed.py`` checks against unpacked Keras models.

What members share: the architecture (layers, units, activation, optimizer kind) and, with shared inputs,
the order of the training data (one shuffle per epoch for all). ``per_member_inputs=True`` gives each member
its own rows instead (inputs ``(batch, members, features)``).

API::

    spec = PackedMLPSpec.from_params(params_list, input_shape=(64,), n_classes=10)   # mlp-space params
    model = build_packed_mlp(spec)                           # compiled keras.Model, output (batch, M, classes)
    result = train_packed(spec, x_train, y_train, epochs=..., batch_size=..., validation_data=(xv, yv),
                          predict_on={"test": x_test})       # PackedResult: model, histories, logits, wall_s
    models = unpack(model)                                   # M standard keras.Model (Dense layers)
    member_logits(model, x)                                  # (M, N, classes)
    evaluate_members(logits, y)                              # per-member accuracy and loss
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import keras
import numpy as np

from ensembles.packed_layers import (
    PackedDense,
    PackedDropout,
    PackedLayer,
    PackedModel,
    PackedSparseCategoricalCrossentropy,
    SwapMemberBatch,
    packed_optimizer,
    unpacked_optimizer,
)

SHAPE_PARAMS = ("layers", "units", "activation", "batchnorm", "optimizer")


@dataclass
class PackedMLPSpec:
    """The ``mlp`` search space's architecture, with the shape-free hyperparameters given per member."""

    input_shape: tuple[int, ...]
    n_classes: int
    seeds: list[int]
    learning_rates: list[float]
    dropouts: list[float] = field(default_factory=list)
    l2s: list[float] = field(default_factory=list)
    layers: int = 2
    units: int = 128
    activation: str = "relu"
    optimizer: str = "adam"
    head_name: str = "digit"
    per_member_inputs: bool = False

    def __post_init__(self) -> None:
        m = len(self.seeds)
        if m < 1:
            raise ValueError("a packed population needs at least one member (one seed each)")
        self.input_shape = tuple(int(d) for d in self.input_shape)
        self.dropouts = list(self.dropouts) or [0.0] * m
        self.l2s = list(self.l2s) or [0.0] * m
        for name in ("learning_rates", "dropouts", "l2s"):
            if len(getattr(self, name)) != m:
                raise ValueError(f"PackedMLPSpec.{name} needs one value per member ({m}); got {getattr(self, name)}")

    @property
    def members(self) -> int:
        return len(self.seeds)

    @classmethod
    def from_params(cls, params: Sequence[dict[str, Any]], *, input_shape: Sequence[int], n_classes: int,
                    seeds: Sequence[int] | None = None, head_name: str = "digit",
                    per_member_inputs: bool = False) -> "PackedMLPSpec":
        """From one ``mlp``-space parameter dict per member (``search_spaces/mlp.py`` names and defaults).

        Shape-changing parameters (layers, units, activation, batchnorm, optimizer) must agree across
        members; ``learning_rate``, ``dropout``, ``use_l2``/``l2`` and the seed may differ.
        """
        params = [dict(p) for p in params]
        if not params:
            raise ValueError("from_params needs one parameter dict per member; got none")
        defaults = {"layers": 2, "units": 128, "activation": "relu", "batchnorm": False, "optimizer": "adam"}
        first = {k: params[0].get(k, defaults[k]) for k in SHAPE_PARAMS}
        for i, p in enumerate(params[1:], start=1):
            other = {k: p.get(k, defaults[k]) for k in SHAPE_PARAMS}
            if other != first:
                raise ValueError(f"member {i} differs from member 0 in a shape parameter: {other} vs {first}; "
                                 "only learning_rate, dropout, l2 and seed may differ within a packed population")
        if first["batchnorm"]:
            raise ValueError("packed MLPs do not support batchnorm (its statistics would need a member axis too)")
        seeds = list(seeds) if seeds is not None else [int(p.get("seed", i)) for i, p in enumerate(params)]
        return cls(
            input_shape=tuple(input_shape), n_classes=int(n_classes), seeds=[int(s) for s in seeds],
            learning_rates=[float(p.get("learning_rate", 1e-3)) for p in params],
            dropouts=[float(p.get("dropout", 0.0)) for p in params],
            l2s=[float(p.get("l2") or 0.0) if p.get("use_l2", False) else 0.0 for p in params],
            layers=int(first["layers"]), units=int(first["units"]), activation=str(first["activation"]),
            optimizer=str(first["optimizer"]), head_name=head_name, per_member_inputs=per_member_inputs)

    def member_params(self, m: int) -> dict[str, Any]:
        """Member ``m``'s hyperparameters in the ``mlp`` space's names (for records and unpacked models)."""
        return {"layers": self.layers, "units": self.units, "activation": self.activation, "batchnorm": False,
                "dropout": self.dropouts[m], "use_l2": self.l2s[m] > 0, "l2": self.l2s[m] or None,
                "optimizer": self.optimizer, "learning_rate": self.learning_rates[m], "seed": self.seeds[m]}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Derived seeds stay below 2**31 - 1: JAX's random keys take uint32 seeds (a trial's seed is up to 2**31, times
# 1009 overflowed them); the bias adds 1. Small member seeds (0..N-1) derive the same seeds as before.
_SEED_RANGE = 2**31 - 1


def _derived_seed(seed: int, offset: int) -> int:
    return (int(seed) * 1009 + offset) % _SEED_RANGE


def _layer_seeds(spec: PackedMLPSpec, layer: int) -> list[int]:
    """Distinct initializer seeds per (member, layer); the bias uses ``seed + 1``."""
    return [_derived_seed(s, 2 * layer) for s in spec.seeds]


def build_packed_mlp(spec: PackedMLPSpec, *, compile: bool = True, member_metrics: bool = True,
                     jit_compile: Any = "auto") -> keras.Model:
    """The packed ``mlp``: input ``(batch, *input_shape)`` (or ``(batch, members, *input_shape)`` with
    ``per_member_inputs``), output logits ``(batch, members, n_classes)``.

    Compiled with the packed optimizer, the summed per-member loss and, with ``member_metrics``, one
    ``member_{m}_accuracy`` and ``member_{m}_loss`` metric per member.
    """
    m = spec.members
    if spec.per_member_inputs:
        inputs = keras.Input((m, *spec.input_shape), name="inputs")
        x = SwapMemberBatch(name="to_member_major")(inputs)
        if len(spec.input_shape) > 1:
            x = keras.layers.Reshape((-1, int(np.prod(spec.input_shape))), name="flatten")(x)
    else:
        inputs = keras.Input(spec.input_shape, name="inputs")
        x = keras.layers.Flatten(name="flatten")(inputs) if len(spec.input_shape) > 1 else inputs
    for i in range(spec.layers):
        x = PackedDense(m, spec.units, activation=spec.activation, l2=spec.l2s, seeds=_layer_seeds(spec, i),
                        name=f"dense_{i}")(x)
        if any(r > 0 for r in spec.dropouts):
            x = PackedDropout(spec.dropouts, seed=_derived_seed(spec.seeds[0], 2 * i + 1), name=f"dropout_{i}")(x)
    x = PackedDense(m, spec.n_classes, seeds=_layer_seeds(spec, spec.layers), name=spec.head_name)(x)
    outputs = SwapMemberBatch(name="to_batch_major")(x)
    model = PackedModel(inputs, outputs, name="packed_mlp")
    if compile:
        if member_metrics:
            model.track_members(m)
        model.compile(optimizer=packed_optimizer(spec.optimizer, spec.learning_rates),
                      loss=PackedSparseCategoricalCrossentropy(from_logits=True), jit_compile=jit_compile)
    return model


def member_logits(model: keras.Model, x: Any, batch_size: int = 1024) -> np.ndarray:
    """Every member's logits on ``x``: ``(members, n, classes)``."""
    z = model.predict(x, batch_size=batch_size, verbose=0)
    return np.swapaxes(np.asarray(z), 0, 1)


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


def unpack(model: keras.Model, *, compile: bool = True, spec: PackedMLPSpec | None = None) -> list[keras.Model]:
    """One standard Keras model per member (``Dense``/``Dropout`` layers, same names), with its weights.

    The packed model must be a chain (each layer feeds the next), as :func:`build_packed_mlp` makes.
    ``SwapMemberBatch`` layers are dropped: an unpacked model takes ``(batch, *input_shape)``. With
    ``compile``, each model is compiled like an ``mlp`` trial: its own optimizer and learning rate (from
    the packed optimizer, or from ``spec``), sparse cross-entropy on logits, accuracy.
    """
    chain = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    packed = [layer for layer in chain if isinstance(layer, PackedLayer)]
    if not packed:
        raise ValueError("unpack: the model has no packed layers")
    members = packed[0].members
    in_shape = tuple(model.inputs[0].shape[1:])
    per_member = any(isinstance(layer, SwapMemberBatch) for layer in chain[:1])
    if per_member:
        in_shape = in_shape[1:]
    opt = getattr(model, "optimizer", None)
    rates = list(getattr(opt, "member_learning_rates", ())) if opt is not None else []
    if spec is not None:
        rates = list(spec.learning_rates)
    opt_name = spec.optimizer if spec is not None else (type(opt).__name__.replace("Packed", "").lower() if opt else "adam")
    models = []
    for m in range(members):
        inputs = keras.Input(in_shape, name=model.inputs[0].name if hasattr(model.inputs[0], "name") else "inputs")
        x = inputs
        assignments = []
        for layer in chain:
            if isinstance(layer, SwapMemberBatch):
                continue
            if isinstance(layer, PackedLayer):
                new = layer.member_layer(m)
                x = new(x)
                assignments.append((new, layer.member_weights(m)))
            elif isinstance(layer, keras.layers.Reshape) and per_member:
                x = keras.layers.Flatten(name=layer.name)(x)
            else:
                x = layer.__class__.from_config(layer.get_config())(x)
        member = keras.Model(inputs, x, name=f"{model.name}_member_{m}")
        for new, weights in assignments:
            if weights:
                new.set_weights(weights)
        if compile:
            lr = rates[m] if rates else 1e-3
            member.compile(optimizer=unpacked_optimizer(opt_name, lr),
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                           metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
        models.append(member)
    return models


def matmul_flops(spec: PackedMLPSpec, n_samples: int, epochs: int) -> float:
    """Dense-layer matmul FLOPs of training: ``2 * n * in * out`` per layer per member, x3 (forward + backward)."""
    dims = [int(np.prod(spec.input_shape))] + [spec.units] * spec.layers + [spec.n_classes]
    per_sample = sum(2 * a * b for a, b in zip(dims[:-1], dims[1:]))
    return float(3 * per_sample * spec.members * n_samples * epochs)


def log_uniform(low: float, high: float, n: int, seed: int = 0) -> list[float]:
    """``n`` learning rates drawn log-uniformly (a search's ``sampling="log"``), for benchmarks and tests."""
    rng = np.random.default_rng(seed)
    return [float(math.exp(v)) for v in rng.uniform(math.log(low), math.log(high), n)]
