"""Rows as a packed MLP takes them: one input flattened to float32 features, one multiclass head's class labels."""

from __future__ import annotations

from typing import Any

import numpy as np

from hpo.data import leaves


def flat_rows(x: Any) -> np.ndarray:
    """A single-input split as float32 rows ``(n, features)``: what a packed MLP takes."""
    a = np.asarray(leaves(x)[0], dtype="float32")
    return a.reshape(len(a), -1)


def class_labels(y: Any, one_hot: bool = False) -> np.ndarray:
    """A single multiclass head's labels as integer classes ``(n,)`` (one-hot labels are decoded)."""
    a = np.asarray(leaves(y)[0])
    return a.argmax(-1) if one_hot or (a.ndim == 2 and a.shape[1] > 1) else a.reshape(-1).astype("int64")
