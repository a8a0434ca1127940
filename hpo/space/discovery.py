"""Discovery: run a builder a few times to collect the hyperparameters it declares into a :class:`SearchSpace`."""

from __future__ import annotations

import inspect
from typing import Any

import keras_tuner as kt

from hpo.errors import ConfigError
from hpo.space.builders import Builder
from hpo.space.model import Param, SearchSpace, validate_param

# Discovery stops after this many builder calls; spaces that need more are
# declared with conditional scopes, which discovery sees in one call.
MAX_DISCOVERY_BUILDS = 64


def call_builder(build: Builder, hp: kt.HyperParameters, context: Any) -> Any:
    """Call ``build(hp)`` (a plain KerasTuner builder) or ``build(hp, context)``."""
    if isinstance(build, kt.HyperModel):  # KerasTuner's HyperModel: its build(hp), unchanged
        return build.build(hp)
    try:
        n_args = len(inspect.signature(build).parameters)
    except (TypeError, ValueError):
        n_args = 1
    return build(hp, context) if n_args >= 2 else build(hp)


class _DiscoveryHP(kt.HyperParameters):
    """KerasTuner's container, refusing one name declared twice with different definitions.

    KerasTuner silently returns the first declaration's value for the second one, so two
    parameters that share a name by mistake would be searched as one."""

    def _retrieve(self, hp: Any) -> Any:
        if self._exists(hp.name, hp.conditions):
            before = next((h for h in self._hps[hp.name] if h.conditions == hp.conditions), None)
            if before is not None and type(before) is type(hp):
                a = {k: v for k, v in before.get_config().items() if k != "conditions"}
                b = {k: v for k, v in hp.get_config().items() if k != "conditions"}
                if a != b:
                    raise ConfigError(f"space.{hp.name}", f"declared twice with different definitions ({a} and {b}); "
                                                          "give each hyperparameter its own name")
            elif before is not None:
                raise ConfigError(f"space.{hp.name}", f"declared twice, as {type(before).__name__} and "
                                                      f"{type(hp).__name__}; give each hyperparameter its own name")
        return super()._retrieve(hp)


def discover(build: Builder, context: Any = None, *, what: str = "builder") -> SearchSpace:
    """Collect the hyperparameters ``build`` declares, including conditional ones.

    The builder runs with default values, then once more for each value of every
    Choice/Boolean and for the maximum of every Int (loops such as
    ``for i in range(hp.Int("layers", ...))`` declare more parameters), until no
    new parameter appears. Parameters inside ``hp.conditional_scope`` keep their
    conditions; code paths that only run under a Python ``if`` are found but not
    marked conditional, as with KerasTuner's own oracles.
    """
    import keras

    found: dict[str, Any] = {}
    order: list[str] = []
    queue: list[dict[str, Any]] = [{}]
    tried: set[str] = set()
    builds = 0
    while queue and builds < MAX_DISCOVERY_BUILDS:
        preset = queue.pop(0)
        key = repr(sorted(preset.items(), key=lambda kv: kv[0]))
        if key in tried:
            continue
        tried.add(key)
        hp = _DiscoveryHP()
        hp.values = dict(preset)
        try:
            call_builder(build, hp, context)
        except ConfigError:
            raise
        except Exception as exc:
            if builds == 0:
                raise ConfigError(what, f"the builder fails with its default hyperparameters: {exc!r}") from exc
            # A probe of a non-default value may be an invalid combination; discovery goes on.
        finally:
            builds += 1
            keras.backend.clear_session(free_memory=False)  # a short loop: skip gc.collect()
        for h in hp.space:
            if h.name in found:
                continue
            found[h.name] = h
            order.append(h.name)
            p = Param.from_kerastuner(h)
            validate_param(p, f"space.{h.name}")  # what SearchSpace checks at the end, before probing its grid
            probes: list[Any] = []
            if p.kind in ("choice", "boolean"):
                probes = [v for v in (p.grid or ()) if v != p.default]
            elif p.kind == "int":
                probes = [p.grid[-1] if p.grid else p.high]
            for v in probes:
                queue.append({**hp.values, h.name: v})
    return SearchSpace([Param.from_kerastuner(found[n]) for n in order])
