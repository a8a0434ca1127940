"""Config overrides of a discovered space: narrow, widen or fix its parameters by name."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Mapping

from hpo.errors import ConfigError
from hpo.space.model import SearchSpace, validate_param


def apply_overrides(space: SearchSpace, overrides: Mapping[str, Mapping[str, Any]], where: str = "space.params") -> SearchSpace:
    """Narrow, widen or fix parameters by name (``{units: {min: 32, max: 256}}``, ``{act: {values: [relu]}}``, ``{dropout: {fixed: 0.1}}``)."""
    allowed = {"min", "max", "step", "log", "values", "fixed", "default"}
    params = list(space.params)
    for name, spec in overrides.items():
        field_ = f"{where}.{name}"
        idx = next((i for i, p in enumerate(params) if p.name == name), None)
        if idx is None:
            import difflib

            close = difflib.get_close_matches(name, space.names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(field_, f"not a hyperparameter of this space (known: {', '.join(space.names)}){hint}")
        if not isinstance(spec, Mapping):
            raise ConfigError(field_, f"expected a mapping such as {{min: 1, max: 4}}, got {type(spec).__name__}")
        unknown = set(spec) - allowed
        if unknown:
            raise ConfigError(f"{field_}.{sorted(unknown)[0]}", f"unknown key; allowed: {sorted(allowed)}")
        p = params[idx]
        if "fixed" in spec:
            p = replace(p, kind="fixed", default=spec["fixed"], values=(spec["fixed"],), low=None, high=None, step=None, log=False)
        elif "values" in spec:
            vals = spec["values"]
            if not isinstance(vals, (list, tuple)) or not vals:
                raise ConfigError(f"{field_}.values", "must be a non-empty list")
            p = replace(p, kind="choice", values=tuple(vals), default=vals[0], low=None, high=None, step=None, log=False)
        else:
            if p.kind not in ("int", "float"):
                raise ConfigError(field_, f"min/max/step/log apply to numeric parameters; {name!r} is a {p.kind}")
            for k in ("min", "max", "step", "default"):
                if k in spec and (not isinstance(spec[k], (int, float)) or isinstance(spec[k], bool)
                                  or not math.isfinite(spec[k])):
                    raise ConfigError(f"{field_}.{k}", f"must be a finite number, got {spec[k]!r}")
            if "log" in spec and not isinstance(spec["log"], bool):
                raise ConfigError(f"{field_}.log", f"must be true or false, got {spec['log']!r}")
            low = spec.get("min", p.low)
            high = spec.get("max", p.high)
            if p.kind == "int":
                for k in ("min", "max", "step"):
                    if k in spec and int(spec[k]) != spec[k]:
                        raise ConfigError(f"{field_}.{k}", f"{name!r} is an integer parameter, got {spec[k]!r}")
            p = replace(p, low=low, high=high, step=spec.get("step", p.step), log=spec.get("log", p.log))
            validate_param(p, field_)
            default = spec.get("default", p.default)
            if not (p.low <= default <= p.high):
                default = p.low
            p = replace(p, default=p.cast(default))
        validate_param(p, field_)
        params[idx] = p
    return SearchSpace(params)
