"""Trials that continue another trial's training (KerasTuner's Hyperband promotes a trial to a later round): the
earlier trial's checkpoint (weights and optimizer state) saved in its trial directory, and loaded into the
promoted trial's freshly built model.

The checkpoint is Keras' weights file (``model.save_weights``), which holds the optimizer's variables too: loading
it reads arrays only, never code, so a run directory from someone else cannot run anything through it (the study
checks that its path lies inside the run directory, symlinks resolved, before it is read)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CHECKPOINT", "Resume", "load_checkpoint", "save_checkpoint"]

CHECKPOINT = "checkpoint.weights.h5"


@dataclass(frozen=True)
class Resume:
    """Where a promoted trial starts: its parent trial's number and checkpoint, and the epochs the parent trained
    (fit's ``initial_epoch``)."""

    parent: int
    path: str
    initial_epoch: int


def save_checkpoint(model: Any, trial_dir: Path) -> Path:
    """The model's weights and its optimizer's state in ``trial_dir``, written through a temporary file and a rename
    (a study killed meanwhile leaves no half checkpoint for a later trial to load)."""
    trial_dir.mkdir(parents=True, exist_ok=True)
    path = trial_dir / CHECKPOINT
    tmp = trial_dir / f".{os.getpid()}.tmp.{CHECKPOINT}"  # Keras wants the .weights.h5 ending
    model.save_weights(tmp)
    tmp.replace(path)
    return path


def load_checkpoint(model: Any, path: str | Path) -> None:
    """Load a checkpoint of :func:`save_checkpoint` into ``model`` (built and compiled by the trial's builder),
    optimizer state included; raises when it does not fit the model."""
    import warnings

    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        # Keras skips (with a warning) the saved optimizer variables of an optimizer that has none yet: this is
        # how KerasTuner's Hyperband (which loads into a model that has not trained) ends up with weights only.
        optimizer.build(model.trainable_variables)
    with warnings.catch_warnings():
        # A checkpoint that does not fit the model is an error here, not Keras' warning and a half-loaded model.
        warnings.filterwarnings("error", message=".*Skipping variable loading.*")
        model.load_weights(str(path))
