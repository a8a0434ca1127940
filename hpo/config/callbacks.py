"""User callbacks, fresh for every trial: named in a config or given from Python.

A config names Keras callbacks (``EarlyStopping``, ``ReduceLROnPlateau``,
``ModelCheckpoint``, ``TerminateOnNaN``, ...) or any ``package.module:Class``
subclass of ``keras.callbacks.Callback``, with keyword arguments. String arguments
may use ``{trial_dir}``; a ``ModelCheckpoint`` file path is relative to the trial's
directory and may not leave it.
"""

from __future__ import annotations

import copy
import importlib
import inspect
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from hpo.errors import ConfigError

CallbackFactory = Callable[[Path], list[Any]]


def _callback_class(name: str, where: str) -> type:
    import keras

    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(where, f"cannot import {name!r}: {exc}") from exc
    else:
        cls = getattr(keras.callbacks, name, None)
        if cls is None:
            known = sorted(n for n, c in vars(keras.callbacks).items()
                           if inspect.isclass(c) and issubclass(c, keras.callbacks.Callback) and n != "Callback")
            raise ConfigError(where, f"unknown Keras callback {name!r}; use one of {', '.join(known)} "
                                     "or 'package.module:Class'")
    if not (inspect.isclass(cls) and issubclass(cls, keras.callbacks.Callback)):
        raise ConfigError(where, f"{name!r} is not a keras.callbacks.Callback subclass")
    return cls


def _inside(trial_dir: Path, value: str, where: str) -> str:
    p = Path(value)
    if p.is_absolute() or ".." in p.parts:
        raise ConfigError(where, f"{value!r} must be a path relative to the trial directory, without '..'")
    return str(trial_dir / p)


def _substitute(args: Mapping[str, Any], trial_dir: Path, cls_name: str, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in args.items():
        if isinstance(v, str) and "{trial_dir}" in v:
            v = _inside(trial_dir, v.replace("{trial_dir}", "").lstrip("/\\") or ".", f"{where}.{k}")
        elif cls_name == "ModelCheckpoint" and k == "filepath":
            v = _inside(trial_dir, str(v), f"{where}.{k}")
        out[k] = v
    return out


def from_config(specs: Sequence[Any], where: str = "training.callbacks") -> CallbackFactory | None:
    """Validate callback specs up front (each is built once) and return a per-trial factory."""
    if not specs:
        return None
    if not isinstance(specs, (list, tuple)):
        raise ConfigError(where, f"must be a list of {{name: ..., args: {{...}}}}, got {type(specs).__name__}")
    resolved: list[tuple[type, dict[str, Any], str]] = []
    for i, spec in enumerate(specs):
        w = f"{where}[{i}]"
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise ConfigError(w, "each callback is a mapping with a 'name' and optional 'args'")
        extra = set(spec) - {"name", "args"}
        if extra:
            raise ConfigError(f"{w}.{sorted(extra)[0]}", "unknown key; a callback has 'name' and 'args'")
        if not isinstance(spec["name"], str):
            raise ConfigError(f"{w}.name", f"must be a string, got {spec['name']!r}")
        args = spec.get("args") or {}
        if not isinstance(args, Mapping):
            raise ConfigError(f"{w}.args", f"must be a mapping of keyword arguments, got {type(args).__name__}")
        cls = _callback_class(spec["name"], f"{w}.name")
        probe = _substitute(args, Path("trial"), cls.__name__, f"{w}.args")
        try:
            cls(**probe)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{w}.args", f"{spec['name']} does not accept these arguments: {exc}") from exc
        resolved.append((cls, dict(args), f"{w}.args"))

    def factory(trial_dir: Path) -> list[Any]:
        return [cls(**_substitute(args, trial_dir, cls.__name__, w)) for cls, args, w in resolved]

    return factory


def as_factory(callbacks: Any) -> CallbackFactory | None:
    """A per-trial factory from a list of callbacks (deep-copied per trial) or a callable (``f()`` or ``f(trial_dir)``)."""
    if callbacks is None:
        return None
    if callable(callbacks) and not isinstance(callbacks, (list, tuple)):
        try:
            n = len(inspect.signature(callbacks).parameters)
        except (TypeError, ValueError):
            n = 0
        return (lambda d: list(callbacks(d))) if n >= 1 else (lambda d: list(callbacks()))
    items = list(callbacks)
    return lambda d: [copy.deepcopy(c) for c in items]


def combine(*factories: CallbackFactory | None) -> CallbackFactory | None:
    fs = [f for f in factories if f is not None]
    if not fs:
        return None
    return lambda d: [c for f in fs for c in f(d)]
