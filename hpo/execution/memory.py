"""Memory between trials: Keras' global state dropped after each trial, garbage collected on a budget."""

from __future__ import annotations

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


def release_memory(force: bool = False) -> None:
    """Drop Keras' global state after a trial; collect garbage when :class:`_CollectionBudget` allows."""
    import keras

    keras.backend.clear_session(free_memory=False)
    if force or _GC.due():
        _GC.collect()
