"""Which layers of a model change in its compiled template (:mod:`hpo.execution.templates`), and whether a
model has one: the widened Dense and Conv2D layers and the layers that read them, the L2 factors and dropout
rates held as variables, the batch normalisations that leave a padded batch's padding rows out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["CHANNEL_POOLING", "ELEMENTWISE", "EXACT_OPTIMIZERS", "Plan", "activation_name", "bucket", "is_layer",
           "per_feature", "plain_conv", "plain_dense", "plan_of", "readers_of", "row_masked_norms", "single_use",
           "value_l2", "width_of"]

ELEMENTWISE = frozenset({"relu", "gelu", "tanh", "sigmoid", "elu", "selu", "swish", "silu", "softplus", "softsign",
                         "linear", "leaky_relu", "relu6", "hard_sigmoid", "hard_silu", "hard_swish", "mish", "celu",
                         "exponential"})
# Pooling layers that pool each channel on its own (channels last): padded channels stay apart from real ones
CHANNEL_POOLING = ("MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D")
# Optimizers whose update of each variable is a function of that variable, its gradient and its own slots, so
# zero weights with zero gradients stay zero (Adafactor, for one, averages second moments over a whole kernel).
EXACT_OPTIMIZERS = frozenset({"Adam", "AdamW", "RMSprop", "SGD", "Adamax", "Nadam", "Adagrad", "Lion"})


def bucket(units: int) -> int:
    """The width a Dense of ``units`` units (or a Conv2D of that many filters) is held at in a template: the next power of two (16 -> 16,
    17 -> 32), so widths on a log scale fall into a handful of templates at most twice their size."""
    return 1 << max(0, int(units) - 1).bit_length()


@dataclass
class Plan:
    """Which layers of a model change in its template (by layer name)."""

    widened: dict[str, int] = field(default_factory=dict)  # Dense or Conv2D -> bucket width
    masked: set[str] = field(default_factory=set)  # Dense or Conv2D reading a widened one through per-feature layers
    dense_l2: dict[str, tuple[bool, bool]] = field(default_factory=dict)  # Dense, Conv2D -> (kernel, bias) L2 variable
    dropout: set[str] = field(default_factory=set)  # Dropout whose rate is a variable
    masked_bn: set[str] = field(default_factory=set)  # BatchNormalization that leaves padding rows out


def activation_name(fn: Any) -> str | None:
    import keras

    try:
        name = keras.activations.serialize(fn)
    except Exception:
        return None
    return name if isinstance(name, str) else None


def is_layer(layer: Any, name: str) -> bool:
    import keras

    return type(layer) is getattr(keras.layers, name)


def per_feature(layer: Any) -> bool:
    """A layer that maps each feature on its own (padded features cannot reach real ones through it)."""
    if is_layer(layer, "Activation"):
        return activation_name(layer.activation) in ELEMENTWISE
    if is_layer(layer, "Dropout"):
        return layer.noise_shape is None
    if is_layer(layer, "BatchNormalization"):
        rank = len(layer.input.shape)
        return layer.axis in (-1, rank - 1) and not layer.beta_constraint and not layer.gamma_constraint
    if any(is_layer(layer, name) for name in CHANNEL_POOLING):  # each channel pooled on its own
        return getattr(layer, "data_format", "channels_last") == "channels_last"
    return is_layer(layer, "ReLU") or is_layer(layer, "LeakyReLU")


def plain_dense(layer: Any) -> bool:
    return (is_layer(layer, "Dense") and layer.kernel_constraint is None and layer.bias_constraint is None
            and layer.activity_regularizer is None and not getattr(layer, "lora_rank", None)
            and not getattr(layer, "quantization_mode", None))


def plain_conv(layer: Any) -> bool:
    """A Conv2D a template holds as :class:`~hpo.execution.template_layers.TemplateConv2D`: channels last, one
    group, no constraint, activity regularizer, LoRA or quantisation."""
    return (is_layer(layer, "Conv2D") and layer.data_format == "channels_last" and layer.groups == 1
            and layer.kernel_constraint is None and layer.bias_constraint is None
            and layer.activity_regularizer is None and not getattr(layer, "lora_rank", None)
            and not getattr(layer, "quantization_mode", None))


def width_of(layer: Any) -> int:
    """The output features of a Dense (units) or Conv2D (filters)."""
    return int(layer.units if is_layer(layer, "Dense") else layer.filters)


def single_use(layer: Any) -> bool:
    return len(layer._inbound_nodes) == 1 and len(layer._outbound_nodes) <= 1


def readers_of(layer: Any, outputs: set[int], groups: list[list[Any]]) -> list[Any] | None:
    """Every Dense or Conv2D that reads ``layer``'s output through per-feature layers and sums (``Add``) of
    outputs widened alike, or None where a path reaches anything else or a model output. Each sum passed
    through appends its summed Dense or Conv2D layers to ``groups``: they are widened together or not at all."""
    out = layer._inbound_nodes[0].output_tensors
    if len(out) != 1 or id(out[0]) in outputs or not layer._outbound_nodes:
        return None
    found: list[Any] = []
    for node in layer._outbound_nodes:
        nxt = node.operation
        if len(nxt._inbound_nodes) != 1:
            return None
        if plain_dense(nxt) or plain_conv(nxt):
            found.append(nxt)
            continue
        if is_layer(nxt, "Add"):
            summed = _summed(nxt)
            if summed is None:
                return None
            groups.append(summed)
        elif not per_feature(nxt):
            return None
        more = readers_of(nxt, outputs, groups)
        if more is None:
            return None
        found += more
    return found


def _summed(add: Any) -> list[Any] | None:
    """The Dense or Conv2D layers (elementwise activations) whose outputs ``add`` sums, each through
    per-feature layers of one consumer; None when an input comes from anything else (an identity shortcut)."""
    found = []
    for tensor in add._inbound_nodes[0].input_tensors:
        layer = tensor._keras_history.operation
        while not (plain_dense(layer) or plain_conv(layer)):
            if not per_feature(layer) or len(layer._inbound_nodes) != 1 or len(layer._outbound_nodes) != 1:
                return None
            layer = layer._inbound_nodes[0].input_tensors[0]._keras_history.operation
        if activation_name(layer.activation) not in ELEMENTWISE:
            return None
        found.append(layer)
    return found


def value_l2(reg: Any) -> bool:
    import keras

    return reg is None or type(reg) is keras.regularizers.L2


def plan_of(model: Any) -> Plan | None:
    """The template plan of ``model``; None when it has no template (see the module's conditions)."""
    opt = getattr(model, "optimizer", None)
    if opt is None or type(opt).__name__ not in EXACT_OPTIMIZERS or getattr(opt, "use_ema", False):
        return None
    layers = model._flatten_layers(include_self=False)
    if any(getattr(layer.dtype_policy, "name", "float32") != "float32" for layer in layers):
        return None
    outputs = {id(t) for t in model.outputs}
    plan, readers, groups = Plan(), {}, []
    for layer in layers:
        if len(layer._inbound_nodes) != 1:  # a layer called more than once keeps its own class
            continue
        if plain_dense(layer) or plain_conv(layer):
            plan.dense_l2[layer.name] = (value_l2(layer.kernel_regularizer), value_l2(layer.bias_regularizer))
            found = readers_of(layer, outputs, groups) if activation_name(layer.activation) in ELEMENTWISE else None
            if found is not None:
                readers[layer.name] = (layer, found)
        elif is_layer(layer, "Dropout") and layer.rate > 0 and layer.noise_shape is None:
            plan.dropout.add(layer.name)
    _drop_partial_sums(readers, groups)
    for name, (layer, found) in readers.items():
        plan.widened[name] = bucket(width_of(layer))
        plan.masked.update(r.name for r in found)
    plan.masked_bn = row_masked_norms(model)
    return plan


def _drop_partial_sums(readers: dict[str, Any], groups: list[list[Any]]) -> None:
    """Leave out of ``readers`` (the layers to widen) every layer summed with one that cannot be widened: the
    inputs of a sum keep one width."""
    changed = True
    while changed:
        changed = False
        for group in groups:
            if any(g.name not in readers for g in group) and any(g.name in readers for g in group):
                for g in group:
                    changed |= readers.pop(g.name, None) is not None


def row_masked_norms(model: Any) -> set[str]:
    """The batch normalisations (over the last axis, layers of ``model`` itself) whose template reads which
    rows of a training batch are padding, so that the last partial batch trains padded: where ``model`` is
    functional with one floating-point input (padding rows are marked NaN there, see
    :class:`~hpo.execution.template_layers.PaddingRows`)."""
    import keras

    if type(model).__name__ != "Functional" or len(model.inputs) != 1 \
            or not keras.backend.is_float_dtype(model.inputs[0].dtype):
        return set()
    return {layer.name for layer in model.layers if is_layer(layer, "BatchNormalization") and single_use(layer)
            and layer.axis in (-1, len(layer.input.shape) - 1)}
