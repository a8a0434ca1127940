"""Compiled models reused across trials: a trial whose architecture, compilation and batch size this process has
already compiled trains the compiled model, loaded with the new model's initial state, instead of compiling it
again (under JAX, compiling is most of a small trial; under TensorFlow, tracing is about 40%). Which backends reuse, the
switch that turns it off and the memory kept: :mod:`hpo.execution.reuse_policy`.

The new model is still built for every trial (its initial weights, seed states, learning rate); only its state
moves into the compiled twin, so the trial trains exactly as the new model would have. What is compiled in as
a constant (layer sizes, dropout rates, L2 factors, the optimizer's other settings) is part of the key; the
learning rate, an optimizer variable, is not. Under JAX a trial tries :mod:`hpo.execution.templates` first,
which also shares one compiled step across widths, dropout rates and L2 factors; this is the fallback.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from hpo.execution.reuse_policy import evict, reuse_enabled

__all__ = ["MAX_TWINS", "clear_twins", "compile_signature", "compiled_twin", "signature"]

MAX_TWINS = 4  # compiled models kept per process, least recently used dropped first
_TWINS: "OrderedDict[str, Any]" = OrderedDict()


def clear_twins() -> None:
    """Forget the compiled models this process keeps."""
    _TWINS.clear()


def _keras_layers_only(model: Any) -> bool:
    """Only Keras' own layers in a functional or Sequential model: their configs describe them entirely (a
    custom layer may hold Python state its config does not show)."""
    import keras

    if type(model).__name__ not in ("Functional", "Sequential") and type(model) is not keras.Model:
        return False
    return all(type(layer).__module__.startswith("keras.") for layer in model._flatten_layers(include_self=False))


def _renamed(obj: Any, names: dict[str, str]) -> Any:
    if isinstance(obj, dict):
        return {k: _renamed(v, names) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_renamed(v, names) for v in obj]
    return names.get(obj, obj) if isinstance(obj, str) else obj


def signature(model: Any, batch_size: int, config: dict[str, Any] | None = None,
              compile_config: dict[str, Any] | None = None) -> str | None:
    """What a compiled train step depends on: the model's config (or ``config``, the one of the model that is
    compiled in its place: :mod:`hpo.execution.templates`) with its layers' generated names replaced by their
    positions, its compile config (or ``compile_config``) without a float learning rate, and the batch size;
    None for a model this module does not reuse (custom layers, a subclassed model, an unserialisable
    config)."""
    try:
        if not _keras_layers_only(model):
            return None
        cfg, comp = config if config is not None else model.get_config(), compile_signature(model, compile_config)
        if comp is None:
            return None
        names = {layer.get("name", layer.get("config", {}).get("name")): f"#{i}"  # Sequential: in its config
                 for i, layer in enumerate(cfg.get("layers", []))} | {cfg.get("name"): "#model"}
        return json.dumps([_renamed(cfg, names), comp, int(batch_size)], sort_keys=True, default=str)
    except Exception:
        return None


def compile_signature(model: Any, compile_config: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """``model``'s compile config (or ``compile_config``) without its optimizer's name and float learning rate
    (a variable: trials that differ only in it share a compiled step); None when it has none that can be read."""
    try:
        comp = dict(compile_config if compile_config is not None else model.get_compile_config() or {})
    except Exception:
        return None
    opt = comp.get("optimizer")
    if isinstance(opt, dict) and isinstance(opt.get("config"), dict):
        comp["optimizer"] = {**opt, "config": {k: v for k, v in opt["config"].items() if k not in ("name",)
                                               and not (k == "learning_rate" and isinstance(v, float))}}
    return comp


def _same_structure(a: list[Any], b: list[Any]) -> bool:
    return len(a) == len(b) and all(tuple(x.shape) == tuple(y.shape) and x.dtype == y.dtype for x, y in zip(a, b))


def transplant(twin: Any, fresh: Any) -> bool:
    """Load ``fresh``'s state (weights, seed states, optimizer slots and learning rate as a fresh optimizer
    starts them) into the compiled ``twin``; False, changing nothing, when their variables do not line up."""
    tv, fv = twin.variables, fresh.variables
    if not _same_structure(tv, fv):
        return False
    topt, fopt = twin.optimizer, fresh.optimizer
    if topt is None or fopt is None:
        return False
    if getattr(topt, "built", False):
        fopt.build(fresh.trainable_variables)  # a fresh optimizer's slots (zeros, iterations 0, the new rate)
        if not _same_structure(topt.variables, fopt.variables):
            return False
        for a, b in zip(topt.variables, fopt.variables):
            a.assign(b.value)
    elif getattr(fopt, "built", False):
        return False
    for a, b in zip(tv, fv):
        a.assign(b.value)
    return True


def compiled_twin(model: Any, fit: Any) -> Any:
    """The model a trial trains: ``model`` itself, kept as the compiled model of its signature, or the compiled
    model of the same signature loaded with ``model``'s initial state; ``model`` itself where
    :func:`~hpo.execution.reuse_policy.reuse_enabled` says no (PyTorch, or the switch off)."""
    if not reuse_enabled():
        return model
    key = signature(model, fit.batch_size)
    if key is None:
        return model
    twin = _TWINS.get(key)
    if twin is not None and transplant(twin, model):
        _TWINS.move_to_end(key)
        return twin
    _TWINS[key] = model
    _TWINS.move_to_end(key)
    evict(_TWINS, MAX_TWINS)
    return model
