"""When this process reuses compiled models across trials (:mod:`hpo.execution.reuse`): under which backends, the
switch that turns it off, and how many of them, of what size, it keeps.

Under JAX a small trial spends most of its time compiling its steps; under TensorFlow tracing its
``tf.function`` steps is a large share too (a digits MLP trial on 2 CPU cores: 41% measured in issue 23, a reused
trial 36% of a fresh one's time in ``experiments/results/reuse_bench.json``). Keras keeps both kinds of compiled step on the model object
(``train_function``, ``test_function``, ``predict_function``), so a kept model trains again without compiling.
Under TensorFlow they outlive ``keras.backend.clear_session()`` between trials: it resets Keras' global state
(name counters, the default seed generator), TF1's default graph and the eager kernel cache, none of which a
traced ``tf.function`` reads; and the custom-gradient registrations that
:func:`hpo.execution.memory.forget_trace_gradients` drops after each trial are read only while a graph is being
traced and differentiated, which for a kept step ended in the trial that traced it (a later retrace, for a new
input shape, registers its own). PyTorch runs Keras' steps eagerly: nothing compiled to reuse, so no model is kept.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any

__all__ = ["MAX_TWIN_MB", "SWITCH", "evict", "reuse_enabled", "state_mb"]

SWITCH = "HPO_REUSE_COMPILED"  # off, 0, false or no: every trial builds and compiles its own model
MAX_TWIN_MB = 1024.0  # the kept models' weights and optimizer state together; $HPO_REUSE_MAX_MB overrides
_BACKENDS = ("jax", "tensorflow")


def reuse_enabled() -> bool:
    """True under JAX and TensorFlow unless ``$HPO_REUSE_COMPILED`` is ``off`` (or ``0``, ``false``, ``no``)."""
    import keras

    if os.environ.get(SWITCH, "").strip().lower() in ("off", "0", "false", "no"):
        return False
    return keras.backend.backend() in _BACKENDS


def state_mb(model: Any) -> float:
    """Megabytes of a model's variables and its optimizer's (once built)."""
    variables = list(model.variables)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and getattr(optimizer, "built", False):
        variables += list(optimizer.variables)
    total = 0
    for v in variables:
        n = 1
        for d in v.shape:
            n *= int(d or 0)
        total += n * _itemsize(v.dtype)
    return total / 2**20


def _itemsize(dtype: Any) -> int:
    import numpy as np

    try:
        return int(np.dtype(str(dtype)).itemsize)
    except TypeError:  # bfloat16 and other dtypes NumPy does not name
        return 2 if "16" in str(dtype) else 4


def _budget_mb() -> float:
    try:
        return float(os.environ.get("HPO_REUSE_MAX_MB", MAX_TWIN_MB))
    except ValueError:
        return MAX_TWIN_MB


def evict(twins: "OrderedDict[str, Any]", max_count: int) -> None:
    """Drop the least recently used kept models until at most ``max_count`` remain and their state fits in
    ``$HPO_REUSE_MAX_MB`` (default :data:`MAX_TWIN_MB`); a model alone over the budget is not kept either (its
    device memory goes back after its trial, as without reuse)."""
    while len(twins) > max_count:
        twins.popitem(last=False)
    budget = _budget_mb()
    sizes = {key: state_mb(model) for key, model in twins.items()}
    while twins and sum(sizes.values()) > budget:
        key, _ = twins.popitem(last=False)
        sizes.pop(key)
