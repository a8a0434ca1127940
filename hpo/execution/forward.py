"""Under JAX, one compiled program per model for a trial's forward passes: a split's loss and metrics (what
``test_on_batch`` reports) together with the model's outputs on it.

Keras compiles a test step to score a split and a predict step to compute outputs: two XLA programs per model
structure (0.4-0.5 s and 0.15-0.3 s of a first trial's compilation on 2 CPU cores), although the test step
computes the outputs anyway. A trial scores select and audit through this program every epoch, keeps the last
epoch's outputs for the predictions it saves, and computes the test split's outputs through it too (with
placeholder labels whose scores are dropped): one program per structure instead of two.

Written here because Keras has no public call that returns a batch's outputs with its metrics. The program is
Keras' own JAX test step (``compute_loss_and_updates`` with ``training=False``, then
``_update_metrics_variables``) returning the outputs as well, started from the metrics' reset state and
changing nothing of the model (no state is written back, no buffer donated)."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np

__all__ = ["Outputs", "evaluate", "has_program", "reported_names"]


class Outputs(NamedTuple):
    """A model's outputs on a padded split, left on the device until they are used (:meth:`numpy`): a trial
    keeps only its last epoch's."""

    tree: Any  # the outputs on every padded row
    rows: int  # the real rows, the first ones

    def numpy(self) -> Any:
        """The outputs of the real rows as NumPy arrays."""
        import keras

        return keras.tree.map_structure(lambda t: np.asarray(t)[:self.rows], self.tree)


@dataclass
class _Program:
    compiled_with: tuple[int, int]  # ids of the model's compiled loss and metrics: a new compile() is a new program
    run: Callable[..., Any]
    metric_zeros: list[np.ndarray]  # host copies: the variables' own arrays are donated by Keras' train step


_PROGRAMS: "weakref.WeakKeyDictionary[Any, _Program]" = weakref.WeakKeyDictionary()


def has_program(model: Any) -> bool:
    """True when ``model`` can score and predict through one program: JAX, a compiled Keras JAX trainer whose
    test step Keras compiles too (not ``run_eagerly``, ``jit_compile`` on: a layer that cannot be traced turns
    Keras' "auto" off) and whose ``test_step`` and ``predict_step`` are Keras' own (a model that overrides
    either is scored and predicted by its own steps)."""
    from hpo.execution.xla import keras_jits

    if not (keras_jits(model) and hasattr(model, "compute_loss_and_updates")
            and hasattr(model, "_update_metrics_variables")):
        return False
    import keras

    cls = type(model)
    return cls.test_step is keras.Model.test_step and cls.predict_step is keras.Model.predict_step


def _compiled_with(model: Any) -> tuple[int, int]:
    return id(getattr(model, "_compile_loss", None)), id(getattr(model, "_compile_metrics", None))


def _program(model: Any) -> _Program:
    import jax

    held = _PROGRAMS.get(model)
    if held is not None and held.compiled_with == _compiled_with(model):
        return held
    ref = weakref.ref(model)  # the program is kept beside the model, not keeping it alive

    def score_and_predict(trainable: Any, non_trainable: Any, metrics: Any, x: Any, y: Any,
                          sample_weight: Any) -> Any:
        m = ref()
        _, (unscaled, y_pred, _, metrics) = m.compute_loss_and_updates(
            trainable, non_trainable, metrics, x, y, sample_weight, training=False)
        logs, _ = m._update_metrics_variables(metrics, unscaled, x, y, y_pred, sample_weight)  # noqa: SLF001
        return logs, y_pred

    model.reset_metrics()  # what test_on_batch starts every call from
    zeros = [np.array(v.value) for v in model.metrics_variables]
    held = _Program(_compiled_with(model), jax.jit(score_and_predict), zeros)
    _PROGRAMS[model] = held
    return held


def _flat(logs: dict[str, Any]) -> dict[str, Any]:
    """Logs with their nested dicts flattened, as ``test_on_batch(return_dict=True)`` names them."""
    out: dict[str, Any] = {}
    for k, v in sorted(logs.items()):
        out.update(_flat(v) if isinstance(v, dict) else {k: v})
    return out


def _call(model: Any, x: Any, y: Any, sample_weight: Any, trace: bool = False) -> Any:
    """``(logs, outputs)`` of the model's program on its present state and one batch; with ``trace``, their
    shapes only (``jax.eval_shape``: traced, not compiled)."""
    import jax

    model._symbolic_build(data_batch=(x, y, sample_weight))  # noqa: SLF001 - as test_on_batch: nothing once built
    program = _program(model)
    args = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
            program.metric_zeros, x, y, sample_weight)
    return jax.eval_shape(program.run, *args) if trace else program.run(*args)


def evaluate(model: Any, x: Any, y: Any, sample_weight: Any, rows: int) -> tuple[dict[str, float], Outputs]:
    """The compiled loss and metrics of ``model`` on one batch, as ``test_on_batch(x, y, sample_weight=...,
    return_dict=True)`` reports them, and its outputs, of which the first ``rows`` rows are the real rows of a
    padded split. Requires :func:`has_program`."""
    logs, y_pred = _call(model, x, y, sample_weight)
    return {k: float(np.asarray(v)) for k, v in _flat(logs).items()}, Outputs(y_pred, rows)


def reported_names(model: Any, x: Any, y: Any) -> list[str]:
    """The names of what ``test_on_batch(x, y, return_dict=True)`` reports for ``model``, found by tracing its
    program without compiling it (``jax.eval_shape``): wrong input shapes, output names or label formats fail here
    as they would in that call. Requires :func:`has_program`."""
    logs, _ = _call(model, x, y, None, trace=True)
    return sorted(_flat(logs))
