"""The one rule for metric names: Keras' epoch logs (``loss``, ``val_accuracy``, our ``audit_accuracy``) and
the split-qualified names a study records (``train_loss``, ``select_accuracy``, ``audit_accuracy``).

Keras names the scores on the validation data given to ``fit`` ``val_*``; in a study that data is always the
``select`` split, so ``val_x`` and ``select_x`` are the same score."""

from __future__ import annotations


def split_name(key: str) -> str:
    """An epoch-log key by its split: ``val_x`` -> ``select_x``, ``audit_x`` stays, any other ``x`` -> ``train_x``."""
    if key.startswith("val_"):
        return "select_" + key[4:]
    if key.startswith("audit_"):
        return key
    return "train_" + key
