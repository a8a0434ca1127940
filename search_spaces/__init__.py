"""Search spaces: Keras model builders declaring their hyperparameters with KerasTuner's ``hp`` calls.

A builder is ``build(hp)`` (any existing KerasTuner builder) or ``build(hp, spec)``
where ``spec`` (:class:`hpo.data.DataSpec`) gives input shapes and output heads.
The table of built-in names and their resolution live in :mod:`hpo.space.builders`
(the framework names this catalogue without importing it).
"""

from __future__ import annotations

from hpo.space.builders import BUILTIN, get_builder

# The dataset each built-in builder is made for (its experiment config and smoke test use it).
DEFAULT_DATASET = {
    "mlp": "digits", "convnet": "digits", "ticket": "ticket", "text_qa": "text_qa", "posts": "posts",
    "siamese": "digit_pairs", "dual_view": "digit_views", "transfer": "digit_images",
    "triplet_embedding": "digit_triplets",
}

__all__ = ["BUILTIN", "DEFAULT_DATASET", "get_builder"]
