"""When a trial should train in a larger compiled program (a wider template, a bigger supernet) instead of
compiling one of its own size: when the extra arithmetic it then pays costs less than one more compilation."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["COMPILE_S", "THROUGHPUT", "macs_per_row", "platform", "worth_extra"]

# Sustained float32 throughput (FLOP/s) and the seconds a new program costs to compile (its train step, about
# 1-1.4 s, with its scoring program, hpo.execution.forward, 0.3 s more), as measured on the 2 CPU cores of
# experiments/compiles.py: a 4x256 Dense stack trains at ~30 GFLOP/s, the convnet of quickstart_convnet.yaml at
# ~70 (a 32-filter trial 0.37 s slower than a 16-filter one, against 1.2-2.6 s to compile either). The lower of
# the two: underestimating throughput only makes trials train in larger programs less often.
THROUGHPUT = {"cpu": 3e10, "gpu": 5e11, "tpu": 5e11}
COMPILE_S = 1.5


def platform() -> str:
    """The platform JAX computes on (``cpu``, ``gpu``, ``tpu``)."""
    import jax

    return jax.default_backend()


def worth_extra(extra: float, own: float, batch_size: int, steps: int | None, on: str) -> bool:
    """True when ``extra`` multiply-adds per row on top of a model's ``own``, over ``steps`` train steps of
    ``batch_size`` rows (times 6 for the forward and backward passes) at :data:`THROUGHPUT` of platform ``on``,
    cost at most :data:`COMPILE_S`. Unknown ``steps``: only at most twice the model's own arithmetic."""
    if steps is None:
        return extra <= own
    return 6.0 * extra * batch_size * steps / THROUGHPUT.get(on, THROUGHPUT["cpu"]) <= COMPILE_S


def macs_per_row(model: Any) -> int | None:
    """Multiply-adds of ``model``'s Dense and Conv2D layers for one input row (each kernel's size times the
    positions it is applied at); None when an output shape is not known."""
    import keras

    total = 0
    try:
        for layer in model._flatten_layers(include_self=False):
            if not isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)) or getattr(layer, "kernel", None) is None:
                continue
            positions = tuple(layer.output.shape[1:-1])  # raises for a layer called more than once
            total += math.prod(int(d) for d in layer.kernel.shape) * math.prod(int(d) for d in positions)
    except Exception:  # an unknown (None) or ambiguous shape: no estimate, so no larger program
        return None
    return total
