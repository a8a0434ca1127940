"""Hyperparameter search for Keras: one search space (KerasTuner's ``hp`` language), Optuna,
Hyperopt and KerasTuner drivers, MLflow tracking, select/audit/test splits, and ensembles.

The names below are imported on first use (PEP 562): ``import hpo.tracking`` or the MLflow writer
process (:mod:`hpo.tracking.writer`) do not pay for importing Keras and TensorFlow."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpo.config import StudyConfig
    from hpo.config import from_dict as config_from_dict
    from hpo.config import load as load_config
    from hpo.errors import ConfigError, HpoError, TrialFailed, TrialPruned
    from hpo.space import Param, SearchSpace, discover
    from hpo.study import StudySummary, run_study, search

__version__ = "0.1.0"

_EXPORTS = {
    "StudyConfig": ("hpo.config", "StudyConfig"), "config_from_dict": ("hpo.config", "from_dict"),
    "load_config": ("hpo.config", "load"), "ConfigError": ("hpo.errors", "ConfigError"),
    "HpoError": ("hpo.errors", "HpoError"), "TrialFailed": ("hpo.errors", "TrialFailed"),
    "TrialPruned": ("hpo.errors", "TrialPruned"), "Param": ("hpo.space", "Param"),
    "SearchSpace": ("hpo.space", "SearchSpace"), "discover": ("hpo.space", "discover"),
    "StudySummary": ("hpo.study", "StudySummary"), "run_study": ("hpo.study", "run_study"),
    "search": ("hpo.study", "search"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hpo' has no attribute {name!r}")
