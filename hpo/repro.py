"""Seeds, determinism and the package versions recorded with every run."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import sys

PACKAGES = ("keras", "tensorflow", "tensorflow-cpu", "jax", "torch", "keras-tuner", "optuna", "hyperopt",
            "mlflow", "mlflow-skinny", "numpy", "scikit-learn", "scipy")


def trial_seed(study_seed: int, trial_number: int) -> int:
    """A per-trial seed derived from the study seed, stable across processes and reruns."""
    digest = hashlib.sha256(f"{study_seed}:{trial_number}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and the Keras backend; ask the backend for deterministic kernels."""
    import keras

    keras.utils.set_random_seed(seed)
    if deterministic and keras.backend.backend() == "tensorflow":
        # The one backend-specific call: Keras 3 has no backend-neutral switch for it.
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def package_versions() -> dict[str, str]:
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


def device_description() -> str:
    """A short description of where trials run (backend and visible accelerators)."""
    import keras

    backend = keras.backend.backend()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return f"{backend}:{'cpu' if visible in (None, '', '-1') and not _has_gpu(backend) else 'gpu'}"


def _has_gpu(backend: str) -> bool:
    try:
        if backend == "jax":
            import jax

            return any(d.platform == "gpu" for d in jax.devices())
        if backend == "torch":
            import torch

            return bool(torch.cuda.is_available())
        if backend == "tensorflow":
            import tensorflow as tf

            return bool(tf.config.list_physical_devices("GPU"))
    except Exception:
        return False
    return False

