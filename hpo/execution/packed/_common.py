"""What the layers, metrics and optimizers of a packed model share: the Keras serialization package name and
the helpers for a leading member axis."""

from __future__ import annotations

from typing import Any, Sequence

import keras
from keras import ops

# Registered names are "hpo_packed>ClassName": models saved by earlier versions load only while it stays so.
PACKAGE = "hpo_packed"


def per_member(value: float | Sequence[float] | None, members: int, what: str) -> list[float] | None:
    """One float per member from a scalar or a sequence; ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return [float(value)] * members
    out = [float(v) for v in value]
    if len(out) != members:
        raise ValueError(f"{what} needs one value per member ({members}); got {len(out)}: {out}")
    return out


def variable_numpy(v: Any) -> Any:
    """A variable's value as a NumPy array (``Variable.numpy()`` warns under JAX with NumPy 2, its value does not)."""
    return v.numpy() if keras.backend.backend() == "tensorflow" else ops.convert_to_numpy(v.value)


def member_shape(members: int, rank: int) -> tuple[int, ...]:
    """Shape that broadcasts a ``(members,)`` vector over a rank-``rank`` member-major tensor."""
    return (members,) + (1,) * (rank - 1)
