"""Scoring and predicting a trained model on a split: small splits in one call, large ones in batches."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from hpo.data import Splits, leaves, take
from hpo.execution.forward import Outputs, evaluate, has_program
from hpo.execution.shapes import pad_rows, padded_weights
from hpo.execution.xla import to_tensor

ONE_BATCH_BYTES = 64 * 2**20  # inputs up to this size are scored and predicted in one call


def _nbytes(x: Any) -> int:
    return int(sum(np.asarray(a).nbytes for a in leaves(x)))


def score(model: Any, x: Any, y: Any, rows: int | None = None) -> dict[str, float]:
    """The compiled loss and metrics on (x, y). Small splits go through one compiled call (padded to ``rows``
    rows when given, see :func:`scorable`; :func:`score_and_outputs`): ``evaluate`` builds a new tf.data pipeline
    on every call, which cost ~0.1 s per epoch per split on small data."""
    if _nbytes(x) <= ONE_BATCH_BYTES:
        return score_and_outputs(model, scorable(x, y, rows))[0]
    return {k: float(v) for k, v in model.evaluate(x, y, batch_size=1024, verbose=0, return_dict=True).items()}


def score_on_batch(model: Any, xy: "Scorable") -> dict[str, float]:
    """The compiled loss and metrics on a split prepared by :func:`scorable`, in one ``test_on_batch``."""
    return {k: float(v) for k, v in model.test_on_batch(xy.x, xy.y, sample_weight=xy.sample_weight,
                                                        return_dict=True).items()}


def score_and_outputs(model: Any, xy: "Scorable") -> tuple[dict[str, float], Outputs | None]:
    """The compiled loss and metrics on a split prepared by :func:`scorable` and, under JAX, the model's outputs on
    it from the same compiled program (:mod:`hpo.execution.forward`); None for the outputs where they were not
    computed (other backends, a large split, inputs kept as NumPy)."""
    if xy.large:
        return score(model, xy.x, xy.y), None
    if xy.on_device and has_program(model):
        return evaluate(model, xy.x, xy.y, xy.sample_weight, xy.rows)
    return score_on_batch(model, xy), None


class Scorable(NamedTuple):
    """A split prepared for scoring (:func:`scorable`)."""

    x: Any
    y: Any
    large: bool  # over ONE_BATCH_BYTES: NumPy, scored with ``evaluate``
    sample_weight: Any  # zero on padding rows, None when not padded
    rows: int  # the split's real rows (the first ones)
    on_device: bool  # x and y are backend tensors


def scorable(x: Any, y: Any, rows: int | None = None) -> Scorable:
    """A split small enough for one ``test_on_batch`` as backend tensors, made once per trial instead of
    converting the NumPy arrays on every epoch's call (~0.5 ms of a 1.5 ms call on CPU; a copy to the accelerator
    each time on GPU); a large one stays NumPy and is scored with ``evaluate``.

    With ``rows``, a split of at most that many rows is padded to exactly ``rows`` with zero-weight rows (the
    loss and weighted metrics stay those of the real rows): every split is then scored by one compiled program
    (see :mod:`hpo.execution.shapes`)."""
    n = int(leaves(y)[0].shape[0])
    if _nbytes(x) > ONE_BATCH_BYTES:
        return Scorable(x, y, True, None, n, False)
    import keras

    sw = None
    if rows is not None and n <= rows:
        (x, _), (y, _) = pad_rows(x, rows), pad_rows(y, rows)
        sw = to_tensor(padded_weights(n, rows))
    try:
        return Scorable(keras.tree.map_structure(to_tensor, x), keras.tree.map_structure(to_tensor, y), False, sw, n,
                        True)
    except Exception:  # inputs the backend holds no tensor type for (strings on JAX, say): scored as NumPy
        return Scorable(x, y, False, None if sw is None else padded_weights(n, rows or n), n, False)


def predict(model: Any, x: Any, batch_size: int = 1024) -> Any:
    """The model's outputs on ``x``, called eagerly chunk by chunk: a fresh model's ``predict`` traces a
    function first (~0.3 s per trial on CPU), which a forward pass on a few thousand rows does not need."""
    import keras

    n = int(leaves(x)[0].shape[0])
    try:
        parts = [model(take(x, np.arange(i, min(i + batch_size, n))), training=False) for i in range(0, n, batch_size)]
    except Exception:  # a model that cannot be called eagerly on arrays: Keras' own predict
        return model.predict(x, batch_size=batch_size, verbose=0)
    parts = [keras.tree.map_structure(lambda t: keras.ops.convert_to_numpy(t), p) for p in parts]
    return keras.tree.map_structure(lambda *a: np.concatenate(a, axis=0), *parts)


def flatten_predictions(pred: Any, head_names: list[str]) -> dict[str, np.ndarray]:
    """A model's outputs (one array, a list or a dict) as ``{head name: array}``."""
    if isinstance(pred, dict):
        return {k: np.asarray(v) for k, v in pred.items()}
    if isinstance(pred, (list, tuple)):
        return {h: np.asarray(p) for h, p in zip(head_names, pred)}
    return {head_names[0]: np.asarray(pred)}


def count_rows(splits: Splits, split: str) -> int:
    """Rows of one split."""
    return int(leaves(splits.y[split])[0].shape[0])
