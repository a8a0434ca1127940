"""Model plots with Keras' own ``plot_model`` (Graphviz and pydot); a clear message when they are missing."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
MISSING = "model plots skipped: Keras' plot_model needs pydot (pip install pydot) and Graphviz (apt-get install graphviz)"


def plot_model_file(model: Any, path: Path, *, expand_nested: bool = False) -> tuple[Path | None, str | None]:
    """Draw ``model`` (with shapes) into ``path``; returns (path, None) or (None, one-line reason)."""
    import keras

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        keras.utils.plot_model(model, to_file=str(path), show_shapes=True, show_layer_names=True,
                               expand_nested=expand_nested, dpi=72)
    except ImportError:
        return None, MISSING
    except (OSError, FileNotFoundError) as exc:  # pydot present but the dot binary is not
        return None, f"{MISSING} ({type(exc).__name__})"
    if not path.exists():  # Keras only prints its message in notebooks
        return None, MISSING
    return path, None


def plot_study(run_dir: Path, best_model_path: str | None, ensemble_dir: str | None) -> dict[str, Any]:
    """Plots of the best trial's model and of the ensemble (members as layers) into ``<run_dir>/plots``."""
    import keras

    out: dict[str, Any] = {"best_trial": None, "ensemble": None, "message": None}
    targets = []
    if best_model_path and Path(best_model_path).exists():
        targets.append(("best_trial", lambda: keras.saving.load_model(best_model_path, safe_mode=True, compile=False)))
    if ensemble_dir and Path(ensemble_dir, "ensemble.keras").exists():
        from ensembles import load_ensemble

        targets.append(("ensemble", lambda: load_ensemble(ensemble_dir)))
    for name, load in targets:
        path, message = plot_model_file(load(), Path(run_dir) / "plots" / f"{name}.png")
        keras.backend.clear_session(free_memory=False)
        if message:
            out["message"] = message
            log.info(message)  # the study summary reports it (once)
            break
        out[name] = str(path)
    return out
