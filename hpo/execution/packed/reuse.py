"""Compiled packed models reused across packs: a pack whose shapes (member count, layers, held width, activation,
optimizer, batch normalization, whether it has dropout or L2, batch size) this process has already compiled trains
that compiled model, loaded with the new pack's initial state, instead of compiling again. JAX only, like
:mod:`hpo.execution.reuse` for single trials (JAX compiles in seconds what TensorFlow traces in milliseconds).

The new pack's model is still built (its members' initial weights, seed states, rates and L2 factors, learning
rates); its state moves into the compiled twin (every variable: a batch normalization's moving statistics start
again at 0 and 1), so the pack trains exactly as its own model would have. The
per-member values are variables of the packed layers and optimizer (:func:`hpo.execution.packed.layers.add_setting`),
so they are not part of the key; their Python copies (what ``unpack`` and ``get_config`` read) are moved too.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from hpo.execution.packed.layers import PackedActivation, PackedBatchNormalization, PackedDense, PackedDropout
from hpo.execution.packed.spec import PackedMLPSpec
from hpo.execution.reuse import transplant
from hpo.execution.reuse_policy import reuse_enabled
from hpo.execution.xla import compiles_per_shape

__all__ = ["MAX_PACK_TWINS", "clear_pack_twins", "compiled_pack", "pack_signature"]

MAX_PACK_TWINS = 2  # compiled packed models kept per process, least recently used dropped first
_TWINS: "OrderedDict[str, Any]" = OrderedDict()


def clear_pack_twins() -> None:
    """Forget the compiled packed models this process keeps."""
    _TWINS.clear()


def pack_signature(spec: PackedMLPSpec, batch_size: int, member_metrics: bool) -> str:
    """What a packed model's compiled steps depend on: its spec without the per-member values (only whether
    any member has dropout or L2), the batch size and whether members' metrics are tracked."""
    shape = {k: v for k, v in spec.to_dict().items() if k not in ("seeds", "learning_rates", "dropouts", "l2s",
                                                                       "member_units")}
    shape["members"] = spec.members
    shape["dropout"] = any(r > 0 for r in spec.dropouts)
    shape["l2"] = any(v > 0 for v in spec.l2s)
    return json.dumps([shape, int(batch_size), bool(member_metrics)], sort_keys=True, default=str)


def _move_settings(twin: Any, fresh: Any) -> None:
    """The Python-side per-member values (configs, ``unpack``) of ``fresh``'s layers and optimizer into
    ``twin``'s; their variables were already copied by :func:`transplant`."""
    for a, b in zip(twin.layers, fresh.layers):
        if isinstance(a, PackedDense):
            a.l2, a.seeds, a.member_units, a.member_inputs = b.l2, b.seeds, b.member_units, b.member_inputs
            if a.l2:
                a.kernel.regularizer.l2 = list(b.l2)
        elif isinstance(a, PackedDropout):
            a.rates, a.seed = list(b.rates), b.seed
        elif isinstance(a, (PackedBatchNormalization, PackedActivation)):
            a.member_units = b.member_units  # what member_weights cuts to; the masks and statistics are variables
    twin.optimizer.member_learning_rates = tuple(fresh.optimizer.member_learning_rates)


def compiled_pack(model: Any, spec: PackedMLPSpec, batch_size: int, member_metrics: bool) -> Any:
    """The packed model a pack trains: ``model`` itself, kept as the compiled model of its signature, or the
    compiled model of the same signature holding ``model``'s initial state; ``model`` itself when
    ``$HPO_REUSE_COMPILED`` is off."""
    if not compiles_per_shape() or not reuse_enabled():
        return model
    key = pack_signature(spec, batch_size, member_metrics)
    twin = _TWINS.get(key)
    if twin is not None and len(twin.layers) == len(model.layers) and transplant(twin, model):
        _move_settings(twin, model)
        _TWINS.move_to_end(key)
        return twin
    _TWINS[key] = model
    _TWINS.move_to_end(key)
    while len(_TWINS) > MAX_PACK_TWINS:
        _TWINS.popitem(last=False)
    return model
