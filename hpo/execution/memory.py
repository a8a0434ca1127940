"""Memory between trials: Keras' global state dropped after each trial, TensorFlow's per-trace gradient
registrations forgotten, garbage collected on a budget."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator


class _CollectionBudget:
    """When to run a full garbage collection between trials.

    Keras' ``clear_session()`` runs ``gc.collect()`` each time. A full collection walks every object
    in the process, and TensorFlow's tracing leaves thousands behind per trial, so on small trials it
    came to 0.6-1.2 s per trial, more than the training (experiments/RESULTS.md, overhead). Here a full
    collection runs only once the training time since the last one is at least ``RATIO`` times what
    the last collection took: at most ~1% of wall time, and after every trial when trials are long
    (where the models it frees, and their accelerator memory, are large). Python's own generational
    collector keeps running in between, and :func:`frozen_heap` keeps a study's collections to what
    its trials made (0.1 s instead of 0.3-0.4 s each on 2 cores).
    """

    RATIO = 100.0
    FIRST_COST_S = 0.1  # assumed cost before the first collection is measured (0.1-1.2 s seen on 2 CPU cores)

    def __init__(self) -> None:
        self.last_cost_s = self.FIRST_COST_S
        self.since = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self.since >= self.RATIO * self.last_cost_s

    def collect(self) -> None:
        import gc

        t0 = time.monotonic()
        gc.collect()
        self.since = time.monotonic()
        self.last_cost_s = self.since - t0


_GC = _CollectionBudget()


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep the objects that exist on entry (imported modules, TensorFlow's and Keras' own state, the data)
    out of the garbage collector's walks until exit.

    Every full collection walks every tracked object; with TensorFlow and Keras imported that is ~400,000
    objects before the first trial, and a collection took 0.3-0.4 s on 2 cores, 0.1 s with them frozen
    (``gc.freeze``). Cyclic garbage that already existed on entry is collected after exit instead of during
    the block. A process that froze objects itself is left as it is."""
    import gc

    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


_KEPT_GRADIENTS: set[str] | None = None  # TensorFlow's custom gradients registered before the first trial


def forget_trace_gradients() -> int:
    """Unregister the custom gradients TensorFlow registered while the trials since the last call were traced;
    returns how many. Nothing happens under other backends or before TensorFlow is imported.

    Written by hand because TensorFlow leaks here and no public call frees it: every trace of a Keras
    train step under TensorFlow goes through the optimizer's all-reduce (``ReplicaContext.all_reduce``),
    which is a ``tf.custom_gradient``; in graph mode that registers a uniquely named gradient function
    ("CustomGradient-<n>") in a process-wide registry and never removes it, and the function's closure keeps
    the whole traced graph alive. That was ~4-6 MB per trial, 1.26 GB over a 200-trial study
    (experiments/results/long_study.json). A registration is read only while its graph is traced and
    differentiated, which ends with the trial's ``fit``; the registrations that exist before the first trial
    (the user's own, made at import) are kept."""
    global _KEPT_GRADIENTS
    ops = sys.modules.get("tensorflow.python.framework.ops")
    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    if not isinstance(registry, dict):  # not TensorFlow, or a TensorFlow whose internals moved: leave it be
        return 0
    if _KEPT_GRADIENTS is None:
        _KEPT_GRADIENTS = {k for k in registry if str(k).startswith("CustomGradient-")}
        return 0
    stale = [k for k in list(registry) if str(k).startswith("CustomGradient-") and k not in _KEPT_GRADIENTS]
    for key in stale:
        registry.pop(key, None)
    return len(stale)


def start_trial_memory() -> None:
    """Note what exists before the first trial (see :func:`forget_trace_gradients`)."""
    if _KEPT_GRADIENTS is None:
        forget_trace_gradients()


def release_memory(force: bool = False) -> None:
    """Drop Keras' global state and TensorFlow's per-trace gradient registrations after a trial; collect garbage
    when :class:`_CollectionBudget` allows."""
    import keras

    keras.backend.clear_session(free_memory=False)
    forget_trace_gradients()
    if force or _GC.due():
        _GC.collect()
