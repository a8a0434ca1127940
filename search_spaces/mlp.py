"""``mlp``: a Dense stack. The course's MNIST MLP 784-500-500-10 is one point of it
(layers=2, units=500, activation=relu, no dropout, no batch norm, no L2)."""

from __future__ import annotations

from typing import Any

import keras

from hpo.data import DataSpec
from search_spaces.common import compile_for, inputs_for, logit_heads, single_output

MAX_LAYERS = 4


def build(hp: Any, spec: DataSpec) -> keras.Model:
    """Dense stack: width, depth, activation, dropout, BatchNormalization and an optional L2 penalty."""
    inputs = inputs_for(spec)
    x = list(inputs.values())[0] if len(inputs) == 1 else keras.layers.Concatenate()(
        [keras.layers.Flatten()(t) for t in inputs.values()])
    if len(x.shape) > 2:
        x = keras.layers.Flatten()(x)
    n_layers = hp.Int("layers", 1, MAX_LAYERS, default=2)
    units = hp.Int("units", 16, 1024, sampling="log", default=128)
    activation = hp.Choice("activation", ["relu", "gelu", "tanh"], default="relu")
    dropout = hp.Float("dropout", 0.0, 0.5, default=0.0)
    batchnorm = hp.Boolean("batchnorm", default=False)
    hp.Boolean("use_l2", default=False)
    with hp.conditional_scope("use_l2", [True]):
        l2 = hp.Float("l2", 1e-6, 1e-2, sampling="log", default=1e-4)  # None unless use_l2
    reg = keras.regularizers.L2(l2) if l2 else None
    for i in range(n_layers):
        x = keras.layers.Dense(units, kernel_regularizer=reg, name=f"dense_{i}")(x)
        if batchnorm:
            x = keras.layers.BatchNormalization(name=f"bn_{i}")(x)
        x = keras.layers.Activation(activation, name=f"act_{i}")(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, name=f"dropout_{i}")(x)
    outputs = logit_heads(x, spec)
    model = keras.Model(list(inputs.values()) if len(inputs) > 1 else list(inputs.values())[0],
                        single_output(outputs, spec), name="mlp")
    return compile_for(model, hp, spec)
