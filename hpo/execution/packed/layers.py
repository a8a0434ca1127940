"""Layers whose variables carry a leading *member* axis, so that ``members`` models of one architecture
train as one Keras model; with the initializer and regularizer that give each member its own draw and L2.

Layout: inside the model, activations are member-major, ``(members, batch, features)``, so every Dense
layer is one batched matmul ``(M, B, in) @ (M, in, out)``. The model's inputs are batch-major, as Keras
slices them: ``(batch, features)`` (every member sees the same rows) or ``(batch, members, features)``
(each member its own rows, turned member-major by :class:`SwapMemberBatch`). The model's output is
batch-major again, ``(batch, members, classes)``, so ``predict`` concatenates batches on axis 0.

Everything here uses ``keras.ops`` only and runs on the TensorFlow, JAX and PyTorch backends.

Per-member hyperparameters that do not change shapes (the learning rate is in
:mod:`hpo.execution.packed.optimizers`):

* **seed**: each member's kernel is drawn with its own seed from the *unpacked* initializer, called with
  the member's own shape ``(in, out)``, so glorot/he fans are the member's (``in``, ``out``) and not those
  Keras would compute from the packed rank-3 shape (which it would read as a conv kernel, multiplying both
  fans by ``members``).
* **dropout rate**: :class:`PackedDropout` takes one rate per member.
* **L2**: :class:`MemberL2` adds ``sum_m l2[m] * sum(kernel[m] ** 2)``, i.e. each member's own penalty.

Batch normalization (:class:`PackedBatchNormalization`) keeps each member's gamma, beta and moving statistics and
normalises each member over its own batch, as ``keras.layers.BatchNormalization`` does for one model.

Rates and L2 factors are held in non-trainable variables (:class:`Setting`), not compiled in as constants, so a
compiled packed model can train another pack of the same shapes with other values
(:mod:`hpo.execution.packed.reuse`); only whether a model has dropout or L2 at all is part of its shape.

Convolutions are not packed here: a ``PackedConv2D`` needs grouped convolutions (``groups=members``),
which TensorFlow runs on CPU only through XLA and which the ``mlp`` space does not need; it is left out.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import numpy as np
from keras import ops

from hpo.execution.packed._common import PACKAGE, member_shape, per_member, variable_numpy
from hpo.execution.xla import to_device


def add_setting(layer: keras.layers.Layer, name: str, values: Any) -> keras.Variable:
    """A non-trainable variable of ``layer`` holding per-member values (a rate, an L2 factor, a width mask),
    member axis first: read by the compiled step as state, so new values need no new compilation. Its path ends
    in ``name``; :meth:`PackedLayer.member_weights` leaves such variables out."""
    held = np.asarray(values, dtype="float32")
    # A NumPy value, not keras.initializers.Constant: its eager broadcast compiles per shape under JAX.
    var = layer.add_weight(name=name, shape=held.shape, trainable=False, dtype="float32",
                           initializer=lambda shape, dtype=None: to_device(held.copy()))
    var._hpo_setting = True  # noqa: SLF001 - marks a setting, not a weight of the member's Dense layer
    return var


def _width_mask(layer: keras.layers.Layer, units: int, member_units: Sequence[int] | None) -> keras.Variable | None:
    """The 0/1 setting keeping member ``m``'s units beyond ``member_units[m]`` at zero; None without widths."""
    if member_units is None:
        return None
    return add_setting(layer, "member_mask", np.arange(units)[None, :] < np.asarray(member_units)[:, None])


def _widths(member_units: Sequence[int] | None, members: int, what: str) -> list[int] | None:
    """``member_units`` as ints, one per member, or None."""
    if member_units is not None and len(member_units) != members:
        raise ValueError(f"{what} member_units needs one width per member ({members}); got {list(member_units)}")
    return None if member_units is None else [int(u) for u in member_units]


# -- initializer and regularizer -----------------------------------------------------------
@keras.saving.register_keras_serializable(package=PACKAGE)
class MemberInitializer(keras.initializers.Initializer):
    """Stack ``members`` draws of ``base`` on shape ``shape[1:]``, member ``m`` seeded with ``seeds[m]``.

    The base initializer sees the member's shape, so fan-based initializers (glorot, he, lecun) use the
    member's fans. Initializers without a seed (zeros, constant) are called as they are. With ``shapes``, member
    ``m`` is drawn on its own narrower shape ``shapes[m]`` (a member of fewer units held in a wider layer) and
    placed in the corner of its slice, zeros elsewhere: the draw its own narrower layer would make.
    """

    def __init__(self, base: Any, members: int, seeds: Sequence[int] | None = None,
                 shapes: Sequence[Sequence[int]] | None = None):
        self.base = keras.initializers.get(base)
        self.members = int(members)
        self.shapes = None if shapes is None else [tuple(int(d) for d in sh) for sh in shapes]
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
        # Stacked in NumPy: ops.stack runs eagerly and JAX compiles it for every new shape and member count.
        out = np.zeros(shape, dtype=keras.backend.standardize_dtype(dtype or keras.backend.floatx()))
        for m in range(self.members):
            own = shape[1:] if self.shapes is None else self.shapes[m]
            out[(m, *(slice(0, d) for d in own))] = ops.convert_to_numpy(self._member(m)(own, dtype=dtype))
        return to_device(out)

    def get_config(self) -> dict[str, Any]:
        return {"base": keras.initializers.serialize(self.base), "members": self.members, "seeds": self.seeds,
                "shapes": self.shapes}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MemberL2(keras.regularizers.Regularizer):
    """``sum_m l2[m] * sum(w[m] ** 2)``: each member's own L2 penalty (Keras' ``L2`` per member)."""

    def __init__(self, l2: Sequence[float], values: Any = None):
        self.l2 = [float(v) for v in l2]
        self.values = values  # the layer's setting variable holding l2, when the layer made one

    def __call__(self, x):
        coeff = ops.convert_to_tensor(self.l2, dtype=x.dtype) if self.values is None else \
            ops.cast(self.values, x.dtype)
        coeff = ops.reshape(coeff, member_shape(len(self.l2), len(x.shape)))
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
        return [variable_numpy(w)[m] for w in self.weights if not getattr(w, "_hpo_setting", False)]


@keras.saving.register_keras_serializable(package=PACKAGE)
class PackedDense(PackedLayer):
    """``members`` independent Dense layers as one: kernel ``(members, in, units)``, bias ``(members, units)``.

    Input ``(batch, in)`` (broadcast to every member) or ``(members, batch, in)``; output
    ``(members, batch, units)``. ``l2`` is a float or one float per member (Keras ``L2`` semantics);
    ``seeds`` one initializer seed per member (the bias gets ``seed + 1``).

    Members of different widths: ``member_units`` (each at most ``units``) gives each member's own width; the
    layer is held at ``units`` and member ``m``'s outputs beyond ``member_units[m]`` are multiplied by a 0/1
    mask (a setting variable, so other widths reuse the compiled step). ``member_inputs`` gives each member's
    own input width (the previous layer's ``member_units``). Each member's kernel and bias are drawn on its own
    shape ``(member_inputs[m], member_units[m])`` and zero elsewhere; the padded weights get no gradient (their
    outputs are masked, their inputs are masked zeros), so they stay zero under L2 and Adam-like updates and
    the member trains as its narrower Dense layer would, up to float summation order.
    """

    def __init__(self, members: int, units: int, activation: Any = None, use_bias: bool = True,
                 kernel_initializer: Any = "glorot_uniform", bias_initializer: Any = "zeros",
                 l2: float | Sequence[float] | None = None, seeds: Sequence[int] | None = None,
                 member_units: Sequence[int] | None = None, member_inputs: Sequence[int] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.members = int(members)
        self.units = int(units)
        self.member_units = None if member_units is None else [int(u) for u in member_units]
        self.member_inputs = None if member_inputs is None else [int(u) for u in member_inputs]
        for what, widths in (("member_units", self.member_units), ("member_inputs", self.member_inputs)):
            if widths is not None and len(widths) != self.members:
                raise ValueError(f"PackedDense {what} needs one width per member ({self.members}); got {widths}")
        if self.member_units is not None and not all(1 <= u <= self.units for u in self.member_units):
            raise ValueError(f"PackedDense member_units must be between 1 and units={self.units}; "
                             f"got {self.member_units}")
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        l2s = per_member(l2, self.members, "l2")
        self.l2 = l2s if l2s is not None and any(v > 0 for v in l2s) else None
        self.seeds = None if seeds is None else [int(s) for s in seeds]
        if self.seeds is not None and len(self.seeds) != self.members:
            raise ValueError(f"PackedDense needs one seed per member ({self.members}); got {len(self.seeds)}")

    def build(self, input_shape):
        features = input_shape[-1]
        if len(input_shape) == 3 and input_shape[0] is not None and input_shape[0] != self.members:
            raise ValueError(f"{self.name}: member-major input needs {self.members} members on axis 0; "
                             f"got shape {input_shape}")
        self.l2_values = add_setting(self, "member_l2", self.l2) if self.l2 else None
        own_in = self.member_inputs or [features] * self.members
        own_out = self.member_units or [self.units] * self.members
        self.width_mask = _width_mask(self, self.units, self.member_units)
        self.kernel = self.add_weight(
            name="kernel", shape=(self.members, features, self.units),
            initializer=MemberInitializer(self.kernel_initializer, self.members, self.seeds,
                                          shapes=[(i, o) for i, o in zip(own_in, own_out)]),
            regularizer=MemberL2(self.l2, self.l2_values) if self.l2 else None)
        if self.use_bias:
            bias_seeds = None if self.seeds is None else [s + 1 for s in self.seeds]
            self.bias = self.add_weight(name="bias", shape=(self.members, self.units),
                                        initializer=MemberInitializer(self.bias_initializer, self.members, bias_seeds,
                                                                      shapes=[(o,) for o in own_out]))
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
        y = self.activation(y) if self.activation is not None else y
        if self.width_mask is None:
            return y
        return ops.multiply(y, ops.expand_dims(ops.cast(self.width_mask, y.dtype), 1))

    def compute_output_shape(self, input_shape):
        batch = input_shape[0] if len(input_shape) == 2 else input_shape[1]
        return (self.members, batch, self.units)

    def member_weights(self, m: int) -> list[Any]:
        """Member ``m``'s kernel and bias, cut to its own widths."""
        rows = self.member_inputs[m] if self.member_inputs else None
        cols = self.member_units[m] if self.member_units else None
        out = [variable_numpy(self.kernel)[m][:rows, :cols]]
        return out + ([variable_numpy(self.bias)[m][:cols]] if self.bias is not None else [])

    def member_layer(self, m: int) -> keras.layers.Layer:
        reg = keras.regularizers.L2(self.l2[m]) if self.l2 and self.l2[m] > 0 else None
        units = self.member_units[m] if self.member_units else self.units
        return keras.layers.Dense(units, activation=self.activation, use_bias=self.use_bias,
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
            "l2": self.l2, "seeds": self.seeds, "member_units": self.member_units,
            "member_inputs": self.member_inputs})
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
        self.active = any(r > 0 for r in self.rates)  # part of the shape: no dropout at all is another model
        self.rate_values = add_setting(self, "member_rates", self.rates) if self.active else None

    def call(self, x, training=False):
        if not training or not self.active:
            return x
        rate = ops.reshape(ops.cast(self.rate_values, x.dtype), member_shape(self.members, len(x.shape)))
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
class PackedBatchNormalization(PackedLayer):
    """``members`` independent ``keras.layers.BatchNormalization`` layers (axis -1, Keras' defaults) on
    member-major input ``(members, batch, features)``: gamma, beta, moving mean and variance ``(members, features)``.

    In training each member is normalised by its own batch mean and biased variance over the batch axis and its
    moving statistics move as Keras' do (``moving * momentum + batch * (1 - momentum)``); in inference (``training``
    false or None, or the layer frozen) the moving statistics are used. Computed in float32 at least, as Keras does.
    ``member_units`` gives each member's own width (for :meth:`member_weights`): padded units see zero inputs, so
    their outputs are ``beta`` (zero, and without gradient behind a masked activation, :class:`PackedActivation`).
    With ``row_mask``, called on ``[x, rows]`` (``rows``: 1 a real row, 0 the padding of a last training batch,
    from :class:`~hpo.execution.template_layers.PaddingRows`), the batch statistics are the real rows' only.
    """

    def __init__(self, members: int, momentum: float = 0.99, epsilon: float = 1e-3,
                 member_units: Sequence[int] | None = None, row_mask: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.members = int(members)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.member_units = _widths(member_units, self.members, "PackedBatchNormalization")
        self.row_mask = bool(row_mask)

    def build(self, input_shape):
        if self.row_mask:
            input_shape = input_shape[0]
        if len(input_shape) != 3 or (input_shape[0] is not None and input_shape[0] != self.members):
            raise ValueError(f"{self.name}: needs member-major input ({self.members}, batch, features); "
                             f"got shape {input_shape}")
        shape = (self.members, input_shape[-1])
        self.gamma = self.add_weight(name="gamma", shape=shape, initializer="ones", autocast=False)
        self.beta = self.add_weight(name="beta", shape=shape, initializer="zeros", autocast=False)
        self.moving_mean = self.add_weight(name="moving_mean", shape=shape, initializer="zeros", trainable=False,
                                           autocast=False)
        self.moving_variance = self.add_weight(name="moving_variance", shape=shape, initializer="ones",
                                               trainable=False, autocast=False)

    def call(self, x, training=None):
        rows = None
        if self.row_mask:
            x, rows = x
        x = ops.cast(x, keras.backend.result_type(x.dtype, "float32"))  # statistics in float32 at least
        moving_mean = ops.cast(self.moving_mean, x.dtype)
        moving_variance = ops.cast(self.moving_variance, x.dtype)
        if training and self.trainable:
            mean, variance = _member_moments(x, rows)  # per member over its batch: (members, features)
            self.moving_mean.assign(moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            mean, variance = moving_mean, moving_variance
        # tf.nn.batch_normalization's (and Keras' JAX backend's) arithmetic, with a member axis on the statistics
        inv = ops.multiply(ops.rsqrt(ops.add(variance, self.epsilon)), ops.cast(self.gamma, x.dtype))
        shift = ops.subtract(ops.cast(self.beta, x.dtype), ops.multiply(mean, inv))
        out = ops.add(ops.multiply(x, ops.expand_dims(inv, 1)), ops.expand_dims(shift, 1))
        return ops.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape[0] if self.row_mask else input_shape

    def member_weights(self, m: int) -> list[Any]:
        """Member ``m``'s gamma, beta, moving mean and moving variance, cut to its own width."""
        cols = self.member_units[m] if self.member_units else None
        return [variable_numpy(w)[m][:cols] for w in (self.gamma, self.beta, self.moving_mean, self.moving_variance)]

    def member_layer(self, m: int) -> keras.layers.Layer:
        return keras.layers.BatchNormalization(momentum=self.momentum, epsilon=self.epsilon, name=self.name)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"members": self.members, "momentum": self.momentum, "epsilon": self.epsilon,
                       "member_units": self.member_units, "row_mask": self.row_mask})
        return config


def _member_moments(x: Any, rows: Any = None) -> tuple[Any, Any]:
    """Each member's mean and biased variance over the batch axis of ``(members, batch, features)``; with
    ``rows`` (``(batch,)``, 1 real, 0 padding) over the real rows only, as Keras' masked moments."""
    if rows is None:
        return ops.moments(x, axes=[1])
    keep = ops.reshape(ops.greater(rows, 0.5), (1, -1, 1))
    count = ops.sum(ops.cast(keep, x.dtype))
    mean = ops.sum(ops.where(keep, x, 0.0), axis=1) / count
    centred = ops.where(keep, x - ops.expand_dims(mean, 1), 0.0)
    return mean, ops.sum(ops.square(centred), axis=1) / count


@keras.saving.register_keras_serializable(package=PACKAGE)
class PackedActivation(PackedLayer):
    """An activation on member-major input, member ``m``'s units beyond ``member_units[m]`` masked to zero
    afterwards (so ``activation(0) != 0``, e.g. sigmoid, cannot leak into padded units or give them gradient);
    each member's layer is ``keras.layers.Activation``."""

    def __init__(self, members: int, activation: Any, units: int | None = None,
                 member_units: Sequence[int] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.members = int(members)
        self.activation = keras.activations.get(activation)
        self.units = None if units is None else int(units)
        self.member_units = _widths(member_units, self.members, "PackedActivation")
        if self.member_units is not None and self.units is None:
            raise ValueError("PackedActivation with member_units needs units (the held width)")
        self.width_mask = _width_mask(self, self.units or 0, self.member_units)

    def call(self, x):
        y = self.activation(x)
        if self.width_mask is None:
            return y
        return ops.multiply(y, ops.expand_dims(ops.cast(self.width_mask, y.dtype), 1))

    def compute_output_shape(self, input_shape):
        return input_shape

    def member_layer(self, m: int) -> keras.layers.Layer:
        return keras.layers.Activation(self.activation, name=self.name)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"members": self.members, "activation": keras.activations.serialize(self.activation),
                       "units": self.units, "member_units": self.member_units})
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class SwapMemberBatch(keras.layers.Layer):
    """Swap axes 0 and 1: ``(batch, members, ...)`` <-> ``(members, batch, ...)``. Not part of an unpacked model."""

    def call(self, x):
        return ops.swapaxes(x, 0, 1)

    def compute_output_shape(self, input_shape):
        return (input_shape[1], input_shape[0]) + tuple(input_shape[2:])
