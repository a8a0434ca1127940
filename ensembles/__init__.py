"""Ensembles of a finished study's trials: choose members on select, combine, evaluate, save one artifact."""

from __future__ import annotations

from ensembles.artifact import load_ensemble
from ensembles.build import build_ensemble, choose, evaluate, predict_members, predict_pool
from ensembles.calibrate import calibrated, member_temperatures
from ensembles.report import EnsembleReport
from ensembles.combine import COMBINES, combine, combine_regression, fit_temperature
from ensembles.layers import Combine
from ensembles.pool import Pool, load_pool

__all__ = [
    "COMBINES", "Combine", "EnsembleReport", "Pool", "build_ensemble", "calibrated", "choose", "combine",
    "combine_regression", "evaluate", "fit_temperature", "load_ensemble", "load_pool", "member_temperatures",
    "predict_members", "predict_pool",
]
