"""``text_qa``: the course's two-input question-answering model.

``text`` and ``question`` (token sequences) → separate Embedding and LSTM each →
concatenate → softmax (as logits) over the answers. Vocabulary, embedding sizes
and LSTM units are searched.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from hpo.data import DataSpec
from search_spaces.common import compile_for, inputs_for, logit_heads, single_output


def build(hp: Any, spec: DataSpec) -> keras.Model:
    """Two Embedding+LSTM branches, concatenated, one logit head."""
    inputs = inputs_for(spec)
    vocabulary = hp.Choice("vocabulary", [1000, 2000], default=1000)  # token ids of the data lie below 1000
    encoded = []
    for name in ("text", "question"):
        x = layers.Embedding(vocabulary, hp.Int(f"{name}_embedding", 8, 64, sampling="log", default=32),
                             name=f"{name}_embedding")(inputs[name])
        encoded.append(layers.LSTM(hp.Int(f"{name}_lstm_units", 8, 64, sampling="log", default=32),
                                   name=f"{name}_lstm")(x))
    x = layers.Concatenate()(encoded)
    model = keras.Model(inputs, single_output(logit_heads(x, spec), spec), name="text_qa")
    return compile_for(model, hp, spec)
