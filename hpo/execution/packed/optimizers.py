"""Keras optimizers with one learning rate per member of a packed model.

The packed optimizers (:class:`PackedSGD`, :class:`PackedAdam`, :class:`PackedRMSprop`) multiply the learning
rate handed to ``update_step`` by a per-member factor broadcast over each variable's member axis. The factor
is applied to the *update*, not to the gradient: Adam and RMSprop divide by a running gradient scale, so a
gradient multiplied by ``s`` gives (up to epsilon) the same step, and a gradient scale would not change the
learning rate at all. Scaling the ``learning_rate`` argument inside ``update_step`` is exactly what an
unpacked optimizer with learning rate ``lr_m`` does, for SGD (with or without momentum), Adam
(``alpha = lr * sqrt(1 - b2^t) / (1 - b1^t)``) and RMSprop alike. The optimizer's own ``learning_rate`` stays
a global multiplier (1.0 by default, or a schedule). Weight decay is refused: Keras applies it with the
scalar learning rate, outside ``update_step``. The per-member rates are an optimizer variable, not a compiled
constant, so a compiled packed model trains another pack with other rates without compiling again
(:mod:`hpo.execution.packed.reuse`).
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import numpy as np
from keras import ops

from hpo.execution.packed._common import PACKAGE, member_shape
from hpo.execution.xla import to_device


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
        held = np.asarray(self.member_learning_rates, dtype="float32")
        # A NumPy initial value: keras.initializers.Constant broadcasts eagerly, which JAX compiles per shape.
        self._member_rates = self.add_variable(shape=(members,), dtype="float32", name="member_learning_rates",
                                               initializer=lambda shape, dtype=None: to_device(held.copy()))

    def update_step(self, gradient, variable, learning_rate):
        members = len(self.member_learning_rates)
        rates = getattr(self, "_member_rates", None)
        rates = ops.convert_to_tensor(self.member_learning_rates) if rates is None else rates
        scale = ops.reshape(ops.cast(rates, variable.dtype), member_shape(members, len(variable.shape)))
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
