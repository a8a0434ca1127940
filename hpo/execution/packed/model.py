"""The packed ``mlp`` as a Keras model: build it from a :class:`PackedMLPSpec`, read every member's logits,
and unpack it into one standard Keras model per member."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from hpo.execution.packed._common import PACKAGE
from hpo.execution.packed.layers import (PackedActivation, PackedBatchNormalization, PackedDense, PackedDropout,
                                         PackedLayer, SwapMemberBatch)
from hpo.execution.packed.metrics import MemberMetrics, PackedSparseCategoricalCrossentropy
from hpo.execution.packed.optimizers import packed_optimizer, unpacked_optimizer
from hpo.execution.packed.spec import PackedMLPSpec, derived_seed, layer_seeds


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


def _flat(spec: PackedMLPSpec, inputs: Any) -> Any:
    """A packed MLP's input as its first Dense reads it: member-major rows (per-member inputs) or flat rows."""
    import keras

    if spec.per_member_inputs:
        x = SwapMemberBatch(name="to_member_major")(inputs)
        if len(spec.input_shape) > 1:
            x = keras.layers.Reshape((-1, int(np.prod(spec.input_shape))), name="flatten")(x)
        return x
    return keras.layers.Flatten(name="flatten")(inputs) if len(spec.input_shape) > 1 else inputs


def build_packed_mlp(spec: PackedMLPSpec, *, compile: bool = True, member_metrics: bool = True,
                     jit_compile: Any = "auto") -> keras.Model:
    """The packed ``mlp``: input ``(batch, *input_shape)`` (or ``(batch, members, *input_shape)`` with
    ``per_member_inputs``), output logits ``(batch, members, n_classes)``.

    Compiled with the packed optimizer, the summed per-member loss and, with ``member_metrics``, one
    ``member_{m}_accuracy`` and ``member_{m}_loss`` metric per member.
    """
    m = spec.members
    inputs = keras.Input((m, *spec.input_shape) if spec.per_member_inputs else spec.input_shape, name="inputs")
    x, rows = inputs, None
    if spec.batchnorm:  # padding rows of a last training batch (NaN) stay out of the batch statistics
        from hpo.execution.template_layers import PaddingRows

        x, rows = PaddingRows(name="padding_rows")(inputs)
    x = _flat(spec, x)
    # Every hidden layer is masked to its members' own widths (all ones when they agree): masks are settings,
    # so packs of other widths held at the same width reuse the compiled steps (hpo.execution.packed.reuse)
    inputs_of = None  # each member's input width: the first layer's input is everyone's
    for i in range(spec.layers):
        # with batch norm the activation follows it, as in the mlp space: dense_i -> bn_i -> act_i (masked)
        x = PackedDense(m, spec.units, activation=None if spec.batchnorm else spec.activation, l2=spec.l2s,
                        seeds=layer_seeds(spec, i), member_units=spec.member_units, member_inputs=inputs_of,
                        name=f"dense_{i}")(x)
        if spec.batchnorm:
            x = PackedBatchNormalization(m, member_units=spec.member_units, row_mask=True,
                                         name=f"bn_{i}")([x, rows])
            x = PackedActivation(m, spec.activation, units=spec.units, member_units=spec.member_units,
                                 name=f"act_{i}")(x)
        inputs_of = spec.member_units
        if any(r > 0 for r in spec.dropouts):
            x = PackedDropout(spec.dropouts, seed=derived_seed(spec.seeds[0], 2 * i + 1), name=f"dropout_{i}")(x)
    x = PackedDense(m, spec.n_classes, seeds=layer_seeds(spec, spec.layers), member_inputs=inputs_of,
                    name=spec.head_name)(x)
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


def unpack(model: keras.Model, *, compile: bool = True, spec: PackedMLPSpec | None = None) -> list[keras.Model]:
    """One standard Keras model per member (``Dense``/``BatchNormalization``/``Activation``/``Dropout`` layers,
    same names), with its weights (a batch normalization's moving statistics included).

    The packed model must be a chain (each layer feeds the next), as :func:`build_packed_mlp` makes.
    ``SwapMemberBatch`` layers are dropped: an unpacked model takes ``(batch, *input_shape)``. With
    ``compile``, each model is compiled like an ``mlp`` trial: its own optimizer and learning rate (from
    the packed optimizer, or from ``spec``), sparse cross-entropy on logits, accuracy.
    """
    from hpo.execution.template_layers import PaddingRows

    # PaddingRows marks a padded training batch's rows for the packed batch normalisation: a member has none
    chain = [layer for layer in model.layers if not isinstance(layer, (keras.layers.InputLayer, PaddingRows))]
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
