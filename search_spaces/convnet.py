"""``convnet``: Conv2D or SeparableConv2D blocks with BatchNormalization, residual
connections (identity, or a 1x1 projection when shapes differ), an optional
inception-style block, GlobalAveragePooling and a Dense head."""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import layers

from hpo.data import DataSpec
from search_spaces.common import compile_for, inputs_for, logit_heads, single_output


def _as_image(x: Any, shape: tuple[int, ...]) -> Any:
    """Give 2-D inputs (28x28) a channel axis and flat square inputs (64) an image shape."""
    if len(shape) == 3:
        return x
    if len(shape) == 2:
        return layers.Reshape((*shape, 1))(x)
    side = int(math.isqrt(shape[0]))
    if side * side != shape[0]:
        raise ValueError(f"convnet needs image inputs; got flat shape {shape} that is not a square")
    return layers.Reshape((side, side, 1))(x)


def _inception(x: Any, filters: int) -> Any:
    """Parallel 1x1, 3x3 and pooled branches, concatenated (the course's inception block)."""
    b1 = layers.Conv2D(filters, 1, padding="same", activation="relu")(x)
    b3 = layers.Conv2D(filters, 1, padding="same", activation="relu")(x)
    b3 = layers.Conv2D(filters, 3, padding="same", activation="relu")(b3)
    bp = layers.MaxPooling2D(3, strides=1, padding="same")(x)
    bp = layers.Conv2D(filters, 1, padding="same", activation="relu")(bp)
    return layers.Concatenate()([b1, b3, bp])


def build(hp: Any, spec: DataSpec) -> keras.Model:
    """Convolutional blocks with optional residuals and inception block, then a logit head."""
    inputs = inputs_for(spec)
    inp = list(inputs.values())[0]
    x = _as_image(inp, spec.input_shape)
    n_blocks = hp.Int("blocks", 1, 3, default=2)
    filters = hp.Int("filters", 8, 64, sampling="log", default=16)
    separable = hp.Choice("conv", ["conv", "separable"], default="conv") == "separable"
    batchnorm = hp.Boolean("batchnorm", default=True)
    residual = hp.Boolean("residual", default=True)
    inception = hp.Boolean("inception", default=False)
    dropout = hp.Float("dropout", 0.0, 0.5, default=0.25)
    conv = layers.SeparableConv2D if separable else layers.Conv2D
    for b in range(n_blocks):
        f = filters * 2**b
        shortcut = x
        for _ in range(2):
            x = conv(f, 3, padding="same", use_bias=not batchnorm)(x)
            if batchnorm:
                x = layers.BatchNormalization()(x)
            x = layers.Activation("relu")(x)
        if residual:
            if shortcut.shape[-1] != f:
                shortcut = layers.Conv2D(f, 1, padding="same")(shortcut)  # 1x1 projection
            x = layers.Add()([x, shortcut])
        if x.shape[1] >= 4:
            x = layers.MaxPooling2D(2, padding="same")(x)
    if inception:
        x = _inception(x, filters)
    x = layers.GlobalAveragePooling2D()(x)
    if dropout > 0:
        x = layers.Dropout(dropout)(x)
    outputs = logit_heads(x, spec)
    model = keras.Model(inp, single_output(outputs, spec), name="convnet")
    return compile_for(model, hp, spec)
