"""A model's train step compiled ahead of its first ``fit`` (JAX): traced here, compiled by XLA in a background
thread, found compiled by ``fit``.

A study of dense stacks trains every trial in the supernet that covers its space's largest model
(:mod:`hpo.execution.supernet`); compiling that supernet's train step is most of its first trial's time
(1.3-1.4 s of the quickstart's on 2 CPU cores). The study knows that supernet before it opens its engine and
tracking store (1-3 s of imports, SQLite and MLflow, spent in Python), so it can compile it meanwhile, on cores
the opening study leaves free (:func:`enabled`). XLA
compiles without holding Python's lock; tracing and lowering do hold it and read Keras' per-thread state (the
dtype policy, the name scopes), so they stay on the caller's thread.

Written here because Keras has no call that compiles a step without running it. JAX keeps an executable on the
jitted function that lowered it, so the model's ``train_function`` is made here as Keras' JAX trainer makes it
(``jax.jit(train_step, donate_argnums=0)`` in ``make_train_function``) around the function compiled; ``fit``
keeps a ``train_function`` it finds."""

from __future__ import annotations

import atexit
import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from hpo.execution.shapes import fit_inputs

log = logging.getLogger(__name__)

__all__ = ["MIN_CORES", "SWITCH", "compile_train_step", "compiles_ahead", "enabled", "wait"]

SWITCH = "HPO_COMPILE_AHEAD"  # on or off; unset (auto): on where this process may use MIN_CORES cores
# While the study opens, its main thread and the MLflow writer process keep two cores busy: on two cores the
# compilation only competes with them (start-up and first trial 0.5 s slower, the study's wall unchanged within
# noise: experiments/results/ahead_ab.json), so it runs ahead only where cores are left for it.
MIN_CORES = 4

_POOL: list[ThreadPoolExecutor] = []


def _pool() -> ThreadPoolExecutor:
    # One thread: one compilation at a time beside the study's own work. Not a daemon: the process waits for a
    # compilation under way at exit instead of tearing XLA down under it.
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="hpo-compile-ahead"))
        atexit.register(_POOL[0].shutdown, wait=True)
    return _POOL[0]


def enabled() -> bool:
    """Whether train steps compile ahead: ``$HPO_COMPILE_AHEAD`` ``on`` (or ``1``, ``true``, ``yes``) or ``off``
    (``0``, ``false``, ``no``); unset or ``auto``: where this process may use :data:`MIN_CORES` cores or more."""
    value = os.environ.get(SWITCH, "").strip().lower()
    if value in ("on", "1", "true", "yes"):
        return True
    if value in ("off", "0", "false", "no"):
        return False
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    return cores >= MIN_CORES


def compiles_ahead(model: Any) -> bool:
    """True when :func:`compile_train_step` can compile ``model``'s train step as ``fit`` will call it: JAX, the
    model compiled by Keras' JAX trainer without ``run_eagerly``, with ``jit_compile`` on, no distribution and no
    NNX, its train step not made yet, and compiling ahead :func:`enabled`."""
    import keras

    from hpo.execution.xla import keras_jits

    if not enabled() or not keras_jits(model) or model.train_function is not None:
        return False
    return keras.distribution.distribution() is None and not keras.config.is_nnx_enabled() \
        and model.steps_per_execution == 1


def compile_train_step(model: Any, x: Any, y: Any, batch_size: int) -> Future | None:
    """Start compiling the train step ``model.fit`` runs on its first batch of ``x``, ``y`` (in batches of
    ``batch_size``, as a trial trains: :func:`hpo.execution.shapes.fit_inputs`); the future is done when it is
    compiled (its result: None), failed (the trial compiles it then) or None when :func:`compiles_ahead` is
    false. The model's variables and its optimizer must be built; nothing of them changes."""
    import jax
    from keras.src.trainers.data_adapters import get_data_adapter

    if not compiles_ahead(model):
        return None
    args, how = fit_inputs(model, batch_size, x, y, seed=0)
    adapter = get_data_adapter(*args, batch_size=how.get("batch_size"), shuffle=False)
    batch = jax.device_put(next(iter(adapter.get_jax_iterator())))  # what fit's first step receives
    model._symbolic_build(data_batch=batch)  # noqa: SLF001 - as fit does first: the metrics' variables
    step = jax.jit(model.train_step, donate_argnums=0)
    state = model._get_jax_state(trainable_variables=True, non_trainable_variables=True,  # noqa: SLF001
                                 optimizer_variables=True, metrics_variables=True)
    spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), (state, batch))
    lowered = step.lower(*spec)
    model.train_function = model._make_function(step)  # noqa: SLF001 - what make_train_function sets
    return _pool().submit(_compile, lowered)


def _compile(lowered: Any) -> None:
    lowered.compile()


def wait(pending: Future | None) -> None:
    """Wait for a compilation :func:`compile_train_step` started (a failed one is logged: ``fit`` compiles the
    step again)."""
    if pending is None:
        return
    try:
        pending.result()
    except Exception as exc:
        log.debug("the train step compiled ahead failed (%s: %s); the trial compiles it", type(exc).__name__, exc)
