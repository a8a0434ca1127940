"""``ticket``: the course's functional multi-input, multi-output model.

Inputs ``title``, ``text_body`` and ``tags`` (bag-of-words) are concatenated, go
through Dense layers, and feed two heads: ``priority`` (sigmoid, emitted as a
logit) and ``department`` (softmax, emitted as logits), with per-output losses
and a searched loss weight.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from hpo.data import DataSpec
from search_spaces.common import compile_for, inputs_for, logit_heads


def build(hp: Any, spec: DataSpec) -> keras.Model:
    """Concatenate the three inputs, Dense stack, two logit heads, searched loss weights."""
    inputs = inputs_for(spec)
    x = layers.Concatenate()(list(inputs.values()))
    units = hp.Int("units", 16, 256, sampling="log", default=64)
    for i in range(hp.Int("layers", 1, 2, default=1)):
        x = layers.Dense(units, activation="relu", name=f"dense_{i}")(x)
    dropout = hp.Float("dropout", 0.0, 0.5, default=0.0)
    if dropout > 0:
        x = layers.Dropout(dropout)(x)
    outputs = logit_heads(x, spec)
    model = keras.Model(inputs, outputs, name="ticket")
    w = hp.Float("priority_loss_weight", 0.2, 5.0, sampling="log", default=1.0)
    weights = {h.name: (w if h.name == "priority" else 1.0) for h in spec.heads}
    return compile_for(model, hp, spec, loss_weights=weights)
