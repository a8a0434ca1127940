"""``keras.applications`` bases, offline: ``weights=None`` or a local weights file."""

from __future__ import annotations

import os
from typing import Any

import keras

BASES = {"efficientnetb0": "EfficientNetB0", "xception": "Xception", "mobilenetv2": "MobileNetV2",
         "mobilenetv3small": "MobileNetV3Small"}


def base_model(name: str, input_shape: tuple[int, ...], weights: str | None = None) -> keras.Model:
    """A headless application with average pooling; ``weights`` is None or a local file (never a download)."""
    if name not in BASES:
        raise ValueError(f"base must be one of {', '.join(BASES)}, got {name!r}")
    weights = weights or os.environ.get("HPO_APPLICATION_WEIGHTS") or None
    if weights is not None and not os.path.exists(weights):
        raise FileNotFoundError(f"weights file {weights!r} not found (nothing is downloaded)")
    cls: Any = getattr(keras.applications, BASES[name])
    extra: dict[str, Any] = {"minimalistic": True, "include_preprocessing": False} if name == "mobilenetv3small" else {}
    return cls(include_top=False, weights=weights, input_shape=input_shape, pooling=None, name=f"base_{name}", **extra)
