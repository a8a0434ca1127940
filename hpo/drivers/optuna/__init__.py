"""Optuna behind the driver interface: define-by-run sampling of the space, RDB/journal storage, pruners.

:mod:`~hpo.drivers.optuna.driver` holds :class:`OptunaDriver`; :mod:`~hpo.drivers.optuna.storage` the
storage URLs, retries and recorded attribute names; :mod:`~hpo.drivers.optuna.samplers` the samplers and
pruners by name; :mod:`~hpo.drivers.optuna.space` the space's translation into ``trial.suggest_*`` calls.
"""

from hpo.drivers.optuna.driver import OptunaDriver
from hpo.drivers.optuna.samplers import make_pruner, make_sampler
from hpo.drivers.optuna.space import optuna_distributions, suggest_optuna
from hpo.drivers.optuna.storage import (
    CONFIG_ATTR, ERROR_ATTR, GHOST_ATTR, IDENTITY_ATTR, PARENT_RUN_ATTR, SAMPLER_SEED_ATTR, SURPLUS_ATTR,
    TRACKING_ATTR, WORKER_ATTR,
    racing_schema, resolve_storage, retrying,
)

__all__ = [
    "CONFIG_ATTR", "ERROR_ATTR", "GHOST_ATTR", "IDENTITY_ATTR", "PARENT_RUN_ATTR", "SAMPLER_SEED_ATTR",
    "SURPLUS_ATTR", "TRACKING_ATTR", "WORKER_ATTR",
    "OptunaDriver", "make_pruner", "make_sampler", "optuna_distributions", "racing_schema", "resolve_storage",
    "retrying", "suggest_optuna",
]
