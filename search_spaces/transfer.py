"""``transfer``: a ``keras.applications`` base as a layer, GlobalMaxPool, Dropout, Dense head.

Whether the base is trained or frozen is searched. Offline: ``weights=None`` or a local
weights file via ``HPO_APPLICATION_WEIGHTS``.
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
    """Base (trainable or frozen) → GlobalMaxPooling2D → Dropout → Dense logits."""
    inputs = inputs_for(spec)
    image = list(inputs.values())[0]
    # The base is fixed per study (a config can set space.params.base: {fixed: xception}).
    base = base_model(hp.Fixed("base", BASE), tuple(image.shape[1:]))
    base.trainable = hp.Boolean("train_base", default=True)
    x = layers.GlobalMaxPooling2D()(base(image, training=False) if not base.trainable else base(image))
    x = layers.Dropout(hp.Float("dropout", 0.0, 0.5, default=0.2))(x)
    model = keras.Model(image, single_output(logit_heads(x, spec), spec), name="transfer")
    return compile_for(model, hp, spec)
