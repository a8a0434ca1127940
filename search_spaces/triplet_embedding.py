"""``triplet_embedding``: the course's face-expression comparison model, on triplets of images.

A shared image encoder → Dropout → Dense(``embedding_size``) → L2 normalisation × ``scale``
is applied to each image of a triplet; training uses the votes-weighted triplet loss
(δ = 0.5) and the triplet accuracy that counts only triplets whose top vote exceeds 0.5.
The course tunes ``embedding_size`` and ``scale`` by hand, one at a time; here both are searched.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops

from hpo.data import DataSpec

DELTA = 0.5


def _distances(e: Any) -> tuple[Any, Any, Any]:
    """Squared distances d01, d02, d12 between the three embeddings of each triplet (e: n x 3 x d)."""
    e0, e1, e2 = e[:, 0], e[:, 1], e[:, 2]
    return (ops.sum(ops.square(e0 - e1), -1), ops.sum(ops.square(e0 - e2), -1), ops.sum(ops.square(e1 - e2), -1))


def per_far_losses(e: Any, delta: float = DELTA) -> Any:
    """For each choice of the odd image k (columns), the course's triplet loss with the other two as the near pair."""
    d01, d02, d12 = _distances(e)
    relu = ops.relu
    loss0 = relu(d12 - d01 + delta) + relu(d12 - d02 + delta)  # far = 0, near = (1, 2)
    loss1 = relu(d02 - d01 + delta) + relu(d02 - d12 + delta)  # far = 1, near = (0, 2)
    loss2 = relu(d01 - d02 + delta) + relu(d01 - d12 + delta)  # far = 2, near = (0, 1)
    return ops.stack([loss0, loss1, loss2], axis=-1)


def per_far_correct(e: Any) -> Any:
    """For each choice of the odd image k, whether the near pair is the closest pair."""
    d01, d02, d12 = _distances(e)
    c0 = ops.logical_and(d01 > d12, d02 > d12)
    c1 = ops.logical_and(d01 > d02, d12 > d02)
    c2 = ops.logical_and(d02 > d01, d12 > d01)
    return ops.cast(ops.stack([c0, c1, c2], axis=-1), "float32")


@keras.saving.register_keras_serializable(package="hpo_search_spaces")
class VotesTripletLoss(keras.losses.Loss):
    """Σ_k votes_k · loss(far = image k), averaged over triplets (the course's ``triplet_loss``)."""

    def __init__(self, delta: float = DELTA, name: str = "votes_triplet_loss", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.delta = delta

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return ops.sum(ops.cast(y_true, "float32") * per_far_losses(y_pred, self.delta), axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "delta": self.delta}


@keras.saving.register_keras_serializable(package="hpo_search_spaces")
class TripletAccuracy(keras.metrics.Metric):
    """Share of triplets whose most-voted image is the odd one out in embedding space.

    Triplets whose top vote is at most 0.5 are not counted; with none counted, 0.5 (as the course).
    """

    def __init__(self, name: str = "triplet_accuracy", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        votes = ops.cast(y_true, "float32")
        valid = ops.cast(ops.max(votes, axis=-1) > 0.5, "float32")
        far = ops.one_hot(ops.argmax(votes, axis=-1), 3)
        hit = ops.sum(far * per_far_correct(y_pred), axis=-1)
        self.correct.assign_add(ops.sum(hit * valid))
        self.count.assign_add(ops.sum(valid))

    def result(self) -> Any:
        return ops.where(self.count > 0, self.correct / ops.maximum(self.count, 1.0), 0.5)

    def reset_state(self) -> None:
        self.correct.assign(0.0)
        self.count.assign(0.0)


def build(hp: Any, spec: DataSpec) -> keras.Model:
    """A shared encoder over the three images of a triplet; output (n, 3, embedding_size)."""
    name, shape = next(iter(spec.inputs.items()))
    image_shape = tuple(shape[1:])
    enc_in = keras.Input(image_shape)
    x = enc_in if len(image_shape) == 3 else layers.Reshape((*image_shape, 1))(enc_in)
    for i in range(hp.Int("conv_blocks", 1, 2, default=1)):
        x = layers.Conv2D(hp.Int("filters", 8, 64, sampling="log", default=16), 3, padding="same",
                          activation="relu", name=f"conv_{i}")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(hp.Float("dropout", 0.0, 0.5, default=0.1))(x)
    x = layers.Dense(hp.Int("embedding_size", 4, 64, sampling="log", default=16))(x)
    x = layers.UnitNormalization()(x)
    x = layers.Rescaling(hp.Float("scale", 0.5, 8.0, sampling="log", default=1.0))(x)
    encoder = keras.Model(enc_in, x, name="encoder")
    triplet = keras.Input(shape, name=name)
    out = layers.TimeDistributed(encoder, name=spec.heads[0].name)(triplet)
    model = keras.Model(triplet, out, name="triplet_embedding")
    lr = hp.Float("learning_rate", 1e-4, 1e-2, sampling="log", default=1e-3)
    model.compile(keras.optimizers.Adam(lr), loss=VotesTripletLoss(), metrics=[TripletAccuracy()])
    return model
