"""One trial: build, fit with callbacks, score ``select`` and ``audit``, save logits and the model.

The runner never raises for a bad trial: exceptions, NaN losses and budgets end
in a :class:`TrialResult` with state FAILED and the reason, pruning in state
PRUNED, so the study goes on. With ``training.folds`` the trial is cross-validated
(:mod:`hpo.execution.folds`). A trial may continue another one's checkpoint and keep its own for a later one
(:mod:`hpo.execution.continuation`).
"""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path
from typing import Any, Mapping

from hpo.data import Splits
from hpo.errors import TrialFailed, TrialPruned
from hpo.execution.fitting import (EpochListener, Fit, TrialSettings, count_rows_of, ends_at_last_scoring,
                                   final_scores, fit_model, make_model, save_predictions)
from hpo.execution.continuation import Resume, load_checkpoint, save_checkpoint
from hpo.execution.folds import run_folds
from hpo.execution.forward import Outputs
from hpo.execution.measures import model_measures
from hpo.execution.reuse import compiled_twin
from hpo.execution.supernet import stack_of
from hpo.execution.supernet_state import space_hint, supernet_twin
from hpo.execution.templates import chooses_adam_or_rmsprop, template_twin, user_model
from hpo.execution.memory import release_memory, start_trial_memory
from hpo.execution.lazy_tensorflow import keep_tensorflow_unloaded
from hpo.execution.xla import compiles_per_shape, enable_compilation_cache, host_initialisers
from hpo.repro import seed_everything
from hpo.results import TrialResult, TrialState
from hpo.space import Builder, SearchSpace

__all__ = ["EpochListener", "TrialSettings", "make_model", "run_trial", "save_predictions"]

log = logging.getLogger(__name__)


def run_trial(
    *,
    number: int,
    params: Mapping[str, Any],
    seed: int,
    build: Builder,
    space: SearchSpace,
    splits: Splits,
    settings: TrialSettings,
    trial_dir: Path,
    listener: EpochListener | None = None,
    epochs: int | None = None,
    extra_callbacks: list[Any] | None = None,
    resume: Resume | None = None,
    checkpoint: bool = False,
) -> TrialResult:
    """Train and score one configuration; never raises for a failing trial.

    ``resume``: start from another trial's checkpoint and train only the epochs after it (a checkpoint that cannot
    be loaded is logged and the trial trains all its epochs from a fresh model); ``checkpoint``: save this trial's
    weights and optimizer state for a later trial to continue. Neither applies to a cross-validated trial."""
    started = time.monotonic()
    result = TrialResult(number=number, params=dict(params), seed=seed, state=TrialState.FAILED)
    model = None
    start_trial_memory()
    enable_compilation_cache()
    keep_tensorflow_unloaded()
    try:
        with host_initialisers():
            model = _train(result, params, seed, build, space, splits, settings, trial_dir, listener, epochs,
                           extra_callbacks, started, resume, checkpoint)
        result.state = TrialState.COMPLETE
    except TrialPruned as exc:
        result.state = TrialState.PRUNED
        result.error = str(exc) or "pruned"
        if settings.folds <= 1:  # a cross-validated trial counts the epochs of all its folds itself
            result.epochs = len(result.history.get("loss", []))  # the epochs it trained, the pruning one included
    except TrialFailed as exc:
        result.error = str(exc)
    except Exception as exc:  # a bad trial must not end the study
        result.error = f"{type(exc).__name__}: {exc}"
        log.debug("trial %d failed:\n%s", number, traceback.format_exc())
    finally:
        result.duration_s = time.monotonic() - started
        del model
        release_memory()
    return result


def _train(result: TrialResult, params: Mapping[str, Any], seed: int, build: Builder, space: SearchSpace,
           splits: Splits, settings: TrialSettings, trial_dir: Path, listener: EpochListener | None,
           epochs: int | None, extra_callbacks: list[Any] | None, started: float, resume: Resume | None,
           checkpoint: bool) -> Any:
    """The body of :func:`run_trial`: fills ``result``; returns the trained model (None for folds)."""
    hp = space.hyperparameters_for(params)
    fit = Fit(build, hp, *settings.for_trial(params, epochs))
    if settings.folds > 1:
        run_folds(result, splits, settings, trial_dir, listener, fit, extra_callbacks, started)
        return None
    model = _start_model(build, hp, space, splits, seed, settings, resume, result, fit)
    fit.initial_epoch = result.initial_epoch
    outputs: dict[str, Outputs] = {}  # select and audit outputs of the last epoch's scoring (JAX)
    audit_history = fit_model(model, result, splits, settings, trial_dir, listener, fit, extra_callbacks, started,
                              outputs)
    final_scores(model, result, splits, settings, audit_history, build)
    saved = user_model(model)  # the builder's own model, trained (a compiled template's state copied into it)
    result.measures.update(model_measures(saved, splits, latency=settings.measure_latency))
    trial_dir.mkdir(parents=True, exist_ok=True)
    if checkpoint:
        save_checkpoint(saved, trial_dir)
    known = outputs if ends_at_last_scoring(settings, build) else None
    result.predictions_path = str(save_predictions(model, splits, trial_dir, known))
    if settings.save_models:
        model_path = trial_dir / "model.keras"
        saved.save(model_path)
        result.model_path = str(model_path)
    return model


def _start_model(build: Builder, hp: Any, space: SearchSpace, splits: Splits, seed: int, settings: TrialSettings,
                 resume: Resume | None, result: TrialResult, fit: Fit) -> Any:
    """The trial's model, freshly built, or with ``resume``'s checkpoint loaded (``result`` then records the parent
    and the epoch the trial starts from)."""
    seed_everything(seed, settings.deterministic)
    model = make_model(build, hp, splits.spec)
    hint = None
    if resume is None and _templates_allowed(build, settings) and compiles_per_shape() \
            and stack_of(model, fit.batch_size) is not None:
        hint, built = space_hint(build, space, lambda values: make_model(build, space.hyperparameters_for(values),
                                                                        splits.spec))
        if built:  # the hint's model drew from the random states: the trial's model is built again from its seed
            seed_everything(seed, settings.deterministic)
            model = make_model(build, hp, splits.spec)
    if resume is None:
        # Under JAX, the compiled template of the model's structure (widths, dropout and L2 values aside:
        # hpo.execution.templates) loaded with the new model's initial state; else the model as built for this
        # trial, or, when this process already compiled one of the same architecture and batch size, that
        # compiled model holding the new model's initial state (hpo.execution.reuse). Templates only where
        # nothing but the framework sees the trained model: no user callbacks, no HyperModel fit override.
        # A dense stack trains in a supernet instead (depth, activation and batch norm aside too:
        # hpo.execution.supernet).
        twin = None
        if _templates_allowed(build, settings):
            steps = -(-count_rows_of(splits.y["train"]) // fit.batch_size) * fit.epochs
            twin = supernet_twin(model, fit.batch_size, steps, hint)
            twin = twin if twin is not None else template_twin(model, fit.batch_size, steps,
                                                               switch=chooses_adam_or_rmsprop(space))
        return twin if twin is not None else compiled_twin(model, fit)
    try:
        load_checkpoint(model, resume.path)
    except Exception as exc:  # the trial still runs, with all its epochs, as KerasTuner would without a checkpoint
        log.warning("trial %d: the checkpoint of trial %d (%s) cannot be loaded (%s: %s); it trains from a fresh "
                    "model", result.number, resume.parent, resume.path, type(exc).__name__, exc)
        del model
        seed_everything(seed, settings.deterministic)
        return make_model(build, hp, splits.spec)  # nothing half-loaded
    result.resumed_from, result.initial_epoch = resume.parent, resume.initial_epoch
    return model


def _templates_allowed(build: Builder, settings: TrialSettings) -> bool:
    from hpo.space.fit_params import overrides_fit

    return settings.callbacks is None and not overrides_fit(build)
