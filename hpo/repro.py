"""Seeds, determinism and the package versions recorded with every run."""

from __future__ import annotations

import hashlib
import os


def trial_seed(study_seed: int, trial_number: int) -> int:
    """A per-trial seed derived from the study seed, stable across processes and reruns."""
    digest = hashlib.sha256(f"{study_seed}:{trial_number}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def process_seed(study_seed: int, process_id: str) -> int:
    """The sampling seed of one process of a shared study: derived from the study's seed and an id unique to
    the process, so processes draw different streams, reproducible from the two recorded values."""
    digest = hashlib.sha256(f"{study_seed}:process:{process_id}".encode()).digest()
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
    """Python, the platform, the installed versions of the packages a run depends on and the Keras backend."""
    # The list lives in ensembles.versions, the lowest layer, so an ensemble's manifest records the same
    # versions as its study. Imported on call, not at the top: importing ``ensembles`` loads Keras, and
    # hpo.tracking (so the MLflow writer process too) imports this module without needing Keras.
    from ensembles.versions import package_versions as versions

    return versions()


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

