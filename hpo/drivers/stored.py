"""The config a study was created with, read back from its Optuna storage (``hpo worker --study --storage``)."""

from __future__ import annotations

import time

import optuna

from hpo import config as config_mod
from hpo.config import StudyConfig
from hpo.drivers.optuna import CONFIG_ATTR, racing_schema, resolve_storage
from hpo.errors import ConfigError


def stored_config(study: str, storage: str, wait_s: float = 0.0) -> StudyConfig:
    """The config a study was created with, as stored in its Optuna storage (waiting ``wait_s`` for it to appear).

    Raises :class:`ConfigError` (field ``study``) when the storage holds no such study, or one without a config."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    deadline = time.monotonic() + wait_s
    opened = resolve_storage(storage)
    if isinstance(opened, str):  # one engine for every poll, not one per poll
        url = opened
        # Workers started with their owner on a new database race it to create Optuna's tables.
        opened = racing_schema(lambda: optuna.storages.RDBStorage(url))
    while True:
        try:
            found = optuna.load_study(study_name=study, storage=opened)
            raw = found.user_attrs.get(CONFIG_ATTR)
            if raw is not None:
                break
        except KeyError as exc:
            if time.monotonic() >= deadline:
                raise ConfigError("study", f"no study {study!r} in this storage; start it with `hpo run CONFIG` "
                                           "(driver.storage set to this URL) or pass the config file to `hpo worker`"
                                  ) from exc
        if time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    if raw is None:
        raise ConfigError("study", f"study {study!r} holds no hpo config; pass the config file to `hpo worker`")
    raw = dict(raw)
    raw["driver"] = {**raw["driver"], "storage": storage}  # the stored URL is redacted
    return config_mod.from_dict(raw)
