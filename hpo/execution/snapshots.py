"""Snapshots: a trial's logits (and model) at chosen epochs, saved while it trains, within a disk budget.

They widen the ensemble's candidate pool at no extra training (``ensemble.snapshot_epochs``): an earlier
epoch of a good trial is another member, often a more diverse one than another trial. Each snapshot is
``trials/NNNNN/snapshots/epoch_EEE/`` with ``predictions.npz`` (as the trial's own) and ``model.keras``
when models are saved. After each snapshot, the run directory's snapshots are kept under
``budget_mb``: the snapshots of the finished trials with the worst objective go first, then the one
just written (``ensembles.pool`` reads whatever is left).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

SNAPSHOT_DIR = "snapshots"


def snapshot_dir(trial_dir: Path, epoch: int) -> Path:
    return trial_dir / SNAPSHOT_DIR / f"epoch_{epoch:03d}"


def _size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def enforce_budget(trials_dir: Path, budget_mb: float, current: Path) -> None:
    """Delete snapshots, worst finished trial first, until those under ``trials_dir`` fit in ``budget_mb``."""
    dirs = sorted(trials_dir.glob(f"*/{SNAPSHOT_DIR}/epoch_*"))
    sizes = {d: _size_mb(d) for d in dirs}
    total = sum(sizes.values())
    if total <= budget_mb:
        return
    study = trials_dir.parent / "study.json"
    sign = -1.0 if not study.exists() or json.loads(study.read_text()).get("direction") == "maximize" else 1.0

    def badness(d: Path) -> tuple[int, float]:
        trial = d.parent.parent
        if trial == current:
            return (0, 0.0)  # the running trial's snapshots go last
        try:
            r = json.loads((trial / "result.json").read_text())
            return (1, sign * float(r["value"])) if r.get("state") == "COMPLETE" else (2, 0.0)
        except (OSError, ValueError, KeyError, TypeError):
            return (2, 0.0)  # unfinished elsewhere or failed: the first to go

    for d in sorted(dirs, key=badness, reverse=True):
        if total <= budget_mb:
            break
        shutil.rmtree(d, ignore_errors=True)
        total -= sizes[d]


def snapshot_callback(epochs: tuple[int, ...], budget_mb: float, save_predictions: Callable[[Any, Path], Any],
                      trial_dir: Path, save_model: bool, last_epoch: int,
                      saved_model: Callable[[Any], Any] = lambda m: m) -> Any:
    """A Keras callback saving the trial's outputs (``save_predictions(model, folder)``) and model
    (``saved_model(model)``: the model a trial saves for the one it trains) at the end of each epoch in
    ``epochs`` (1-based; the last epoch is the trial itself and is not duplicated)."""
    import keras

    wanted = {e for e in epochs if e < last_epoch}

    class _Snapshots(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            if epoch + 1 not in wanted:
                return
            out = snapshot_dir(trial_dir, epoch + 1)
            out.mkdir(parents=True, exist_ok=True)
            save_predictions(self.model, out)
            if save_model:
                saved_model(self.model).save(out / "model.keras")
            enforce_budget(trial_dir.parent, budget_mb, trial_dir)

    return _Snapshots()
