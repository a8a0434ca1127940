"""Compilation under backends that compile every new shape (JAX): host-side weight initialisation and JAX's
persistent compilation cache."""

from __future__ import annotations

import contextlib
import os
import types
from pathlib import Path
from typing import Any, Iterator

import numpy as np

__all__ = ["compiles_per_shape", "compilation_cache_dir", "dropout_draws_anywhere", "enable_compilation_cache",
           "host_initialisers", "keras_jits", "to_device", "to_tensor"]

_CACHE: dict[str, str | None] = {}


def compiles_per_shape() -> bool:
    """True under a backend whose eager operations compile one XLA program per new shape (JAX)."""
    import keras

    return keras.backend.backend() == "jax"


def keras_jits(model: Any) -> bool:
    """True under JAX for a model Keras has compiled and whose steps it jits: not ``run_eagerly``, ``jit_compile``
    on (a layer that cannot be traced turns Keras' "auto" off)."""
    if not compiles_per_shape() or not getattr(model, "compiled", False):
        return False
    try:
        return not getattr(model, "run_eagerly", False) and bool(getattr(model, "jit_compile", False))
    except Exception:  # a model whose jit_compile cannot be resolved: Keras' own steps decide
        return False


def dropout_draws_anywhere(model: Any) -> bool:
    """True when a template or supernet wider than ``model`` can draw ``model``'s own dropout numbers: it has no
    Dropout, or JAX's random numbers are keyed by each element's flat index (``jax_threefry_partitionable``, on by
    default), which :class:`~hpo.execution.template_layers.TemplateDropout` relies on."""
    import jax
    import keras

    if bool(getattr(jax.config, "jax_threefry_partitionable", False)):
        return True
    return not any(isinstance(la, keras.layers.Dropout) for la in model._flatten_layers(include_self=False))


def compilation_cache_dir() -> Path:
    """Where JAX studies keep compiled programs: ``$HPO_JAX_CACHE_DIR``, else ``jax-compilation-cache`` under
    the project's cache directory (``$HPO_CACHE_DIR``, ``$XDG_CACHE_HOME/hpo`` or ``~/.cache/hpo``)."""
    from hpo.tracking.schema import cache_dir

    return Path(os.environ["HPO_JAX_CACHE_DIR"]) if os.environ.get("HPO_JAX_CACHE_DIR") else \
        cache_dir() / "jax-compilation-cache"


def enable_compilation_cache() -> str | None:
    """Turn on JAX's persistent compilation cache for this process (once); the folder, or None when the backend
    is not JAX or ``HPO_JAX_CACHE_DIR`` is ``off``. Reruns, seed refits and worker processes of a study then load
    the programs an earlier process compiled instead of compiling them again."""
    if "dir" in _CACHE:
        return _CACHE["dir"]
    if not compiles_per_shape() or os.environ.get("HPO_JAX_CACHE_DIR", "").lower() in ("off", "0", "none"):
        _CACHE["dir"] = None
        return None
    import jax

    if jax.config.jax_compilation_cache_dir:  # the user's own setting wins
        _CACHE["dir"] = str(jax.config.jax_compilation_cache_dir)
        return _CACHE["dir"]
    folder = compilation_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    # JAX skips programs that compile in under a second by default; a small model's steps compile in less on
    # CPU, and they are the ones a search compiles over and over.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _CACHE["dir"] = str(folder)
    return _CACHE["dir"]


def _rng(seed: Any) -> np.random.Generator:
    """A NumPy generator from a Keras initialiser's seed: an int gives the same values on every call (as Keras'
    own initialisers do), a SeedGenerator moves on by one draw as ``SeedGenerator.next`` does (host-side: the
    backend's add would compile)."""
    if isinstance(seed, int):
        return np.random.default_rng([seed & 0xFFFFFFFF, 0])
    from keras.src.random.seed_generator import SeedGenerator, draw_seed

    if isinstance(seed, SeedGenerator):
        state = np.asarray(seed.state.value)
        seed.state.assign((state + np.array([0, 1])).astype(state.dtype))
        key = state
    else:
        key = np.asarray(draw_seed(seed))
    return np.random.default_rng([int(k) & 0xFFFFFFFF for k in key.ravel()])


class _HostRandom(types.SimpleNamespace):
    """The random draws Keras' initialisers make, in NumPy on the host."""

    @staticmethod
    def uniform(shape: Any, minval: float = 0.0, maxval: float = 1.0, dtype: Any = None, seed: Any = None) -> Any:
        return _put(_rng(seed).uniform(minval, maxval, tuple(shape)).astype(_dtype(dtype)))

    @staticmethod
    def normal(shape: Any, mean: float = 0.0, stddev: float = 1.0, dtype: Any = None, seed: Any = None) -> Any:
        return _put((_rng(seed).standard_normal(tuple(shape)) * stddev + mean).astype(_dtype(dtype)))

    @staticmethod
    def truncated_normal(shape: Any, mean: float = 0.0, stddev: float = 1.0, dtype: Any = None,
                         seed: Any = None) -> Any:
        rng = _rng(seed)
        z = rng.standard_normal(tuple(shape))
        bad = np.abs(z) > 2.0
        while bad.any():  # redrawn outside two standard deviations, as keras.random.truncated_normal
            z[bad] = rng.standard_normal(int(bad.sum()))
            bad = np.abs(z) > 2.0
        return _put((z * stddev + mean).astype(_dtype(dtype)))


class _HostOps:
    """``zeros``, ``ones``, ``eye`` and ``cast`` of the constant initialisers, in NumPy; anything else from Keras."""

    def __init__(self, ops: Any) -> None:
        self._ops = ops

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ops, name)

    @staticmethod
    def zeros(shape: Any, dtype: Any = None) -> Any:
        return _put(np.zeros(tuple(shape), _dtype(dtype)))

    @staticmethod
    def ones(shape: Any, dtype: Any = None) -> Any:
        return _put(np.ones(tuple(shape), _dtype(dtype)))

    @staticmethod
    def eye(n: int, m: int | None = None, k: int = 0, dtype: Any = None) -> Any:
        return _put(np.eye(n, m, k, dtype=_dtype(dtype)))

    @staticmethod
    def cast(x: Any, dtype: Any) -> Any:
        return _put(np.asarray(x).astype(_dtype(dtype)))


def to_device(a: np.ndarray) -> Any:
    """A NumPy array as the value a Keras variable is initialised with: put on the JAX device as it is (JAX
    would otherwise stage it through a program compiled per shape); the array itself under other backends."""
    return _put(a) if compiles_per_shape() else a


def to_tensor(a: Any) -> Any:
    """``keras.ops.convert_to_tensor``, except that a NumPy array of numbers under JAX is put on the device as it
    is: ``jnp.asarray`` stages it through a ``stage`` program compiled once per shape (three per process for the
    select/audit scoring inputs, labels and sample weights)."""
    if compiles_per_shape() and isinstance(a, np.ndarray) and a.dtype.kind in "biuf":
        return _put(a)
    import keras

    return keras.ops.convert_to_tensor(a)


def _host_backend_convert(convert: Any) -> Any:
    """``keras.src.backend.convert_to_tensor`` that makes a Python or NumPy value with a given dtype on the host.
    A Dropout layer's SeedGenerator makes its state with ``backend.convert_to_tensor([seed, 0], dtype=...)``,
    which compiled a ``convert_element_type`` program in every process. Anything else (tensors, tracers,
    no dtype) goes through Keras' own conversion."""

    def host_convert(x: Any, dtype: Any = None, sparse: Any = None, ragged: Any = None) -> Any:
        host = None if sparse or ragged else _on_host(x, dtype, (list, tuple, int, float, np.ndarray, np.generic))
        return convert(x, dtype=dtype, sparse=sparse, ragged=ragged) if host is None else host

    return host_convert


class _HostMetricOps:
    """The ``ops`` of Keras' reduction metrics with ``divide_no_nan`` and ``cast`` of concrete values in NumPy.
    Keras reads ``Mean.result()`` eagerly after each epoch (``total / count``): under JAX that compiled three
    small programs (``equal``, ``_where``, ``true_divide``) in every process. Inside a traced step the values
    are tracers and the backend's ops run as before."""

    def __init__(self, ops: Any) -> None:
        self._ops = ops

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ops, name)

    def cast(self, x: Any, dtype: Any) -> Any:
        h = _concrete(x)
        return self._ops.cast(x, dtype) if h is None else _put(h.astype(_dtype(dtype)))

    def divide_no_nan(self, x: Any, y: Any) -> Any:
        hx, hy = _concrete(x), _concrete(y)
        if hx is None or hy is None:
            return self._ops.divide_no_nan(x, y)
        safe = np.where(hy == 0, np.ones_like(hy), hy)
        out = np.where(hy == 0, np.zeros_like(hx / safe), hx / safe)
        return _put(np.asarray(out, dtype=np.result_type(hx, hy)))


def _concrete(v: Any) -> np.ndarray | None:
    """The host value of a concrete JAX array, Keras variable or NumPy value; None for a tracer or anything else."""
    import jax
    import keras

    if isinstance(v, keras.Variable):
        v = v.value
    if isinstance(v, jax.core.Tracer) or not isinstance(v, (jax.Array, np.ndarray, np.generic)):
        return None
    try:
        return np.asarray(v)
    except Exception:
        return None


def _host_variable_value(convert: Any) -> Any:
    """A JAX Variable's ``_convert_to_tensor`` that makes a Python or NumPy value of a known dtype on the host.
    ``jnp.asarray(0.001, dtype="float32")`` compiles a ``convert_element_type`` program once per dtype: the
    optimizer's ``iterations`` and ``learning_rate`` variables made the only two compilations of a study's
    start-up besides the preflight's. Arrays and tracers go through Keras' own conversion."""

    def host_value(self: Any, value: Any, dtype: Any = None) -> Any:
        host = _on_host(value, dtype, (int, float, np.ndarray, np.generic))
        return convert(self, value, dtype) if host is None else host

    return host_value


def _on_host(value: Any, dtype: Any, kinds: tuple[type, ...]) -> Any:
    """``value`` (one of ``kinds``) made in NumPy with ``dtype`` and put on the device; None when no dtype is
    given, the value is of another kind, or NumPy cannot make it (a dtype it does not name, such as bfloat16
    without ml_dtypes, or a list holding tracers): the caller then takes Keras' own way."""
    if dtype is None or not isinstance(value, kinds):
        return None
    try:
        return _put(np.asarray(value, dtype=np.dtype(_dtype(dtype))))
    except Exception:
        return None


def _put(a: np.ndarray) -> Any:
    # device_put, not jnp.asarray: JAX stages a NumPy array given without a dtype through a program compiled
    # per shape
    import jax

    return jax.device_put(a)


def _dtype(dtype: Any) -> Any:
    import keras

    return np.dtype(keras.backend.standardize_dtype(dtype or keras.backend.floatx()))


@contextlib.contextmanager
def host_initialisers() -> Iterator[None]:
    """Keras' built-in initialisers draw in NumPy on the host while this is open (JAX only; a no-op otherwise).

    Under JAX each initialiser runs eagerly and ``jax.random.uniform`` or ``jnp.zeros`` compiles one XLA program
    per new kernel shape (2-3 per trial of a search over widths, besides the optimizer's slots). Keras has no
    switch for this, so the two module names its initialisers draw through are pointed at NumPy versions for the
    duration: same distributions and seeding rules, no compilation. Not thread-safe (trials of one process run
    one at a time). Variables made from a Python or NumPy value (the optimizer's iteration count and learning
    rate) are converted on the host too."""
    if not compiles_per_shape():
        yield
        return
    import keras.src.backend as kbackend
    from keras.src.backend.jax import core as jax_core
    from keras.src.initializers import constant_initializers as const
    from keras.src.initializers import random_initializers as rand
    from keras.src.metrics import reduction_metrics

    saved_random, saved_ops, saved_metric_ops = rand.random, const.ops, reduction_metrics.ops
    saved_convert = jax_core.JaxVariable.__dict__["_convert_to_tensor"]
    saved_backend_convert = kbackend.convert_to_tensor
    shim = _HostRandom(**{k: getattr(saved_random, k) for k in dir(saved_random) if not k.startswith("__")
                          and k not in ("uniform", "normal", "truncated_normal")})
    rand.random, const.ops, reduction_metrics.ops = shim, _HostOps(saved_ops), _HostMetricOps(saved_metric_ops)
    jax_core.JaxVariable._convert_to_tensor = _host_variable_value(saved_convert)
    kbackend.convert_to_tensor = _host_backend_convert(saved_backend_convert)
    try:
        yield
    finally:
        rand.random, const.ops, reduction_metrics.ops = saved_random, saved_ops, saved_metric_ops
        jax_core.JaxVariable._convert_to_tensor = saved_convert
        kbackend.convert_to_tensor = saved_backend_convert
