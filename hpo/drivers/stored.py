"""The config a study was created with, read back from its Optuna storage (``hpo worker --study --storage``).

Whoever can write to the shared database writes this config, so it is data, not instructions: a worker
takes from it only the fields that define the study (study name, seed and budget, driver, data, space,
training, objective(s), constraints, guards). Code is never taken from a storage: a builder or a callback named as
``module:attribute`` is refused (pass the study's config file to ``hpo worker CONFIG`` instead); the
run directory and the tracking URI are the worker's own (``--run-dir``, default ``runs/<name>``;
``--tracking-uri``, default the one the study's creator recorded, see
:func:`hpo.study.shared.study_tracking_uri`); the executor settings are the worker's machine's."""

from __future__ import annotations

import time
from typing import Any

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
        opened = racing_schema(lambda: optuna.storages.RDBStorage(url), url=url)
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
    raw = study_fields_only(raw)
    raw["driver"] = {**raw.get("driver", {}), "storage": storage}  # the stored URL is redacted
    return config_mod.from_dict(raw)


_STUDY_SECTIONS = ("study", "driver", "data", "space", "training", "objective", "guards", "ensemble", "plots",
                   "report", "tensorboard")
_CODE = "code is never taken from a shared storage; pass the study's config file: `hpo worker CONFIG --storage URL`"


def study_fields_only(raw: Any) -> dict[str, Any]:
    """The fields of a stored config a worker accepts (see the module's docstring); ConfigError naming a field
    that would run code named by the storage."""
    from hpo.space.builders import BUILTIN

    if not isinstance(raw, dict):
        raise ConfigError("study", f"the stored config is not a mapping ({type(raw).__name__})")
    out: dict[str, Any] = {k: dict(v) for k, v in raw.items() if k in _STUDY_SECTIONS and isinstance(v, dict)}
    for key in ("objective", "constraints"):  # several objectives, constraints: lists of mappings
        if isinstance(raw.get(key), list):
            out[key] = [dict(v) if isinstance(v, dict) else v for v in raw[key]]
    out.setdefault("study", {}).pop("run_dir", None)  # the worker's --run-dir, default runs/<name>
    if "tracking" in raw and isinstance(raw["tracking"], dict) and raw["tracking"].get("experiment"):
        out["tracking"] = {"experiment": raw["tracking"]["experiment"]}  # the URI: the worker's --tracking-uri
    builder = out.get("space", {}).get("builder")
    if isinstance(builder, str) and builder not in BUILTIN:
        raise ConfigError("space.builder", f"the stored config names the builder {builder!r}; {_CODE}")
    for i, spec in enumerate(out.get("training", {}).get("callbacks") or []):
        name = spec.get("name") if isinstance(spec, dict) else None
        if not isinstance(name, str) or ":" in name:
            raise ConfigError(f"training.callbacks[{i}].name", f"the stored config names the callback {name!r}; "
                                                               f"only Keras' own callbacks are taken from it; {_CODE}")
    return out
