"""One trial: build, fit with callbacks, score ``select`` and ``audit``, save logits and the model.

The runner never raises for a bad trial: exceptions, NaN losses and budgets end
in a :class:`TrialResult` with state FAILED and the reason, pruning in state
PRUNED, so the study goes on. With ``training.folds`` the trial is cross-validated
(:mod:`hpo.execution.folds`).
"""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path
from typing import Any, Mapping

from hpo.data import Splits
from hpo.errors import TrialFailed, TrialPruned
from hpo.execution.fitting import (EpochListener, Fit, TrialSettings, final_scores, fit_model, make_model,
                                   save_predictions)
from hpo.execution.folds import run_folds
from hpo.execution.reuse import compiled_twin
from hpo.execution.memory import release_memory, start_trial_memory
from hpo.execution.xla import enable_compilation_cache, host_initialisers
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
) -> TrialResult:
    """Train and score one configuration; never raises for a failing trial."""
    started = time.monotonic()
    result = TrialResult(number=number, params=dict(params), seed=seed, state=TrialState.FAILED)
    model = None
    start_trial_memory()
    enable_compilation_cache()
    try:
        with host_initialisers():
            model = _train(result, params, seed, build, space, splits, settings, trial_dir, listener, epochs,
                           extra_callbacks, started)
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
           epochs: int | None, extra_callbacks: list[Any] | None, started: float) -> Any:
    """The body of :func:`run_trial`: fills ``result``; returns the trained model (None for folds)."""
    hp = space.hyperparameters_for(params)
    fit = Fit(build, hp, *settings.for_trial(params, epochs))
    if settings.folds > 1:
        run_folds(result, splits, settings, trial_dir, listener, fit, extra_callbacks, started)
        return None
    seed_everything(seed, settings.deterministic)
    # The model as built for this trial, or, when this process already compiled one of the same architecture
    # and batch size, that compiled model holding the new model's initial state (hpo.execution.reuse)
    model = compiled_twin(make_model(build, hp, splits.spec), fit)
    audit_history = fit_model(model, result, splits, settings, trial_dir, listener, fit, extra_callbacks, started)
    final_scores(model, result, splits, settings, audit_history)
    trial_dir.mkdir(parents=True, exist_ok=True)
    result.predictions_path = str(save_predictions(model, splits, trial_dir))
    if settings.save_models:
        model_path = trial_dir / "model.keras"
        model.save(model_path)
        result.model_path = str(model_path)
    return model
