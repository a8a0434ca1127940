"""The package versions recorded with every run and every ensemble artifact.

The list lives in ``ensembles``, the lowest layer (it imports nothing from ``hpo``), so an
ensemble's manifest records exactly the versions its study recorded; ``hpo.repro``
re-exports it for the study.
"""

from __future__ import annotations

import importlib.metadata
import platform
import sys

PACKAGES = ("keras", "tensorflow", "tensorflow-cpu", "jax", "torch", "keras-tuner", "optuna", "hyperopt",
            "mlflow", "mlflow-skinny", "numpy", "scikit-learn", "scipy")


def package_versions() -> dict[str, str]:
    """Python, the platform, the installed versions of :data:`PACKAGES` and the Keras backend."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    try:
        import keras

        out["keras_backend"] = keras.backend.backend()
    except Exception:  # pragma: no cover - keras is a dependency
        pass
    return out
