"""User callbacks, fresh for every trial: named in a config or given from Python.

A config names Keras callbacks (``EarlyStopping``, ``ReduceLROnPlateau``,
``ModelCheckpoint``, ``TerminateOnNaN``, ...) or any ``package.module:Class``
subclass of ``keras.callbacks.Callback``, with keyword arguments. Every path a
callback is given stays inside the trial's directory, whoever wrote the config (a
shared study's stored config is someone else's data): an argument named like a path
(``filepath``, ``filename``, ``log_dir``, ``backup_dir``, ``path``, ``*_dir``,
``*_path``, ``*_file``...) is relative to the trial's directory, and any string that
is an absolute path, starts with ``~`` or climbs with ``..`` is refused, naming the
field. String arguments may use ``{trial_dir}``.
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


_PATH_NAMES = {"filepath", "filename", "file", "path", "dir", "directory", "log_dir", "logdir", "backup_dir",
               "root", "folder", "output", "save_path", "checkpoint_dir"}
_PATH_ENDINGS = ("_dir", "_path", "_file", "_filename", "_folder", "_directory", "filepath", "logdir")


def is_path_name(name: str) -> bool:
    """Whether a callback argument's name says it holds a file or folder."""
    n = name.lower()
    return n in _PATH_NAMES or n.endswith(_PATH_ENDINGS)


def _leaves(value: str) -> bool:
    """Whether a string, read as a path, names a place outside the folder it is relative to."""
    posix = value.replace("\\", "/")
    return Path(value).is_absolute() or posix.startswith(("/", "~")) or ".." in posix.split("/")


def _inside(trial_dir: Path, value: str, where: str, real: bool) -> str:
    if _leaves(value):
        raise ConfigError(where, f"{value!r} must be a path relative to the trial directory, without '..'")
    target = trial_dir / value
    # A symlink inside the trial directory may still point out of it: resolve before trusting the path.
    if real and not target.resolve().is_relative_to(trial_dir.resolve()):
        raise ConfigError(where, f"{value!r} leads out of the trial directory {trial_dir} (through a link)")
    return str(target)


def _substitute(args: Mapping[str, Any], trial_dir: Path, where: str, real: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in args.items():
        w = f"{where}.{k}"
        if isinstance(v, str) and "{trial_dir}" in v:
            v = _inside(trial_dir, v.replace("{trial_dir}", "").lstrip("/\\") or ".", w, real)
        elif isinstance(v, (str, Path)) and is_path_name(str(k)):
            v = _inside(trial_dir, str(v), w, real)
        elif isinstance(v, str) and _leaves(v):
            raise ConfigError(w, f"{v!r} names a place outside the trial directory; callback paths are relative "
                                 "to it (or use '{trial_dir}/...')")
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
        probe = _substitute(args, Path("trial"), f"{w}.args", real=False)
        try:
            cls(**probe)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{w}.args", f"{spec['name']} does not accept these arguments: {exc}") from exc
        resolved.append((cls, dict(args), f"{w}.args"))

    def factory(trial_dir: Path) -> list[Any]:
        return [cls(**_substitute(args, trial_dir, w)) for cls, args, w in resolved]

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
