"""Keras under JAX or PyTorch without importing TensorFlow where nothing needs it.

Keras checks ``tf.available`` before ``isinstance(obj, tf.TensorShape)`` (and other TensorFlow types) in every
serialisation, and before seeding TensorFlow in ``keras.utils.set_random_seed``. Where TensorFlow is installed
that check imports it: about 2 s of the first trial of a JAX or PyTorch process (measured with cProfile on the
README quickstart under JAX: 2.06 s of a 4.7 s first trial), for a package that process never uses. An object
can only be a TensorFlow type, and TensorFlow's seed only matters, once TensorFlow has been imported, so for
those two checks Keras is given a view of its lazy module that is available only when TensorFlow is already
loaded. Everything else in Keras (preprocessing layers that need TensorFlow, ``tf.data`` inputs) keeps Keras'
own lazy module. Written by hand because Keras has no setting for it."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["keep_tensorflow_unloaded"]

_DONE: dict[str, bool] = {}


class _LoadedOnly:
    """Keras' lazy TensorFlow module, ``available`` only when TensorFlow is already imported."""

    def __init__(self, lazy: Any) -> None:
        self._lazy = lazy

    @property
    def available(self) -> bool:
        return "tensorflow" in sys.modules and bool(self._lazy.available)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lazy, name)


def keep_tensorflow_unloaded() -> None:
    """Under a backend other than TensorFlow, stop Keras' serialisation and seeding from importing TensorFlow
    (once per process; nothing happens under TensorFlow or where Keras' modules are laid out otherwise)."""
    if _DONE:
        return
    _DONE["done"] = True
    import keras

    if keras.backend.backend() == "tensorflow":
        return
    try:
        from keras.src.saving import serialization_lib
        from keras.src.utils import module_utils, rng_utils
    except ImportError:
        return
    for module in (serialization_lib, rng_utils):
        if getattr(module, "tf", None) is module_utils.tensorflow:
            module.tf = _LoadedOnly(module_utils.tensorflow)
