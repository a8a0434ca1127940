"""The combination layer of an ensemble artifact (serialisable; no Lambda, so safe-mode loading works)."""

from __future__ import annotations

from typing import Any, Sequence

import keras
from keras import ops

VOTE_EPS = 1e-3


@keras.saving.register_keras_serializable(package="hpo_ensembles")
class Combine(keras.layers.Layer):
    """Pools members' outputs of one head.

    Classification heads take logits (each divided by its member's temperature when
    ``member_temperatures`` is given) and return probabilities (a binary head returns the
    positive class's probability, shape (n, 1)); regression heads return the weighted mean.
    """

    def __init__(self, method: str = "probs", member_weights: Sequence[float] = (), temperature: float = 1.0,
                 kind: str = "multiclass", member_temperatures: Sequence[float] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if method not in ("probs", "logits", "geometric", "vote"):
            raise ValueError(f"method must be probs, logits, geometric or vote; got {method!r}")
        total = float(sum(member_weights))
        self.method = method
        self.member_weights = [float(w) / total for w in member_weights]
        self.temperature = float(temperature)
        self.kind = kind
        # each member's own temperature (ensembles.calibrate), applied to its logits before pooling
        self.member_temperatures = None if member_temperatures is None else [float(t) for t in member_temperatures]

    def call(self, inputs: list[Any]) -> Any:
        w = self.member_weights
        if self.kind == "regression":
            return sum(wi * ops.cast(x, "float32") for wi, x in zip(w, inputs))
        if self.kind == "embedding":  # weighted mean, re-normalised to the members' mean norm
            es = [ops.cast(x, "float32") for x in inputs]
            mean = sum(wi * e for wi, e in zip(w, es))
            norm = sum(wi * ops.sqrt(ops.sum(ops.square(e), axis=-1, keepdims=True)) for wi, e in zip(w, es))
            return mean / ops.maximum(ops.sqrt(ops.sum(ops.square(mean), axis=-1, keepdims=True)), 1e-12) * norm
        zs = [ops.cast(z, "float32") for z in inputs]
        if self.member_temperatures is not None:
            zs = [z / t for z, t in zip(zs, self.member_temperatures)]
        if self.kind == "binary":
            zs = [ops.concatenate([ops.zeros_like(z), z], axis=-1) for z in zs]
        if self.method == "probs":
            q = sum(wi * ops.softmax(z, axis=-1) for wi, z in zip(w, zs))
            lp = ops.log(ops.clip(q, 1e-12, 1.0))
        elif self.method == "logits":
            lp = ops.log_softmax(sum(wi * z for wi, z in zip(w, zs)), axis=-1)
        elif self.method == "geometric":
            lp = ops.log_softmax(sum(wi * ops.log_softmax(z, axis=-1) for wi, z in zip(w, zs)), axis=-1)
        else:
            n_classes = zs[0].shape[-1]
            q = sum(wi * ops.one_hot(ops.argmax(z, axis=-1), n_classes) for wi, z in zip(w, zs))
            lp = ops.log((q + VOTE_EPS) / (1.0 + VOTE_EPS * n_classes))
        p = ops.softmax(lp / self.temperature, axis=-1)
        return p[:, 1:2] if self.kind == "binary" else p

    def compute_output_shape(self, input_shape: Any) -> Any:
        shape = tuple(input_shape[0])
        return shape[:-1] + (1,) if self.kind == "binary" else shape  # embedding/regression: unchanged

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "method": self.method, "member_weights": self.member_weights,
                "temperature": self.temperature, "kind": self.kind, "member_temperatures": self.member_temperatures}
