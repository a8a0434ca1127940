"""The loss and the per-member metrics of a packed model, whose logits are ``(batch, members, classes)``.

The loss is the sum over members of each member's mean loss, so the gradient reaching member ``m``'s
weights is exactly the gradient its independent training would see (members share no weights).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from hpo.execution.packed._common import PACKAGE, variable_numpy
from hpo.execution.xla import to_device


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
        try:
            # Keras reads results outside the compiled step at the end of every epoch; eager ops there compile
            # one XLA program per member count under JAX, NumPy does not. Inside a traced step the values are
            # symbolic and cannot become NumPy: the same arithmetic in keras.ops then.
            correct, ce_sum, count = (np.asarray(variable_numpy(v), dtype="float64")
                                      for v in (self.correct, self.cross_entropy, self.count))
        except Exception:
            acc = ops.divide_no_nan(self.correct, self.count)
            ce = ops.divide_no_nan(self.cross_entropy, self.count)
        else:
            acc = correct / count if count else np.zeros_like(correct)
            ce = ce_sum / count if count else np.zeros_like(ce_sum)
            acc, ce = [float(v) for v in acc], [float(v) for v in ce]
        out = {f"member_{m}_accuracy": acc[m] for m in range(self.members)}
        out.update({f"member_{m}_loss": ce[m] for m in range(self.members)})
        return out

    def reset_state(self):
        for v in (self.correct, self.cross_entropy):
            v.assign(to_device(np.zeros((self.members,), dtype=self.dtype)))  # NumPy: an eager ops.zeros compiles under JAX
        self.count.assign(0.0)

    def get_config(self) -> dict[str, Any]:
        return {"members": self.members, "name": self.name, "dtype": self.dtype}
