"""Pieces every built-in search space shares: inputs and logit heads from the data spec, and the framework's
default compilation (:mod:`hpo.space.compile`)."""

from __future__ import annotations

from typing import Any

import keras

from hpo.data import DataSpec
from hpo.space.compile import compile_for


def inputs_for(spec: DataSpec) -> dict[str, keras.KerasTensor]:
    """One named ``keras.Input`` per input of the data."""
    return {name: keras.Input(shape=shape, name=name) for name, shape in spec.inputs.items()}


def logit_heads(features: Any, spec: DataSpec) -> dict[str, Any]:
    """One Dense output per head, emitting logits (``from_logits=True`` losses) so ensembles can average them."""
    out = {}
    for h in spec.heads:
        units = h.n_classes if h.kind == "multiclass" else h.n_classes if h.kind == "regression" else 1
        out[h.name] = keras.layers.Dense(units, name=h.name)(features)
    return out


def single_output(outputs: dict[str, Any], spec: DataSpec) -> Any:
    """A single-head model's output tensor, or the dict of heads."""
    return outputs[spec.heads[0].name] if len(spec.heads) == 1 else outputs


__all__ = ["compile_for", "inputs_for", "logit_heads", "single_output"]
