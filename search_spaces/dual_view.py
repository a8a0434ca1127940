"""``dual_view``: one ``keras.applications`` base called on two image inputs; its weights are shared.

Both views go through the same base (EfficientNetB0 by default, ``weights=None`` offline
or a local weights file via ``HPO_APPLICATION_WEIGHTS``), the pooled features are
concatenated and a Dense head emits logits.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from hpo.data import DataSpec
from search_spaces.applications import base_model
from search_spaces.common import compile_for, inputs_for, logit_heads, single_output

BASE = "efficientnetb0"


def build(hp: Any, spec: DataSpec) -> keras.Model:
    """Shared base on two views, concatenated pooled features, Dense head."""
    inputs = inputs_for(spec)
    views = list(inputs.values())
    # The base is fixed per study (a config can set space.params.base: {fixed: xception}).
    base = base_model(hp.Fixed("base", BASE), tuple(views[0].shape[1:]))
    pooled = [layers.GlobalAveragePooling2D()(base(v)) for v in views]
    x = layers.Concatenate()(pooled)
    x = layers.Dropout(hp.Float("dropout", 0.0, 0.5, default=0.2))(x)
    x = layers.Dense(hp.Int("head_units", 16, 256, sampling="log", default=64), activation="relu")(x)
    model = keras.Model(inputs, single_output(logit_heads(x, spec), spec), name="dual_view")
    return compile_for(model, hp, spec)
