"""Config overrides of a discovered space: narrow, widen or fix its parameters by name.

Values a config gives (``fixed``, ``values``, a ``default``) are checked against the builder's declared parameter
by the rules a sampled value meets (:meth:`Param.contains`): a config cannot run what the builder never declared.
A range may be narrowed or widened (that is what ranges in a config are for), with numbers of the declared type."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Mapping

from hpo.errors import ConfigError
from hpo.space.model import Param, SearchSpace, validate_param

ALLOWED_KEYS = {"min", "max", "step", "log", "values", "fixed", "default"}
_RANGE_KEYS = {"min", "max", "step", "log"}


def apply_overrides(space: SearchSpace, overrides: Mapping[str, Mapping[str, Any]], where: str = "space.params") -> SearchSpace:
    """Narrow, widen or fix parameters by name (``{units: {min: 32, max: 256}}``, ``{act: {values: [relu]}}``, ``{dropout: {fixed: 0.1}}``)."""
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
        unknown = set(spec) - ALLOWED_KEYS
        if unknown:
            raise ConfigError(f"{field_}.{sorted(unknown)[0]}", f"unknown key; allowed: {sorted(ALLOWED_KEYS)}")
        params[idx] = _override(params[idx], spec, field_)
    return SearchSpace(params)


def _override(p: Param, spec: Mapping[str, Any], field_: str) -> Param:
    """The declared parameter ``p`` with one override applied."""
    given = [k for k in ("fixed", "values") if k in spec] + (["min/max/step/log"] if set(spec) & _RANGE_KEYS else [])
    if len(given) > 1:
        raise ConfigError(field_, f"give one of fixed, values or min/max/step/log, not {' and '.join(given)}")
    if "fixed" in spec:
        if "default" in spec:
            raise ConfigError(f"{field_}.default", "a fixed parameter has no default: its value is `fixed`")
        value = accepted(p, spec["fixed"], f"{field_}.fixed")
        out = replace(p, kind="fixed", default=value, values=(value,), low=None, high=None, step=None, log=False)
    elif "values" in spec:
        vals = spec["values"]
        if not isinstance(vals, (list, tuple)) or not vals:
            raise ConfigError(f"{field_}.values", "must be a non-empty list")
        vals = [accepted(p, v, f"{field_}.values") for v in vals]
        default = accepted(p, spec["default"], f"{field_}.default") if "default" in spec else vals[0]
        if default not in vals:
            raise ConfigError(f"{field_}.default", f"{default!r} is not one of the values {vals}")
        out = replace(p, kind="choice", values=tuple(vals), default=default, low=None, high=None, step=None,
                      log=False)
    else:
        out = _range(p, spec, field_)
    validate_param(out, field_)
    return out


def _range(p: Param, spec: Mapping[str, Any], field_: str) -> Param:
    """A numeric parameter's range narrowed or widened; bounds, step and default of the declared type."""
    if p.kind not in ("int", "float"):
        raise ConfigError(field_, f"min/max/step/log apply to numeric parameters; {p.name!r} is a {p.kind}")
    for k in ("min", "max", "step", "default"):
        if k in spec and (not isinstance(spec[k], (int, float)) or isinstance(spec[k], bool)
                          or not math.isfinite(spec[k])):
            raise ConfigError(f"{field_}.{k}", f"must be a finite number, got {spec[k]!r}")
    if "log" in spec and not isinstance(spec["log"], bool):
        raise ConfigError(f"{field_}.log", f"must be true or false, got {spec['log']!r}")
    if p.kind == "int":
        for k in ("min", "max", "step", "default"):
            if k in spec and int(spec[k]) != spec[k]:
                raise ConfigError(f"{field_}.{k}", f"{p.name!r} is an integer parameter, got {spec[k]!r}")
    out = replace(p, low=spec.get("min", p.low), high=spec.get("max", p.high), step=spec.get("step", p.step),
                  log=spec.get("log", p.log))
    validate_param(out, field_)
    if "default" in spec:
        default = accepted(out, out.cast(spec["default"]), f"{field_}.default")
    else:  # the builder's default, when the new range still holds it
        default = p.default if p.default is not None and out.contains(out.cast(p.default)) else out.low
    return replace(out, default=out.cast(default))


def accepted(p: Param, value: Any, field_: str) -> Any:
    """``value`` as the declared parameter ``p`` takes it (a whole number is a float parameter's value too), or
    ConfigError when ``p`` could never be sampled with it: outside its range or step grid, not among its
    choices, or of another type. A parameter the builder fixes may be fixed to another value of its type."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if p.kind == "float" and numeric:
        value = float(value)
    if p.kind == "fixed":
        same = type(value) is type(p.default) or (numeric and isinstance(p.default, (int, float))
                                                   and not isinstance(p.default, bool))
        if not same:
            raise ConfigError(field_, f"{value!r} is a {type(value).__name__}; the builder fixes {p.name!r} to a "
                                      f"{type(p.default).__name__} ({p.default!r})")
        return value
    if p.contains(value):
        return value
    if p.kind == "choice":
        why = f"is not one of the builder's choices {list(p.values)}"
    elif p.kind == "boolean":
        why = "is not true or false (a boolean parameter)"
    elif not numeric:
        why = f"is not a number ({p.name!r} is a {p.kind} parameter)"
    elif p.kind == "int" and not isinstance(value, int):
        why = f"is not a whole number ({p.name!r} is an integer parameter)"
    elif not (p.low <= value <= p.high):  # type: ignore[operator]
        why = f"is outside the declared range [{p.low}, {p.high}]; widen it with min/max, or choose a value inside it"
    else:
        why = f"is not on the declared step grid (step {p.step}); the nearest value is {p.snap(value)!r}"
    raise ConfigError(field_, f"{value!r} {why}")
