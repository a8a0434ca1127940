"""``siamese``: one shared layer applied to two inputs (the course's shared LSTM).

Both inputs go through the same ``shared_encoder`` (an LSTM over the rows of an
image or sequence, or a Dense stack), the two encodings are concatenated and a
sigmoid (as a logit) says whether they match. One layer object, one set of variables.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from hpo.data import DataSpec
from search_spaces.common import compile_for, inputs_for, logit_heads, single_output


def build(hp: Any, spec: DataSpec) -> keras.Model:
    """A shared encoder called on both inputs, concatenated, one logit."""
    inputs = inputs_for(spec)
    left, right = list(inputs.values())
    kind = hp.Choice("encoder", ["lstm", "dense"], default="lstm")
    units = hp.Int("units", 8, 128, sampling="log", default=32)
    if kind == "lstm":
        encoder = layers.LSTM(units, name="shared_encoder")
    else:
        encoder = keras.Sequential([layers.Flatten(), layers.Dense(units, activation="relu")], name="shared_encoder")
    x = layers.Concatenate()([encoder(left), encoder(right)])
    x = layers.Dense(hp.Int("head_units", 8, 64, sampling="log", default=16), activation="relu")(x)
    model = keras.Model(inputs, single_output(logit_heads(x, spec), spec), name="siamese")
    return compile_for(model, hp, spec)
