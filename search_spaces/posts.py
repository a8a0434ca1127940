"""``posts``: the course's one-input, three-output social-media model.

Token sequence → Embedding → Conv1D/MaxPooling1D stack → GlobalMaxPooling1D → Dense →
``age`` (regression, mse), ``income`` (softmax, as logits) and ``gender`` (sigmoid, as a
logit); the loss weights of the heads are searched.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from hpo.data import DataSpec
from search_spaces.common import compile_for, inputs_for, logit_heads


def build(hp: Any, spec: DataSpec) -> keras.Model:
    """Embedding, a Conv1D stack, global max pooling, one Dense layer, three heads."""
    inputs = inputs_for(spec)
    x = layers.Embedding(hp.Choice("vocabulary", [1000, 2000], default=1000),
                         hp.Int("embedding", 16, 128, sampling="log", default=64))(inputs["posts"])
    filters = hp.Int("filters", 16, 128, sampling="log", default=64)
    kernel = hp.Choice("kernel_size", [3, 5], default=5)
    for i in range(hp.Int("conv_blocks", 1, 3, default=2)):
        x = layers.Conv1D(filters, kernel, activation="relu", padding="same", name=f"conv_{i}")(x)
        x = layers.MaxPooling1D(2, name=f"pool_{i}")(x)
    x = layers.GlobalMaxPooling1D()(x)
    x = layers.Dense(hp.Int("dense", 16, 128, sampling="log", default=64), activation="relu")(x)
    model = keras.Model(inputs, logit_heads(x, spec), name="posts")
    weights = {h.name: hp.Float(f"{h.name}_loss_weight", 0.1, 10.0, sampling="log", default=1.0) for h in spec.heads}
    return compile_for(model, hp, spec, loss_weights=weights)
