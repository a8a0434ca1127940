"""Supernets (JAX): one compiled train step for the dense stacks of a search, whatever their depth, widths,
activations, batch normalisation, dropout and L2 values.

A *dense stack* is a chain of Keras layers: an input, an optional Flatten, blocks of ``Dense -> [BatchNormalization]
-> [Activation] -> [Dropout]`` (or a Dense with its own elementwise activation), then a Dense head that is the
model's one output; the built-in ``mlp`` space and the course's MLPs are dense stacks. A trial's stack trains in a
supernet of at least its depth and width: ``depth`` blocks all ``width`` units wide (the widest block's bucket,
:func:`hpo.execution.templates.bucket`), in which

* blocks beyond the trial's depth pass their input on unchanged (:class:`DepthGate`) and hold zero weights, so
  they get zero gradients and stay zero;
* a block's units beyond the trial's width are masked in the next Dense (as in :mod:`hpo.execution.templates`);
* the activation is chosen by a variable among a family (:class:`SwitchActivation`), batch normalisation is on
  or off by a variable (:class:`SwitchBatchNormalization`), dropout keep probabilities and L2 factors are
  variables (0 and 1 where the trial has none: exactly nothing).

Every switch selects (``where``) rather than multiplies, so the trial's numbers are exactly its own stack's up to
float summation order, with the exceptions :mod:`hpo.execution.templates` lists (a Dropout behind a masked width
draws noise for the padded width; the Dense bias in front of a batch normalisation drifts by rounding noise).
What stays compiled in (the input, the head, the loss and metrics, the optimizer's class and settings but its
learning rate, the batch size) is the supernet's key. A supernet that does not cover a trial grows to cover
both (the union of depths, widths, switches), when the extra arithmetic the trial then pays is below what one
more compilation costs (:func:`_worth_covering`); otherwise the trial gets a supernet of its own size.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hpo.execution.compile_cost import worth_extra
from hpo.execution.reuse import compile_signature
from hpo.execution.switch_optimizer import KERAS_DEFAULTS
from hpo.execution.template_plan import ELEMENTWISE, bucket
from hpo.execution.template_plan import activation_name as _activation_name
from hpo.execution.template_plan import is_layer as _is
from hpo.execution.template_plan import plain_dense as _plain_dense
from hpo.execution.template_plan import value_l2 as _value_l2

__all__ = ["FAMILY", "Shape", "Stack", "covering_shape", "family_of", "stack_of"]

# The activation every supernet can switch to (a block without one); the others it switches between are those
# of its stacks and of the search space's choices (:func:`hpo.execution.supernet_state.space_hint`): each one
# computed costs compile time (~0.1 s each for 3 blocks on 2 CPU cores) and arithmetic.
FAMILY = ("linear",)
# Optimizers whose slots are per-variable lists this module can map (its tests train each against Keras' own)
OPTIMIZERS = frozenset({"Adam", "AdamW", "RMSprop", "SGD"})


@dataclass
class Block:
    """One block of a dense stack: its Dense, batch normalisation, activation name and Dropout."""

    dense: Any
    bn: Any = None
    activation: str = "linear"
    dropout: Any = None


@dataclass
class Stack:
    """A model recognised as a dense stack: its layers by role and the key of what is compiled in."""

    model: Any
    flatten: Any
    blocks: list[Block]
    head: Any
    key: str
    bn_config: str | None = None  # one config for all its BatchNormalization layers
    optimizer: tuple[str, str] | None = None  # Adam's or RMSprop's own settings: a switch (AdamOrRMSprop)

    @property
    def widths(self) -> list[int]:
        return [int(b.dense.units) for b in self.blocks]

    def flops(self, in_dim: int) -> int:
        """Multiply-adds per row of its Dense layers."""
        dims = [in_dim, *self.widths, int(self.head.units)]
        return sum(a * b for a, b in zip(dims, dims[1:]))


def _setting(opt: Any) -> tuple[str, str] | None:
    """An Adam's or RMSprop's own settings (what a switch between the two compiles in), or None."""
    from hpo.execution.switch_optimizer import switchable

    if not switchable(opt):
        return None
    keys = ("beta_1", "beta_2", "epsilon") if type(opt).__name__ == "Adam" else ("rho", "epsilon")
    return type(opt).__name__, json.dumps({k: float(getattr(opt, k)) for k in keys}, sort_keys=True)


def _optimizers(settings: list[Any], strict: bool = False) -> Any:
    """One setting per optimizer class, sorted: the first given wins (``strict``: None when two differ)."""
    out: dict[str, str] = {}
    for cls, cfg in (s for s in settings if s):
        if cls in out and out[cls] != cfg and strict:
            return None
        out.setdefault(cls, cfg)
    return tuple(sorted(out.items()))


# Keras' default Adam and RMSprop, which every switch holds unless a trial's own settings differ
DEFAULT_OPTIMIZERS = tuple((kind, json.dumps(cfg, sort_keys=True)) for kind, cfg in KERAS_DEFAULTS.items())


def family_of(activations: Any) -> tuple[str, ...]:
    """The activations a supernet switches between, in one order: :data:`FAMILY`, then the others sorted."""
    return FAMILY + tuple(sorted(set(activations) - set(FAMILY)))


@dataclass(frozen=True)
class Shape:
    """The size of a supernet: blocks, their common width, which blocks hold batch normalisation and Dropout,
    and the activations it switches between."""

    depth: int
    width: int
    bn: tuple[bool, ...]
    dropout: tuple[bool, ...]
    family: tuple[str, ...] = FAMILY
    bn_config: str | None = None
    optimizers: tuple[tuple[str, str], ...] = ()  # the Adam and RMSprop settings it switches between

    @staticmethod
    def of(stack: Stack) -> "Shape":
        family = family_of(b.activation for b in stack.blocks)
        optimizers = _optimizers([stack.optimizer, *DEFAULT_OPTIMIZERS]) if stack.optimizer else ()
        return Shape(len(stack.blocks), bucket(max(stack.widths)), tuple(b.bn is not None for b in stack.blocks),
                     tuple(b.dropout is not None for b in stack.blocks), family, stack.bn_config, optimizers)

    def covers(self, stack: Stack) -> bool:
        own = Shape.of(stack)
        return (own.depth <= self.depth and own.width <= self.width and set(own.family) <= set(self.family)
                and all(self.bn[i] or not b for i, b in enumerate(own.bn))
                and all(self.dropout[i] or not d for i, d in enumerate(own.dropout))
                and (own.bn_config is None or own.bn_config == self.bn_config)
                and (stack.optimizer is None or stack.optimizer in self.optimizers))

    def union(self, other: "Shape") -> "Shape | None":
        """The smallest shape covering both; None when their batch normalisations differ in settings."""
        if self.bn_config and other.bn_config and self.bn_config != other.bn_config:
            return None
        depth = max(self.depth, other.depth)

        def flags(a: tuple[bool, ...], b: tuple[bool, ...]) -> tuple[bool, ...]:
            return tuple((i < len(a) and a[i]) or (i < len(b) and b[i]) for i in range(depth))

        family = family_of(self.family + other.family)
        optimizers = _optimizers([*self.optimizers, *other.optimizers], strict=True)
        if optimizers is None:
            return None
        return Shape(depth, max(self.width, other.width), flags(self.bn, other.bn),
                     flags(self.dropout, other.dropout), family, self.bn_config or other.bn_config, optimizers)

    def flops(self, in_dim: int, head: int) -> int:
        return in_dim * self.width + (self.depth - 1) * self.width ** 2 + self.width * head


def _activation(layer: Any) -> str | None:
    return _activation_name(layer.activation)


def _plain(layer: Any) -> bool:
    """A Dense a template would take (:func:`hpo.execution.templates._plain_dense`) with L2 or no regularizers."""
    return _plain_dense(layer) and _value_l2(layer.kernel_regularizer) and _value_l2(layer.bias_regularizer)


def _chain(model: Any) -> list[Any] | None:
    """``model``'s layers but its input, when each reads the one before it and nothing else; else None."""
    import keras

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        return None
    layers = [la for la in model._flatten_layers(include_self=False, recursive=False)
              if not isinstance(la, keras.layers.InputLayer)]
    previous = model.inputs[0]
    for layer in layers:
        nodes = layer._inbound_nodes
        if len(nodes) != 1 or len(layer._outbound_nodes) > 1 or len(nodes[0].input_tensors) != 1:
            return None
        if nodes[0].input_tensors[0] is not previous:
            return None
        previous = nodes[0].output_tensors[0]
    return layers if layers and previous is model.outputs[0] else None


def _blocks(layers: list[Any]) -> tuple[list[Block], str | None] | None:
    """The blocks of a chain's hidden layers (all but the head); None where one is not a dense-stack block."""
    blocks: list[Block] = []
    bn_configs: set[str] = set()
    for layer in layers:
        if _is(layer, "Dense"):
            act = _activation(layer)
            if not _plain(layer) or act not in ELEMENTWISE:
                return None
            blocks.append(Block(layer, activation=act))
            continue
        if not blocks:
            return None
        block = blocks[-1]
        if _is(layer, "BatchNormalization") and block.bn is None and block.activation == "linear" \
                and block.dropout is None:
            cfg = {k: v for k, v in layer.get_config().items() if k not in ("name", "dtype")
                   and not k.endswith("initializer")}
            if cfg.get("axis") not in (-1, len(layer.input.shape) - 1) or layer.beta_constraint \
                    or layer.gamma_constraint or cfg.get("synchronized") or cfg.get("renorm"):
                return None
            block.bn = layer
            bn_configs.add(json.dumps(cfg, sort_keys=True, default=str))
        elif _is(layer, "Activation") and block.activation == "linear" and block.dropout is None \
                and _activation(layer) in ELEMENTWISE:
            block.activation = _activation(layer)
        elif _is(layer, "Dropout") and block.dropout is None and layer.noise_shape is None:
            block.dropout = layer
        else:
            return None
    if len(bn_configs) > 1:
        return None
    return blocks, next(iter(bn_configs), None)


def _input_name(model: Any) -> str:
    """The name of ``model``'s input layer (data given as a dict is matched by it); "" for a name Keras generated
    (``input_layer_3``), which no data refers to."""
    name = model.inputs[0]._keras_history.operation.name
    return "" if re.fullmatch(r"input_layer(_\d+)?", name) else name


def stack_of(model: Any, batch_size: int) -> Stack | None:
    """``model`` as a dense stack with its supernet key; None for any other model (it may still have a
    template: :mod:`hpo.execution.templates`)."""
    import keras

    opt = getattr(model, "optimizer", None)
    if opt is None or type(opt).__name__ not in OPTIMIZERS or getattr(opt, "use_ema", False):
        return None
    layers = _chain(model)
    if layers is None or any(getattr(la.dtype_policy, "name", "float32") != "float32" for la in layers):
        return None
    flatten = layers[0] if _is(layers[0], "Flatten") else None
    dims = list(model.inputs[0].shape[1:])
    if any(not isinstance(d, int) for d in dims) or (flatten is None and len(dims) != 1):
        return None  # Dense blocks over one known feature axis only
    head = layers[-1]
    if not _plain(head) or _activation(head) is None:
        return None
    parsed = _blocks(layers[1 if flatten else 0:-1])
    if parsed is None or not parsed[0]:
        return None
    blocks, bn_config = parsed
    if len({bool(b.dense.use_bias) for b in blocks}) != 1 or not isinstance(model.inputs[0], keras.KerasTensor):
        return None
    comp = compile_signature(model)
    if comp is None:
        return None
    setting = _setting(opt)
    if setting is not None:  # the class and its own settings are the shape's (a switch), the rest the key's
        own = ("name", "learning_rate", "beta_1", "beta_2", "epsilon", "amsgrad", "rho", "momentum", "centered")
        comp["optimizer"] = {"switch": {k: v for k, v in comp["optimizer"].get("config", {}).items()
                                        if k not in own}}
    inp = model.inputs[0]
    # The head's (generated) name matters only where the compile config names the output (a dict of losses)
    named = any(isinstance(comp.get(k), dict) and "class_name" not in comp[k]
                for k in ("loss", "metrics", "weighted_metrics", "loss_weights"))
    key = json.dumps({"input": [list(inp.shape), str(inp.dtype), _input_name(model)],
                      "flatten": flatten.get_config().get("data_format") if flatten else False,
                      "bias": bool(blocks[0].dense.use_bias),
                      "head": [head.name if named else "", int(head.units), _activation(head), bool(head.use_bias)],
                      "compile": comp, "batch_size": int(batch_size)}, sort_keys=True, default=str)
    return Stack(model, flatten, blocks, head, key, bn_config, setting)


def in_dim(stack: Stack) -> int:
    return int(np.prod([int(d) for d in stack.model.inputs[0].shape[1:]]))


def _worth_covering(shape: Shape, stack: Stack, steps: int | None, platform: str) -> bool:
    """True when training ``stack`` in ``shape`` costs less extra arithmetic than one more compilation
    (:func:`hpo.execution.compile_cost.worth_extra`)."""
    d = in_dim(stack)
    extra = shape.flops(d, int(stack.head.units)) - stack.flops(d)
    return worth_extra(extra, stack.flops(d), int(json.loads(stack.key)["batch_size"]), steps, platform)


def covering_shape(shapes: list[Shape], stack: Stack, steps: int | None, platform: str,
                   hint: Shape | None = None) -> tuple[Shape, bool]:
    """The shape ``stack`` trains in, and whether it is one of ``shapes`` (compiled already): the cheapest of
    ``shapes`` covering it where that is worth it; else a new one, the first worth it of: ``stack``'s own shape
    grown to cover the largest of ``shapes`` and ``hint`` (the largest model of the search space, so that one
    compilation covers the trials to come), to cover the largest of ``shapes``, to cover ``hint``; else
    ``stack``'s own shape."""
    d, head = in_dim(stack), int(stack.head.units)
    covering = sorted((s for s in shapes if s.covers(stack) and _worth_covering(s, stack, steps, platform)),
                      key=lambda s: s.flops(d, head))
    if covering:
        return covering[0], True
    own = Shape.of(stack)
    largest = [max(shapes, key=lambda s: s.flops(d, head))] if shapes else []
    for parts in ([*largest, hint], largest, [hint]):
        grown: Shape | None = own
        for part in parts:
            grown = grown.union(part) if grown is not None and part is not None else grown
        if grown is not None and grown != own and _worth_covering(grown, stack, steps, platform):
            return grown, False
    return own, False


def _compile_config(model: Any, shape: Shape) -> dict[str, Any]:
    """``model``'s compile config, its Adam or RMSprop replaced by the switch of ``shape``'s settings."""
    import keras

    from hpo.execution.switch_optimizer import AdamOrRMSprop, base_config

    cfg = dict(model.get_compile_config())
    if shape.optimizers:
        settings = dict(shape.optimizers)
        adam = json.loads(settings.get("Adam", DEFAULT_OPTIMIZERS[0][1]))
        rms = json.loads(settings.get("RMSprop", DEFAULT_OPTIMIZERS[1][1]))
        base = base_config(model.optimizer)
        cfg["optimizer"] = keras.saving.serialize_keras_object(
            AdamOrRMSprop(**base, **adam, rho=rms["rho"], rms_epsilon=rms["epsilon"]))
    return cfg


@dataclass
class Roles:
    """A supernet's layers by role (block ``i``: its Dense, batch normalisation, activation, Dropout, gate)."""

    dense: list[Any] = field(default_factory=list)
    bn: list[Any] = field(default_factory=list)
    act: list[Any] = field(default_factory=list)
    dropout: list[Any] = field(default_factory=list)
    gate: list[Any] = field(default_factory=list)
    head: Any = None


def build_supernet(stack: Stack, shape: Shape) -> tuple[Any, Roles]:
    """The supernet of ``shape`` for ``stack``'s key, compiled as ``stack.model`` is, its optimizer built. The
    global random states are left as they were (building it must not change what the trial draws next)."""
    import keras

    from hpo.execution.template_layers import (DepthGate, PaddingRows, SwitchActivation,
                                               SwitchBatchNormalization, TemplateDense, TemplateDropout)

    model, roles = stack.model, Roles()
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        src = model.inputs[0]
        inp = keras.Input(shape=tuple(src.shape[1:]), dtype=src.dtype, name=_input_name(model) or None)
        # Batch normalisation reads which rows are real, so the last partial batch trains padded (one train
        # step, see hpo.execution.shapes) and its statistics stay the unpadded batch's: padding rows come as NaN.
        rows = None
        if any(shape.bn) and keras.backend.is_float_dtype(src.dtype):
            x, rows = PaddingRows(name="padding_rows")(inp)
        else:
            x = inp
        x = stack.flatten.__class__.from_config(stack.flatten.get_config())(x) if stack.flatten else x
        bias = bool(stack.blocks[0].dense.use_bias)
        bn_cfg = json.loads(shape.bn_config) if shape.bn_config else {}
        for i in range(shape.depth):
            roles.dense.append(TemplateDense(shape.width, use_bias=bias, masked_input=i > 0, value_l2=(True, bias)))
            h = roles.dense[-1](x)
            roles.bn.append(SwitchBatchNormalization(row_mask=rows is not None, **bn_cfg) if shape.bn[i] else None)
            if roles.bn[-1] is not None:
                h = roles.bn[-1]([h, rows] if rows is not None else h)
            roles.act.append(SwitchActivation(shape.family))
            h = roles.act[-1](h)
            roles.dropout.append(TemplateDropout(0.5) if shape.dropout[i] else None)
            h = roles.dropout[-1](h) if roles.dropout[-1] is not None else h
            roles.gate.append(DepthGate() if i else None)
            x = roles.gate[-1]([x, h]) if i else h
        head = stack.head
        roles.head = TemplateDense(int(head.units), activation=_activation(head), use_bias=bool(head.use_bias),
                                   masked_input=True, value_l2=(True, bool(head.use_bias)), name=head.name)
        net = keras.Model(inp, roles.head(x), name="supernet")
        net.compile_from_config(_compile_config(model, shape))
        net.optimizer.build(net.trainable_variables)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return net, roles
