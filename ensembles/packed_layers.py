"""Building blocks of a packed population: layers, loss, metrics and optimizers whose variables carry a
leading *member* axis, so that ``members`` models of one architecture train as one Keras model.

Layout: inside the model, activations are member-major, ``(members, batch, features)``, so every Dense
layer is one batched matmul ``(M, B, in) @ (M, in, out)``. The model's inputs are batch-major, as Keras
slices them: ``(batch, features)`` (every member sees the same rows) or ``(batch, members, features)``
(each member its own rows, turned member-major by :class:`SwapMemberBatch`). The model's output is
batch-major again, ``(batch, members, classes)``, so ``predict`` concatenates batches on axis 0.

Everything here uses ``keras.ops`` only and runs on the TensorFlow, JAX and PyTorch backends.

Per-member hyperparameters that do not change shapes:

* **seed**: each member's kernel is drawn with its own seed from the *unpacked* initializer, called with
  the member's own shape ``(in, out)``, so glorot/he fans are the member's (``in``, ``out``) and not those
  Keras would compute from the packed rank-3 shape (which it would read as a conv kernel, multiplying both
  fans by ``members``).
* **dropout rate**: :class:`PackedDropout` takes one rate per member.
* **L2**: :class:`MemberL2` adds ``sum_m l2[m] * sum(kernel[m] ** 2)``, i.e. each member's own penalty.
* **learning rate**: the packed optimizers (:class:`PackedSGD`, :class:`PackedAdam`, :class:`PackedRMSprop`)
  multiply the learning rate handed to ``update_step`` by a per-member factor broadcast over each
  variable's member axis. The factor is applied to the *update*, not to the gradient: Adam and RMSprop
  divide by a running gradient scale, so a gradient multiplied by ``s`` gives (up to epsilon) the same
  step, and a gradient scale would not change the learning rate at all. Scaling the ``learning_rate``
  argument inside ``update_step`` is exactly what an unpacked optimizer with learning rate ``lr_m`` does,
  for SGD (with or without momentum), Adam (``alpha = lr * sqrt(1 - b2^t) / (1 - b1^t)``) and RMSprop
  alike. The optimizer's own ``learning_rate`` stays a global multiplier (1.0 by default, or a schedule).
  Weight decay is refused: Keras applies it with the scalar learning rate, outside ``update_step``.

The loss is the sum over members of each member's mean loss, so the gradient reaching member ``m``'s
weights is exactly the gradient its independent training would see (members share no weights).

Convolutions are not packed here: a ``PackedConv2D`` needs grouped convolutions (``groups=members``),
which TensorFlow runs on CPU only through XLA and which the ``mlp`` space does not need; it is left out.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
from keras import ops

PACKAGE = "hpo_packed"


def _per_member(value: float | Sequence[float] | None, members: int, what: str) -> list[float] | None:
    """One float per member from a scalar or a sequence; ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return [float(value)] * members
    out = [float(v) for v in value]
    if len(out) != members:
        raise ValueError(f"{what} needs one value per member ({members}); got {len(out)}: {out}")
    return out


def variable_numpy(v: Any) -> Any:
    """A variable's value as a NumPy array (``Variable.numpy()`` warns under JAX with NumPy 2, its value does not)."""
    return v.numpy() if keras.backend.backend() == "tensorflow" else ops.convert_to_numpy(v.value)


def _member_shape(members: int, rank: int) -> tuple[int, ...]:
    """Shape that broadcasts a ``(members,)`` vector over a rank-``rank`` member-major tensor."""
    return (members,) + (1,) * (rank - 1)


# -- initializer and regularizer -----------------------------------------------------------
@keras.saving.register_keras_serializable(package=PACKAGE)
class MemberInitializer(keras.initializers.Initializer):
    """Stack ``members`` draws of ``base`` on shape ``shape[1:]``, member ``m`` seeded with ``seeds[m]``.

    The base initializer sees the member's shape, so fan-based initializers (glorot, he, lecun) use the
    member's fans. Initializers without a seed (zeros, constant) are called as they are.
    """

    def __init__(self, base: Any, members: int, seeds: Sequence[int] | None = None):
        self.base = keras.initializers.get(base)
        self.members = int(members)
        self.seeds = None if seeds is None else [int(s) for s in seeds]
        if self.seeds is not None and len(self.seeds) != self.members:
            raise ValueError(f"MemberInitializer needs one seed per member ({members}); got {len(self.seeds)}")

    def _member(self, m: int) -> keras.initializers.Initializer:
        config = self.base.get_config()
        if "seed" in config:
            config["seed"] = None if self.seeds is None else self.seeds[m]
        return self.base.__class__.from_config(config)

    def __call__(self, shape, dtype=None):
        shape = tuple(shape)
        if shape[0] != self.members:
            raise ValueError(f"MemberInitializer for {self.members} members got shape {shape}")
        return ops.stack([self._member(m)(shape[1:], dtype=dtype) for m in range(self.members)], axis=0)

    def get_config(self) -> dict[str, Any]:
        return {"base": keras.initializers.serialize(self.base), "members": self.members, "seeds": self.seeds}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MemberL2(keras.regularizers.Regularizer):
    """``sum_m l2[m] * sum(w[m] ** 2)``: each member's own L2 penalty (Keras' ``L2`` per member)."""

    def __init__(self, l2: Sequence[float]):
        self.l2 = [float(v) for v in l2]

    def __call__(self, x):
        coeff = ops.reshape(ops.convert_to_tensor(self.l2, dtype=x.dtype), _member_shape(len(self.l2), len(x.shape)))
        return ops.sum(ops.multiply(coeff, ops.square(x)))

    def get_config(self) -> dict[str, Any]:
        return {"l2": self.l2}


# -- layers --------------------------------------------------------------------------------
class PackedLayer(keras.layers.Layer):
    """A layer with a member axis that can hand out each member's standard Keras layer and weights."""

    members: int

    def member_layer(self, m: int) -> keras.layers.Layer:  # pragma: no cover - interface
        raise NotImplementedError

    def member_weights(self, m: int) -> list[Any]:
        return [variable_numpy(w)[m] for w in self.weights]


@keras.saving.register_keras_serializable(package=PACKAGE)
class PackedDense(PackedLayer):
    """``members`` independent Dense layers as one: kernel ``(members, in, units)``, bias ``(members, units)``.

    Input ``(batch, in)`` (broadcast to every member) or ``(members, batch, in)``; output
    ``(members, batch, units)``. ``l2`` is a float or one float per member (Keras ``L2`` semantics);
    ``seeds`` one initializer seed per member (the bias gets ``seed + 1``).
    """

    def __init__(self, members: int, units: int, activation: Any = None, use_bias: bool = True,
                 kernel_initializer: Any = "glorot_uniform", bias_initializer: Any = "zeros",
                 l2: float | Sequence[float] | None = None, seeds: Sequence[int] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.members = int(members)
        self.units = int(units)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        l2s = _per_member(l2, self.members, "l2")
        self.l2 = l2s if l2s is not None and any(v > 0 for v in l2s) else None
        self.seeds = None if seeds is None else [int(s) for s in seeds]
        if self.seeds is not None and len(self.seeds) != self.members:
            raise ValueError(f"PackedDense needs one seed per member ({self.members}); got {len(self.seeds)}")

    def build(self, input_shape):
        features = input_shape[-1]
        if len(input_shape) == 3 and input_shape[0] is not None and input_shape[0] != self.members:
            raise ValueError(f"{self.name}: member-major input needs {self.members} members on axis 0; "
                             f"got shape {input_shape}")
        self.kernel = self.add_weight(
            name="kernel", shape=(self.members, features, self.units),
            initializer=MemberInitializer(self.kernel_initializer, self.members, self.seeds),
            regularizer=MemberL2(self.l2) if self.l2 else None)
        if self.use_bias:
            bias_seeds = None if self.seeds is None else [s + 1 for s in self.seeds]
            self.bias = self.add_weight(name="bias", shape=(self.members, self.units),
                                        initializer=MemberInitializer(self.bias_initializer, self.members, bias_seeds))
        else:
            self.bias = None

    def call(self, x):
        if len(x.shape) == 2:
            # einsum("bi,mio->mbo") as one (B, in) @ (in, M*out) matmul: on 2 CPU cores this ran the MNIST
            # MLP's fit 2.2x faster than ops.einsum under TensorFlow and 1.2x under JAX.
            features = x.shape[-1]
            kernel = ops.reshape(ops.transpose(self.kernel, (1, 0, 2)), (features, self.members * self.units))
            y = ops.reshape(ops.matmul(x, kernel), (-1, self.members, self.units))
            y = ops.transpose(y, (1, 0, 2))
        elif len(x.shape) == 3:
            y = ops.matmul(x, self.kernel)  # batched: (M, B, in) @ (M, in, out)
        else:
            raise ValueError(f"{self.name}: input must be (batch, features) or (members, batch, features); "
                             f"got rank {len(x.shape)}")
        if self.bias is not None:
            y = ops.add(y, ops.expand_dims(self.bias, 1))
        return self.activation(y) if self.activation is not None else y

    def compute_output_shape(self, input_shape):
        batch = input_shape[0] if len(input_shape) == 2 else input_shape[1]
        return (self.members, batch, self.units)

    def member_layer(self, m: int) -> keras.layers.Layer:
        reg = keras.regularizers.L2(self.l2[m]) if self.l2 and self.l2[m] > 0 else None
        return keras.layers.Dense(self.units, activation=self.activation, use_bias=self.use_bias,
                                  kernel_initializer=self.kernel_initializer, bias_initializer=self.bias_initializer,
                                  kernel_regularizer=reg, name=self.name)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({
            "members": self.members, "units": self.units,
            "activation": keras.activations.serialize(self.activation) if self.activation else None,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "l2": self.l2, "seeds": self.seeds})
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class PackedDropout(PackedLayer):
    """Dropout on member-major input with one rate per member (inverted dropout, like ``keras.layers.Dropout``).

    Masks are drawn for the whole packed tensor from one seed generator, so member ``m``'s mask is not the
    one an unpacked ``Dropout`` seeded alike would draw (the rate and the expectation are the same).
    """

    def __init__(self, rates: float | Sequence[float], members: int | None = None, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(rates, (int, float)):
            if members is None:
                raise ValueError("PackedDropout with one scalar rate needs members")
            rates = [float(rates)] * int(members)
        self.rates = [float(r) for r in rates]
        self.members = len(self.rates)
        if any(not 0.0 <= r < 1.0 for r in self.rates):
            raise ValueError(f"PackedDropout rates must be in [0, 1); got {self.rates}")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=False):
        if not training or not any(r > 0 for r in self.rates):
            return x
        rate = ops.reshape(ops.convert_to_tensor(self.rates, dtype=x.dtype), _member_shape(self.members, len(x.shape)))
        keep = ops.greater_equal(keras.random.uniform(ops.shape(x), seed=self.seed_generator, dtype=x.dtype), rate)
        return ops.where(keep, ops.divide(x, ops.subtract(1.0, rate)), ops.zeros_like(x))

    def compute_output_shape(self, input_shape):
        return input_shape

    def member_layer(self, m: int) -> keras.layers.Layer:
        return keras.layers.Dropout(self.rates[m], name=self.name)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"rates": self.rates, "seed": self.seed})
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class SwapMemberBatch(keras.layers.Layer):
    """Swap axes 0 and 1: ``(batch, members, ...)`` <-> ``(members, batch, ...)``. Not part of an unpacked model."""

    def call(self, x):
        return ops.swapaxes(x, 0, 1)

    def compute_output_shape(self, input_shape):
        return (input_shape[1], input_shape[0]) + tuple(input_shape[2:])


# -- loss and metrics ------------------------------------------------------------------------
def _member_labels(y_true, y_pred):
    """Integer labels ``(batch, members)`` from shared ``(batch,)`` or per-member ``(batch, members)`` labels."""
    y = ops.cast(y_true, "int32")
    if len(y.shape) == 1:
        y = ops.broadcast_to(ops.expand_dims(y, 1), ops.shape(y_pred)[:2])
    return y


@keras.saving.register_keras_serializable(package=PACKAGE)
class PackedSparseCategoricalCrossentropy(keras.losses.Loss):
    """Sum over members of each member's mean sparse cross-entropy on logits ``(batch, members, classes)``.

    Returns the per-sample sum over members, which Keras averages over the batch: ``sum_m mean_b loss[b, m]``.
    """

    def __init__(self, from_logits: bool = True, name: str = "packed_sparse_categorical_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        per = ops.sparse_categorical_crossentropy(_member_labels(y_true, y_pred), y_pred, from_logits=self.from_logits)
        return ops.sum(per, axis=1)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["from_logits"] = self.from_logits
        return config


class _MemberMean(keras.metrics.Metric):
    """Mean over samples of a per-(sample, member) quantity, for one member.

    Packed models now report members through :class:`MemberMetrics`; this one-metric-per-member form stays
    registered so packed models saved with it still load.
    """

    def __init__(self, member: int, name: str | None = None, **kwargs):
        super().__init__(name=name or f"member_{member}_{self.suffix}", **kwargs)
        self.member = int(member)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    suffix = "value"

    def values(self, y_true, logits):  # pragma: no cover - interface
        raise NotImplementedError

    def update_state(self, y_true, y_pred, sample_weight=None):
        y = _member_labels(y_true, y_pred)[:, self.member]
        v = ops.cast(self.values(y, y_pred[:, self.member]), self.dtype)
        if sample_weight is not None:
            w = ops.cast(ops.reshape(sample_weight, (-1,)), self.dtype)
            self.total.assign_add(ops.sum(v * w))
            self.count.assign_add(ops.sum(w))
        else:
            self.total.assign_add(ops.sum(v))
            self.count.assign_add(ops.cast(ops.shape(v)[0], self.dtype))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self) -> dict[str, Any]:
        return {"member": self.member, "name": self.name, "dtype": self.dtype}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MemberAccuracy(_MemberMean):
    """Accuracy of member ``member`` (logged as ``member_{m}_accuracy``)."""

    suffix = "accuracy"

    def values(self, y, logits):
        return ops.equal(ops.cast(ops.argmax(logits, axis=-1), "int32"), y)


@keras.saving.register_keras_serializable(package=PACKAGE)
class MemberLoss(_MemberMean):
    """Sparse cross-entropy (from logits) of member ``member``, without regularization (``member_{m}_loss``)."""

    suffix = "loss"

    def values(self, y, logits):
        return ops.sparse_categorical_crossentropy(y, logits, from_logits=True)


@keras.saving.register_keras_serializable(package=PACKAGE)
class MemberMetrics(keras.metrics.Metric):
    """Every member's accuracy and cross-entropy (without regularization) in one metric whose state carries the
    member axis; its result is logged as ``member_{m}_accuracy`` and ``member_{m}_loss``.

    Written by hand instead of one Keras metric per member (:class:`MemberAccuracy`, :class:`MemberLoss`): those
    are 2 x members sub-graphs in every train and test step, and compiling them dominated a packed model's
    first epoch (50 members, JAX on a CPU: 4.7 s against 0.9 s without them). Here the step's work is the
    same few ops whatever the member count.
    """

    def __init__(self, members: int, name: str = "member_metrics", **kwargs):
        super().__init__(name=name, **kwargs)
        self.members = int(members)
        self.correct = self.add_variable(shape=(self.members,), initializer="zeros", name="correct")
        self.cross_entropy = self.add_variable(shape=(self.members,), initializer="zeros", name="cross_entropy")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y = _member_labels(y_true, y_pred)  # (batch, members)
        hit = ops.cast(ops.equal(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), y), self.dtype)
        ce = ops.cast(ops.sparse_categorical_crossentropy(y, y_pred, from_logits=True), self.dtype)
        if sample_weight is None:
            n = ops.cast(ops.shape(hit)[0], self.dtype)
        else:
            w = ops.cast(ops.reshape(sample_weight, (-1, 1)), self.dtype)
            hit, ce, n = hit * w, ce * w, ops.sum(w)
        self.correct.assign_add(ops.sum(hit, axis=0))
        self.cross_entropy.assign_add(ops.sum(ce, axis=0))
        self.count.assign_add(n)

    def result(self):
        acc = ops.divide_no_nan(self.correct, self.count)
        ce = ops.divide_no_nan(self.cross_entropy, self.count)
        out = {f"member_{m}_accuracy": acc[m] for m in range(self.members)}
        out.update({f"member_{m}_loss": ce[m] for m in range(self.members)})
        return out

    def reset_state(self):
        for v in (self.correct, self.cross_entropy):
            v.assign(ops.zeros((self.members,), dtype=self.dtype))
        self.count.assign(0.0)

    def get_config(self) -> dict[str, Any]:
        return {"members": self.members, "name": self.name, "dtype": self.dtype}


@keras.saving.register_keras_serializable(package=PACKAGE)
class PackedModel(keras.Model):
    """A functional packed model that also reports every member's metrics (:class:`MemberMetrics`).

    Keras nests a dict-valued metric given to ``compile(metrics=...)`` under its own name; a metric tracked
    by the model itself has its dict flattened into the logs, so ``member_{m}_accuracy`` and
    ``val_member_{m}_loss`` reach ``History`` and callbacks as with one metric per member.
    """

    def track_members(self, members: int) -> None:
        """Report ``members`` members' accuracy and loss from now on (before ``compile``)."""
        self.member_metrics = MemberMetrics(members)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        tracked = getattr(self, "member_metrics", None)
        if tracked is not None:
            tracked.update_state(y, y_pred, sample_weight)
        return super().compute_metrics(x, y, y_pred, sample_weight)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        tracked = getattr(self, "member_metrics", None)
        config["member_metrics"] = None if tracked is None else tracked.members
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        members = config.pop("member_metrics", None)
        model = super().from_config(config, custom_objects=custom_objects)
        if members:
            model.track_members(members)
        return model


# -- optimizers ------------------------------------------------------------------------------
class _MemberLearningRates:
    """Mixin for a Keras optimizer: member ``m``'s update uses ``learning_rate * member_learning_rates[m]``."""

    member_learning_rates: tuple[float, ...]

    def _set_members(self, member_learning_rates: Sequence[float], weight_decay: Any) -> None:
        if weight_decay:
            raise ValueError("packed optimizers do not support weight_decay (Keras applies it with the scalar "
                             "learning rate, not per member); use per-member l2 instead")
        rates = tuple(float(v) for v in member_learning_rates)
        if not rates or any(r < 0 for r in rates):
            raise ValueError(f"member_learning_rates must be non-empty and non-negative; got {rates}")
        self.member_learning_rates = rates

    def build(self, variables):
        members = len(self.member_learning_rates)
        for v in variables:
            if len(v.shape) == 0 or v.shape[0] != members:
                raise ValueError(f"packed optimizer for {members} members: variable {v.path!r} of shape {v.shape} "
                                 f"has no leading member axis; every trainable variable must be packed")
        super().build(variables)

    def update_step(self, gradient, variable, learning_rate):
        members = len(self.member_learning_rates)
        scale = ops.reshape(ops.convert_to_tensor(self.member_learning_rates, dtype=variable.dtype),
                            _member_shape(members, len(variable.shape)))
        return super().update_step(gradient, variable, ops.multiply(ops.cast(learning_rate, variable.dtype), scale))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["member_learning_rates"] = list(self.member_learning_rates)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class PackedSGD(_MemberLearningRates, keras.optimizers.SGD):
    """``keras.optimizers.SGD`` with one learning rate per member (``learning_rate`` is a global multiplier)."""

    def __init__(self, member_learning_rates: Sequence[float], learning_rate: Any = 1.0, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self._set_members(member_learning_rates, kwargs.get("weight_decay"))


@keras.saving.register_keras_serializable(package=PACKAGE)
class PackedAdam(_MemberLearningRates, keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with one learning rate per member, applied to the update (see module doc)."""

    def __init__(self, member_learning_rates: Sequence[float], learning_rate: Any = 1.0, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self._set_members(member_learning_rates, kwargs.get("weight_decay"))


@keras.saving.register_keras_serializable(package=PACKAGE)
class PackedRMSprop(_MemberLearningRates, keras.optimizers.RMSprop):
    """``keras.optimizers.RMSprop`` with one learning rate per member, applied to the update."""

    def __init__(self, member_learning_rates: Sequence[float], learning_rate: Any = 1.0, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self._set_members(member_learning_rates, kwargs.get("weight_decay"))


PACKED_OPTIMIZERS = {"sgd": PackedSGD, "adam": PackedAdam, "rmsprop": PackedRMSprop}


def packed_optimizer(name: str, member_learning_rates: Sequence[float], **kwargs) -> keras.optimizers.Optimizer:
    """A packed optimizer by name (``sgd``, ``adam``, ``rmsprop``) with absolute per-member learning rates."""
    key = name.lower()
    if key not in PACKED_OPTIMIZERS:
        raise ValueError(f"packed optimizer must be one of {sorted(PACKED_OPTIMIZERS)}; got {name!r}")
    return PACKED_OPTIMIZERS[key](member_learning_rates=member_learning_rates, **kwargs)


def unpacked_optimizer(name: str, learning_rate: float, **kwargs) -> keras.optimizers.Optimizer:
    """The standard Keras optimizer one member of ``packed_optimizer(name, ...)`` corresponds to."""
    cls = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop}[name.lower()]
    return cls(learning_rate=learning_rate, **kwargs)
