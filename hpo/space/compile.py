"""The space's default compilation, for builders that return an uncompiled model.

One loss and one metric per head of the data spec (logits out, so ensembles can average them), with
the optimizer and learning rate searched. The built-in builders compile with it too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import keras

if TYPE_CHECKING:
    from hpo.data import DataSpec, Head


def loss_for(h: "Head") -> keras.losses.Loss:
    if h.kind == "multiclass":
        if h.one_hot:
            return keras.losses.CategoricalCrossentropy(from_logits=True)
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if h.kind == "binary":
        return keras.losses.BinaryCrossentropy(from_logits=True)
    return keras.losses.MeanSquaredError()


def metric_for(h: "Head") -> keras.metrics.Metric:
    if h.kind == "multiclass":
        if h.one_hot:
            return keras.metrics.CategoricalAccuracy(name="accuracy")
        return keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    if h.kind == "binary":
        return keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)  # threshold on logits
    return keras.metrics.MeanAbsoluteError(name="mae")


def optimizer_from(hp: Any) -> keras.optimizers.Optimizer:
    """Optimizer and learning rate, searched."""
    lr = hp.Float("learning_rate", 1e-4, 1e-2, sampling="log", default=1e-3)
    name = hp.Choice("optimizer", ["adam", "rmsprop"], default="adam")
    return keras.optimizers.Adam(lr) if name == "adam" else keras.optimizers.RMSprop(lr)


def compile_for(model: keras.Model, hp: Any, spec: "DataSpec",
                loss_weights: dict[str, float] | None = None) -> keras.Model:
    """Compile with one loss and metric per head, named by head (works for one or many outputs).

    The metrics are ``weighted_metrics``: without sample weights they are the same numbers, and with them
    zero-weight padding rows (one compiled shape per step, :mod:`hpo.execution.shapes`) do not count."""
    if len(spec.heads) == 1:
        h = spec.heads[0]
        model.compile(optimizer=optimizer_from(hp), loss=loss_for(h), weighted_metrics=[metric_for(h)])
    else:
        model.compile(
            optimizer=optimizer_from(hp),
            loss={h.name: loss_for(h) for h in spec.heads},
            weighted_metrics={h.name: [metric_for(h)] for h in spec.heads},
            loss_weights=loss_weights,
        )
    return model
