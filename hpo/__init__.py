"""Hyperparameter search for Keras: one search space (KerasTuner's ``hp`` language), Optuna,
Hyperopt and KerasTuner drivers, MLflow tracking, select/audit/test splits, and ensembles."""

from __future__ import annotations

from hpo.config import StudyConfig
from hpo.config import from_dict as config_from_dict
from hpo.config import load as load_config
from hpo.errors import ConfigError, HpoError, TrialFailed, TrialPruned
from hpo.space import Param, SearchSpace, discover
from hpo.study import StudySummary, run_study, search

__version__ = "0.1.0"

__all__ = [
    "ConfigError", "HpoError", "Param", "SearchSpace", "StudyConfig", "StudySummary", "TrialFailed", "TrialPruned",
    "config_from_dict", "discover", "load_config", "run_study", "search",
]
