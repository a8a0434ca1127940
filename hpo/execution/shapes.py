"""One shape per compiled function: the last partial training batch padded with zero-weight rows, and select,
audit and test padded to one forward size, so a backend that compiles per shape (JAX) compiles one train step,
one test step and one predict step per model instead of one more for every odd-sized batch."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from hpo.data import leaves, take
from hpo.execution.xla import compiles_per_shape

__all__ = ["PaddedEpochs", "fit_inputs", "forward_rows", "pad_rows", "padding_fill", "pads_safely", "padded_predict",
           "trains_padded_safely"]

MAX_FORWARD_ROWS = 1024  # larger splits are cut into chunks of this many rows


def pads_safely(model: Any) -> bool:
    """True when zero-weight rows leave every compiled number unchanged: the model's metrics are all weighted
    (Keras applies ``sample_weight`` to ``weighted_metrics`` only; a ``metrics=`` accuracy would count padded
    rows). The framework's default compilation (:func:`hpo.space.compile.compile_for`) compiles that way."""
    try:
        cfg = model.get_compile_config() or {}
    except Exception:
        return False
    return bool(cfg) and not cfg.get("metrics")


def trains_padded_safely(model: Any) -> bool:
    """True when padding the last training batch leaves training unchanged: :func:`pads_safely`, and no layer
    computes statistics over the batch in training (BatchNormalization: copies of a row would enter its mean
    and variance; at inference it reads its moving statistics, so padded forward calls stay safe)."""
    import keras

    if not pads_safely(model):
        return False
    layers = list(model._flatten_layers(include_self=False, recursive=True))  # noqa: SLF001 - nested models too
    # a batch normalisation that reads the row mask of PaddingRows leaves the padding out of its statistics
    return not any(isinstance(layer, keras.layers.BatchNormalization) and
                   not (getattr(layer, "row_mask", False) and padding_fill(model) is not None) for layer in layers)


def padding_fill(model: Any) -> float | None:
    """The value every input of a padding row holds: NaN for a model whose first layer marks such rows
    (:class:`~hpo.execution.template_layers.PaddingRows`, in supernets with batch normalisation) so that its
    batch statistics leave them out; None (copies of a real row) otherwise."""
    from hpo.execution.template_layers import PaddingRows

    return float("nan") if any(isinstance(la, PaddingRows) for la in getattr(model, "layers", ())) else None


def forward_rows(sizes: list[int], batch: int = 8) -> int:
    """The one row count every forward call of a trial uses: the largest split rounded up to ``batch``, at most
    :data:`MAX_FORWARD_ROWS` (larger splits go in several calls of that size)."""
    return min(MAX_FORWARD_ROWS, batch * math.ceil(max(sizes) / batch))


def pad_rows(x: Any, rows: int) -> tuple[Any, int]:
    """``x`` with its first row repeated up to a multiple of ``rows`` rows, and its real row count."""
    n = int(leaves(x)[0].shape[0])
    total = rows * max(1, math.ceil(n / rows))
    if total == n:
        return x, n
    return take(x, np.concatenate([np.arange(n), np.zeros(total - n, dtype=int)])), n


def padded_weights(n: int, rows: int) -> np.ndarray:
    """Sample weights of one padded batch: ``rows / n`` on the ``n`` real rows, 0 on the padding. Keras divides a
    weighted loss by the batch's row count, so the real rows weigh ``rows / n`` for the loss to be their mean;
    weighted metrics divide by the sum of weights and are the real rows' plain mean either way."""
    w = np.zeros(rows, dtype="float32")
    w[:n] = rows / n
    return w


def padded_predict(model: Any, x: Any, rows: int) -> Any:
    """The model's outputs on ``x`` through its compiled ``predict_on_batch``, every call on exactly ``rows``
    rows (one compiled program), sliced back to ``x``'s rows."""
    import keras

    xp, n = pad_rows(x, rows)
    total = int(leaves(xp)[0].shape[0])
    parts = [model.predict_on_batch(take(xp, np.arange(i, i + rows))) for i in range(0, total, rows)]
    parts = [keras.tree.map_structure(lambda t: np.asarray(keras.ops.convert_to_numpy(t)), p) for p in parts]
    return keras.tree.map_structure(lambda *a: np.concatenate(a, axis=0)[:n], *parts)


@functools.lru_cache(maxsize=None)
def _padded_epochs_class() -> type:
    import keras

    class _PaddedEpochs(keras.utils.PyDataset):
        """Training batches of exactly ``batch_size`` rows: shuffled every epoch like Keras' own array input,
        the last partial batch completed with zero-weight copies of a row and its real rows weighted
        ``batch / real`` (see :func:`padded_weights`), so each step's gradient is the one of the unpadded
        batch. Train-split metrics in the logs weigh the last batch's rows by that factor too. With ``pad`` false
        the last batch keeps its real rows only (weights 1): the same shuffle without padding. With ``fill``
        (see :func:`padding_fill`), the padding rows' inputs hold that value instead of a real row's."""

        def __init__(self, x: Any, y: Any, batch_size: int, seed: int, pad: bool = True,
                     fill: float | None = None) -> None:
            super().__init__()
            self.x, self.y, self.batch_size, self.pad, self.fill = x, y, int(batch_size), bool(pad), fill
            self.n = int(leaves(y)[0].shape[0])
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(self.n)
            self.full = np.ones(self.batch_size, dtype="float32")
            self.served = 0

        def __len__(self) -> int:
            return math.ceil(self.n / self.batch_size)

        def __getitem__(self, i: int) -> tuple[Any, Any, np.ndarray]:
            self.served += 1
            idx = self.order[i * self.batch_size:(i + 1) * self.batch_size]
            real = len(idx)
            if real == self.batch_size:
                return take(self.x, idx), take(self.y, idx), self.full
            if not self.pad:
                return take(self.x, idx), take(self.y, idx), self.full[:real]
            idx = np.concatenate([idx, np.full(self.batch_size - real, idx[0])])
            x = take(self.x, idx)
            if self.fill is not None:
                x = _fill_tail(x, real, self.fill)
            return x, take(self.y, idx), padded_weights(real, self.batch_size)

        def on_epoch_end(self) -> None:
            # Keras also calls this after peeking at one batch to build an unbuilt model: the order moves on
            # only after a whole epoch, so a fresh model and an already built one see the same batches.
            if self.served >= len(self):
                self.order = self.rng.permutation(self.n)
            self.served = 0

    return _PaddedEpochs


def _fill_tail(x: Any, real: int, value: float) -> Any:
    """``x`` (a freshly taken batch) with every row after the first ``real`` set to ``value``."""
    import keras

    def fill(a: Any) -> Any:
        a = np.array(a, copy=True)
        a[real:] = value
        return a

    return keras.tree.map_structure(fill, x)


def PaddedEpochs(x: Any, y: Any, batch_size: int, seed: int, pad: bool = True,  # noqa: N802 - a PyDataset
                 fill: float | None = None) -> Any:
    """A ``keras.utils.PyDataset`` of padded (unless ``pad`` is false), per-epoch shuffled training batches (see
    ``_PaddedEpochs``)."""
    return _padded_epochs_class()(x, y, batch_size, seed, pad, fill)


def fit_inputs(model: Any, batch_size: int, x: Any, y: Any, seed: int | None = None) -> tuple[tuple[Any, ...],
                                                                                            dict[str, Any]]:
    """The arguments and keywords (beside epochs and callbacks) ``model.fit`` trains on ``x``, ``y`` with in
    batches of ``batch_size``; ``seed`` shuffles padded epochs (None: drawn from NumPy's global state)."""
    n = int(leaves(y)[0].shape[0])
    if n % batch_size and compiles_per_shape() and pads_safely(model):
        # One train step shape instead of two (the last partial batch padded): see hpo.execution.shapes.
        # A model whose batch statistics padding would change (batch normalisation outside a template)
        # trains its last batch unpadded, from the same shuffle: a trial's rows come in one order whether
        # it trains in its own model or in a compiled template (hpo.execution.templates), so its numbers do
        # not depend on which of the two its process had at hand.
        padded = trains_padded_safely(model)
        seed = int(np.random.randint(2**31 - 1)) if seed is None else seed
        data = PaddedEpochs(x, y, batch_size, seed=seed, pad=padded, fill=padding_fill(model) if padded else None)
        return (data,), {"shuffle": False}  # rows are shuffled by data
    return (x, y), {"batch_size": batch_size}
