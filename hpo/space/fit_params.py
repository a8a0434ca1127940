"""Fit-time hyperparameters: ``training.batch_size`` and ``training.epochs`` searched with the syntax of
``space.params`` entries (``{min: 16, max: 256, log: true}``, ``{values: [32, 64, 128]}``), and a KerasTuner
``HyperModel`` whose ``fit(hp, model, *args, **kwargs)`` declares (and reads) its own ``hp`` values."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

import keras_tuner as kt

from hpo.errors import ConfigError
from hpo.space.model import Param, SearchSpace
from hpo.space.overrides import apply_overrides

FIT_PARAMS = ("batch_size", "epochs")
_LIMITS = {"batch_size": 1 << 20, "epochs": 100_000}


def fit_param(name: str, spec: Mapping[str, Any], where: str = "training") -> Param:
    """The parameter ``training.<name>`` declares: an integer range or list of values, checked like a
    ``space.params`` override of an integer declared from 1 up (errors name ``training.<name>...``)."""
    base = SearchSpace([Param(name, "int", low=1, high=_LIMITS[name], step=1, default=1)])
    p = apply_overrides(base, {name: spec}, where=where)[name]
    if p.kind == "fixed":
        raise ConfigError(f"{where}.{name}", f"give a plain number for a fixed {name} ({name}: {p.default})")
    if p.log and p.step == 1:  # a log-sampled integer has no step (KerasTuner reads one as a factor > 1)
        p = replace(p, step=None)
    lowest = min(p.grid) if p.grid else p.low
    if lowest is None or lowest < 1:
        raise ConfigError(f"{where}.{name}", f"every value must be at least 1, got {lowest!r}")
    return p


def searched_fit_params(training: Any) -> dict[str, Param]:
    """The fit-time parameters a training section searches (those given as a mapping), by name."""
    return {n: fit_param(n, getattr(training, n)) for n in FIT_PARAMS if isinstance(getattr(training, n), Mapping)}


def with_fit_params(space: SearchSpace, fit: Mapping[str, Param]) -> SearchSpace:
    """``space`` with the searched fit-time parameters appended; one the builder declares too is refused."""
    for name in fit:
        if name in space.names:
            raise ConfigError(f"training.{name}", f"the builder declares a hyperparameter {name!r} too; search it in "
                                                  f"one place (give training.{name} a number, or rename the builder's)")
    return SearchSpace([*space.params, *fit.values()]) if fit else space


def is_hypermodel(build: Any) -> bool:
    """A KerasTuner ``HyperModel`` instance (``build(hp)`` and maybe its own ``fit``)."""
    return isinstance(build, kt.HyperModel)


def overrides_fit(build: Any) -> bool:
    """A ``HyperModel`` whose class overrides ``fit(hp, model, *args, **kwargs)``."""
    return is_hypermodel(build) and type(build).fit is not kt.HyperModel.fit


class _NoFit:
    """A model stand-in for discovering what a HyperModel's ``fit`` declares: ``fit`` trains nothing; every
    other attribute is the real model's."""

    def __init__(self, model: Any) -> None:
        self._model = model

    def fit(self, *args: Any, **kwargs: Any) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def declare_fit(build: Any, hp: Any, model: Any) -> None:
    """Run a HyperModel's ``fit`` override without training, so the ``hp`` values it declares join the space.
    Anything it does besides ``model.fit`` may fail without data; the declarations made before that count."""
    if not overrides_fit(build):
        return
    try:
        build.fit(hp, _NoFit(model), None, None, validation_data=None, epochs=1, callbacks=[], verbose=0)
    except ConfigError:
        raise
    except Exception:  # no data during discovery: the declarations made so far are kept
        pass
