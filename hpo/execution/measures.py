"""The built-in measures every trial records (:data:`hpo.objectives.MEASURES`), taken on the trial's own device
after it trained: parameter count, inference latency per 1,000 rows, training seconds per epoch."""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from hpo.data import Splits, leaves, take
from hpo.execution.scoring import predict

LATENCY_ROWS = 1000
LATENCY_CALLS = 3  # timed calls after one warm-up; their median is recorded


def latency_ms_per_1k(model: Any, x: Any) -> float:
    """Milliseconds ``model`` takes to predict 1,000 rows of ``x`` (rows repeated when it has fewer): the median
    of a few timed calls after a warm-up call (which traces and allocates). Each call returns NumPy arrays, so
    an accelerator's work is finished when the clock stops."""
    n = int(leaves(x)[0].shape[0])
    rows = take(x, np.arange(LATENCY_ROWS) % n)
    predict(model, rows, batch_size=LATENCY_ROWS)
    times = []
    for _ in range(LATENCY_CALLS):
        t0 = time.perf_counter()
        predict(model, rows, batch_size=LATENCY_ROWS)
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def model_measures(model: Any, splits: Splits, *, latency: bool = True) -> dict[str, float]:
    """The measures of a trained model: ``params`` and, with ``latency``, ``latency_ms_per_1k`` (on select's rows).
    The third, ``epoch_seconds``, is timed around ``fit`` (:func:`hpo.execution.fitting.fit_model`)."""
    out = {"params": float(model.count_params())}
    if latency:  # timed predict calls of another shape: a compilation under JAX, 0.03-0.6 s a trial on CPU
        out["latency_ms_per_1k"] = latency_ms_per_1k(model, splits.x["select"])
    return out
