"""Compiled templates (JAX): one compiled train step for every trial of the same *structure*, whatever its
dropout rates, L2 factors, learning rate and hidden widths.

A trial's model (built by the user's builder, Keras layers only, functional or Sequential) is mapped to a
template: the same graph with

* the hidden Dense layers (and Conv2D layers, channels last, one group) widened to a bucket width, the next
  power of two (:func:`bucket`), and the Dense or Conv2D that reads each of them masking the input features
  beyond the trial's width (a non-trainable 0/1 variable), so a 40-unit and a 64-unit model share the 64-unit
  template, and 12- and 10-filter convolutions the 16-filter one;
* every Dense's and Conv2D's L2 factors (0 without a regularizer) and every Dropout's keep probability held in
  non-trainable variables (:mod:`hpo.execution.template_layers`);
* in a functional model with one floating-point input, a first layer that marks the padding rows of the last
  training batch (NaN inputs) and batch normalisations that leave them out of their statistics, so that batch
  trains padded (one train step shape) and exactly as unpadded.

A trial whose own template was not compiled yet trains in a kept template of the same structure at larger
widths instead, where the extra arithmetic costs less than one more compilation (:func:`_covering`): 8- and
16-filter trials then train in the 32-filter template an earlier trial compiled. Once a structure has been
trained with both Adam and RMSprop, its next template holds the switch between the two
(:class:`~hpo.execution.switch_optimizer.AdamOrRMSprop`) and trains trials of either.

Which layers change, and whether a model has a template, is decided in :mod:`hpo.execution.template_plan`.

The trial's freshly built model is loaded into the template: each variable (weights, optimizer slots, seed
states) in the corner of the template's, zeros elsewhere, so the template starts exactly as the narrower model
(its initial weights drawn as the narrower layer's). Padded units stay exactly zero through training: the
masked rows read nothing, so the padded units get no gradient, and zero gradients leave zero weights at zero
under the allowed optimizers (L2, Adam's and RMSprop's moments included). Widening applies only where
that is exact: between the widened layer and its readers only per-feature layers (elementwise activations,
Dropout, BatchNormalization over the last axis, pooling each channel on its own) and sums (``Add``) whose every
input is a layer widened alike (a residual block's convolution and its 1x1 projection; never an identity
shortcut), never a model output (nor a Flatten, which interleaves padded channels with real ones); the widened
layer's own activation elementwise; no constraints, activity regularizer, LoRA, quantisation or mixed precision; an
optimizer whose update of a variable depends on that variable's gradient alone (not Adafactor). The
template then trains to the narrower model's weights up to float summation order (tested within 1e-5), with
one exception: a Dropout behind a widened layer draws its noise for the padded width, so that trial equals
the narrower model in distribution, not draw for draw. At the trial's own widths (powers of two) it is the
same computation as the user's model.

After training, :func:`user_model` copies the trained weights and optimizer state back out of the corners
into the user's model, which is what the trial saves (``model.keras``, checkpoints, measures); its
predictions come from the template (the same numbers up to summation order).
"""

from __future__ import annotations

import logging
import random
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from hpo.execution.compile_cost import macs_per_row, platform, worth_extra
from hpo.execution.reuse import signature
from hpo.execution.template_plan import Plan, bucket, is_layer, plan_of, width_of
from hpo.execution.reuse_policy import reuse_enabled
from hpo.execution.xla import compiles_per_shape, dropout_draws_anywhere

log = logging.getLogger(__name__)

__all__ = ["MAX_TEMPLATES", "MAX_TEMPLATE_BYTES", "bucket", "chooses_adam_or_rmsprop", "clear_templates",
           "template_twin", "user_model"]

# Templates kept per process, least recently used dropped first: a search revisits its structures (a TPE
# search over depth and widths has a dozen or two), and each one dropped costs its compilation again
MAX_TEMPLATES = 16
MAX_TEMPLATE_BYTES = 1 << 30  # and no more than this in their variables (weights and optimizer slots) together

@dataclass
class _Entry:
    template: Any
    fresh: Any = None  # the user's model whose trial the template trains now
    unload: Any = None  # (template, fresh) -> None: copies the trained state out; None: :func:`_extract`
    shape: Any = None  # a supernet's shape (:mod:`hpo.execution.supernet_state`), with its layers by role
    roles: Any = None
    family: str | None = None  # a template's structure with its widths left out (:func:`_family`)
    widths: tuple[int, ...] = ()  # its widened layers' widths, in the order of the model's layers
    macs: int | None = None  # its multiply-adds per row (:func:`hpo.execution.compile_cost.macs_per_row`)
    optimizers: frozenset[str] = frozenset()  # the optimizer classes it trains (Adam and RMSprop: a switch)
    ready: Any = None  # a Future: its train step being compiled (hpo.execution.ahead)

    @property
    def nbytes(self) -> int:
        variables = list(self.template.variables) + list(self.template.optimizer.variables)
        return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)


_TEMPLATES: "OrderedDict[str, _Entry]" = OrderedDict()


def clear_templates() -> None:
    """Forget the compiled templates this process keeps."""
    _TEMPLATES.clear()


def _template_layer(layer: Any, plan: Plan) -> tuple[type, dict[str, Any]] | None:
    """The class and config of ``layer``'s counterpart in the template; None where it is cloned as it is."""
    from hpo.execution.template_layers import (MaskedBatchNormalization, TemplateConv2D, TemplateDense,
                                               TemplateDropout)

    cfg = layer.get_config()
    if layer.name in plan.dense_l2:
        kernel_l2, bias_l2 = plan.dense_l2[layer.name]
        dense = is_layer(layer, "Dense")
        cfg.update({"units" if dense else "filters": plan.widened.get(layer.name, width_of(layer)),
                    "masked_input": layer.name in plan.masked, "value_l2": [kernel_l2, bias_l2]})
        if kernel_l2:
            cfg["kernel_regularizer"] = None
        if bias_l2:
            cfg["bias_regularizer"] = None
        return (TemplateDense if dense else TemplateConv2D), cfg
    if layer.name in plan.dropout:
        return TemplateDropout, {**cfg, "rate": 0.5}  # a placeholder: the rate is the variable ``keep``
    if layer.name in plan.masked_bn:
        return MaskedBatchNormalization, {**cfg, "row_mask": True}
    return None


def _structure(model: Any, plan: Plan, batch_size: int, switch: bool = False) -> str | None:
    """The key of the template: the model's config with each changed layer's template config, its compile
    config without the learning rate (``switch``: its Adam or RMSprop as the switch standing in for it,
    :func:`hpo.execution.switch_optimizer.switch_settings`), the batch size
    (:func:`hpo.execution.reuse.signature`)."""
    swapped = {}
    for layer in model._flatten_layers(include_self=False):
        t = _template_layer(layer, plan)
        if t is not None:
            swapped[layer.name] = {"class_name": t[0].__name__, "config": t[1]}
    cfg = model.get_config()

    def swap(obj: Any) -> Any:
        # Shapes recorded inside the config (a layer's build input shape, each symbolic tensor's shape) follow
        # from the inputs' shapes and the layers' configs: dropped, they would carry the user's widths.
        if isinstance(obj, dict):
            inner = obj.get("config")
            if "class_name" in obj and isinstance(inner, dict) and inner.get("name") in swapped:
                obj = {**obj, **swapped[inner["name"]]}
            if obj.get("class_name") == "__keras_tensor__" and isinstance(inner, dict):
                return {**obj, "config": {k: v for k, v in inner.items() if k != "shape"}}
            return {k: swap(v) for k, v in obj.items() if k != "build_config"}
        return [swap(v) for v in obj] if isinstance(obj, (list, tuple)) else obj

    comp = None
    if switch:
        from hpo.execution.switch_optimizer import switch_settings

        comp = {**model.get_compile_config(), "optimizer": {"switch": switch_settings(model.optimizer)}}
    return signature(model, batch_size, config=swap(cfg), compile_config=comp)


def _build(model: Any, plan: Plan, switch: bool = False) -> Any:
    """The template of ``model``: cloned with its template layers, compiled as ``model`` is, optimizer built (its
    variables are loaded per trial, the learning rate among them). The global random states are left as they
    were: building a template must not change what the trial draws next. ``switch``: compiled with the
    switch between Adam and RMSprop standing in for ``model``'s optimizer."""
    import keras

    from hpo.execution.switch_optimizer import switch_for

    def clone(layer: Any) -> Any:
        t = _template_layer(layer, plan)
        return t[0].from_config(t[1]) if t is not None else layer.__class__.from_config(layer.get_config())

    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        template = (_clone_row_masked(model, plan, clone) if plan.masked_bn
                    else keras.models.clone_model(model, clone_function=clone))
        comp = model.get_compile_config()
        if switch:
            comp = {**comp, "optimizer": keras.saving.serialize_keras_object(switch_for(model.optimizer))}
        template.compile_from_config(comp)
        template.optimizer.build(template.trainable_variables)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return template


def _clone_row_masked(model: Any, plan: Plan, clone: Any) -> Any:
    """``model`` cloned (each layer by ``clone``) behind a :class:`~hpo.execution.template_layers.PaddingRows`
    layer: its layers read the input with padding rows zeroed, and the batch normalisations of
    ``plan.masked_bn`` read the row mask too."""
    import keras

    from hpo.execution.template_layers import PaddingRows

    src = model.inputs[0]
    inp = keras.Input(shape=tuple(src.shape[1:]), dtype=src.dtype, name=src.name)
    clean, rows = PaddingRows(name="padding_rows")(inp)

    def call(layer: Any, *args: Any, **kwargs: Any) -> Any:
        args = keras.tree.map_structure(lambda t: clean if t is inp else t, args)
        if getattr(layer, "row_mask", False):
            return layer([args[0], rows], *args[1:], **kwargs)
        return layer(*args, **kwargs)

    given = keras.tree.map_structure(lambda t: inp, model.input)  # the structure the model was built with
    return keras.models.clone_model(model, input_tensors=given, clone_function=clone, call_function=call)


def _weighted_layers(model: Any) -> list[Any]:
    """The layers of ``model`` but its inputs (a clone names its inputs anew) and a template's
    :class:`~hpo.execution.template_layers.PaddingRows` (no variables; the user's model has none)."""
    import keras

    from hpo.execution.template_layers import PaddingRows

    return [layer for layer in model._flatten_layers(include_self=False)
            if not isinstance(layer, (keras.layers.InputLayer, PaddingRows))]


def _own_variables(layer: Any) -> list[Any]:
    from hpo.execution.template_layers import VALUE_VARIABLES, TemplateConv2D, TemplateDense, TemplateDropout

    if isinstance(layer, (TemplateDense, TemplateConv2D, TemplateDropout)):
        return [v for v in layer.variables if v.name not in VALUE_VARIABLES]
    return list(layer.variables)


def _fits(small: Any, big: Any) -> bool:
    a, b = tuple(small.shape), tuple(big.shape)
    return len(a) == len(b) and all(x <= y for x, y in zip(a, b)) and small.dtype == big.dtype


def _pairs(template: Any, fresh: Any) -> list[tuple[Any, Any]] | None:
    """(template variable, user variable) of the same weight, seed state and optimizer slot, the user's fitting
    in the template's corner; None when the two do not line up."""
    t_layers, f_layers = _weighted_layers(template), _weighted_layers(fresh)
    if len(t_layers) != len(f_layers) or any(not isinstance(a, type(b)) for a, b in zip(t_layers, f_layers)):
        return None  # the same layers in the same order (their generated names differ from model to model)
    pairs = [p for a, b in zip(t_layers, f_layers) for p in _zip(_own_variables(a), list(b.variables))]
    if len(pairs) != sum(len(b.variables) for b in f_layers):
        return None
    topt, fopt = template.optimizer, fresh.optimizer
    if not fopt.built:
        fopt.build(fresh.trainable_variables)  # a fresh optimizer's slots (zeros, iterations 0, its rate)
    if hasattr(topt, "use_rms"):  # the switch: the trial's slots by the variable they belong to, the others zero
        from hpo.execution.switch_optimizer import optimizer_pairs

        trainable = {id(v) for v in template.trainable_variables}
        try:
            pairs += optimizer_pairs(template, fresh, {id(t): f for t, f in pairs if id(t) in trainable})
        except ValueError:
            return None
    else:
        opt_pairs = _zip(list(topt.variables), list(fopt.variables))
        if len(opt_pairs) != len(fopt.variables):
            return None
        pairs += opt_pairs
    return pairs if all(f is None or _fits(f, t) for t, f in pairs) else None


def _zip(a: list[Any], b: list[Any]) -> list[tuple[Any, Any]]:
    return list(zip(a, b)) if len(a) == len(b) else []


def _corner(shape: tuple[int, ...], value: np.ndarray) -> np.ndarray:
    if tuple(value.shape) == tuple(shape):
        return value
    out = np.zeros(shape, value.dtype)
    out[tuple(slice(0, n) for n in value.shape)] = value
    return out


def _load(template: Any, fresh: Any) -> bool:
    """``fresh``'s state in the template's corners and its values in the template's value variables; False,
    changing nothing, when they do not line up."""
    from hpo.execution.template_layers import TemplateConv2D, TemplateDense, TemplateDropout
    from hpo.execution.xla import to_device

    pairs = _pairs(template, fresh)
    if pairs is None:
        return False
    for t, f in pairs:
        value = np.zeros(tuple(t.shape), t.dtype) if f is None else _corner(tuple(t.shape), np.asarray(f.value))
        t.assign(to_device(value))
    if hasattr(template.optimizer, "use_rms"):
        template.optimizer.use_rms.assign(to_device(np.float32(type(fresh.optimizer).__name__ == "RMSprop")))
    for layer, mine in zip(_weighted_layers(template), _weighted_layers(fresh)):
        if isinstance(layer, (TemplateDense, TemplateConv2D)):
            for kind in ("kernel", "bias"):
                var, reg = getattr(layer, f"{kind}_l2", None), getattr(mine, f"{kind}_regularizer")
                if var is not None:
                    var.assign(to_device(np.float32(reg.l2 if reg is not None else 0.0)))
            if layer.masked_input:
                width = int(mine.kernel.shape[-2])  # the input features (Dense rows, Conv2D input channels)
                layer.in_mask.assign(to_device((np.arange(layer.in_mask.shape[0]) < width).astype("float32")))
        elif isinstance(layer, TemplateDropout):
            layer.keep.assign(to_device(np.float32(1.0 - mine.rate)))  # as Keras computes it: in Python, then f32
            layer.width.assign(to_device(np.float32(mine.input.shape[-1])))
    return True


def _extract(template: Any, fresh: Any) -> None:
    """The template's trained state (weights, seed states, optimizer) back into ``fresh``, cut from the
    corners."""
    pairs = _pairs(template, fresh)
    if pairs is None:  # cannot happen for a template this module loaded from ``fresh``
        raise RuntimeError("the compiled template no longer lines up with the trial's model")
    for t, f in pairs:
        if f is not None:
            cut_corner(t, f)


def cut_corner(big: Any, small: Any) -> None:
    """``small`` assigned the corner of ``big`` its shape covers (a trained template's or supernet's variable
    back into the user's model)."""
    from hpo.execution.xla import to_device

    small.assign(to_device(np.array(np.asarray(big.value)[tuple(slice(0, n) for n in small.shape)])))


def keep(key: str) -> None:
    """Mark ``key``'s template as the most recently used and drop the least recently used ones beyond
    :data:`MAX_TEMPLATES` and :data:`MAX_TEMPLATE_BYTES`."""
    _TEMPLATES.move_to_end(key)
    while len(_TEMPLATES) > 1 and (len(_TEMPLATES) > MAX_TEMPLATES
                                   or sum(e.nbytes for e in _TEMPLATES.values()) > MAX_TEMPLATE_BYTES):
        _TEMPLATES.popitem(last=False)


def _family(model: Any, plan: Plan, batch_size: int) -> str | None:
    """The key of ``model``'s template with every widened layer's width left out and an Adam or RMSprop as the
    switch standing in for it: templates of one family differ only in widths and in which of the two they train."""
    return _structure(model, replace(plan, widened=dict.fromkeys(plan.widened, 0)), batch_size,
                      switch=_switchable(model))


def _own_widths(model: Any, plan: Plan) -> tuple[int, ...]:
    layers = {layer.name: layer for layer in model._flatten_layers(include_self=False)}
    return tuple(width_of(layers[name]) for name in plan.widened)


def _covering(model: Any, plan: Plan, family: str | None, batch_size: int, steps: int | None) -> str | None:
    """The key of the kept template of ``model``'s family (:func:`_family`) at widths at least ``model``'s own
    that costs it the least extra arithmetic, where that costs less than one more compilation
    (:func:`hpo.execution.compile_cost.worth_extra`); None where none does. A trial of 8 filters then trains in
    the 32-filter template compiled for an earlier trial instead of compiling an 8-filter one."""
    own = macs_per_row(model) if family is not None else None
    if own is None:
        return None
    widths, kind = _own_widths(model, plan), type(model.optimizer).__name__
    found = [(entry.macs, key) for key, entry in _TEMPLATES.items()
             if entry.family == family and kind in entry.optimizers and entry.macs is not None
             and len(entry.widths) == len(widths) and all(t >= w for t, w in zip(entry.widths, widths))
             and worth_extra(entry.macs - own, own, batch_size, steps, platform())]
    return min(found)[1] if found else None


def _switchable(model: Any) -> bool:
    from hpo.execution.switch_optimizer import switchable

    return switchable(model.optimizer)


def _other_optimizer_seen(model: Any, family: str | None) -> bool:
    """True when a kept template of ``model``'s family trains the other of Adam and RMSprop: the search chooses
    between them, so its next template is the switch (its compilation costs ~0.3 s more; a search of one
    optimizer never pays it)."""
    kind = type(model.optimizer).__name__
    return family is not None and any(entry.family == family and kind not in entry.optimizers
                                      for entry in _TEMPLATES.values())


def chooses_adam_or_rmsprop(space: Any) -> bool:
    """True when a search space chooses its optimizer between Adam and RMSprop (a choice named ``optimizer``
    holding both, as the built-in spaces' :func:`hpo.space.compile.compile_for`): its templates then hold the
    switch between the two from the start."""
    for p in getattr(space, "params", ()):
        values = {str(v).lower() for v in getattr(p, "values", None) or ()}
        if p.name == "optimizer" and p.kind == "choice" and {"adam", "rmsprop"} <= values:
            return True
    return False


def template_twin(model: Any, batch_size: int, steps: int | None = None, switch: bool = False) -> Any:
    """The compiled template ``model``'s trial trains, loaded with ``model``'s initial state and values: a kept
    one of its structure, else a kept one of the same structure at larger widths where its extra arithmetic
    over ``steps`` train steps costs less than a compilation (:func:`_covering`), else one built and kept for
    later trials: the switch between Adam and RMSprop where ``model`` has one of the two and ``switch`` (the
    search chooses between them) or a kept template of its structure trains the other; None when ``model`` has
    no template or the backend is not JAX or ``$HPO_REUSE_COMPILED`` is off (the caller then trains ``model``
    or :func:`hpo.execution.reuse.compiled_twin`)."""
    if not compiles_per_shape() or not reuse_enabled() or not dropout_draws_anywhere(model):
        return None
    try:
        plan = plan_of(model)
        key = _structure(model, plan, batch_size) if plan is not None else None
        family = _family(model, plan, batch_size) if key is not None and key not in _TEMPLATES else None
        if family is not None:
            key = _covering(model, plan, family, batch_size, steps) or key
        switch = family is not None and key not in _TEMPLATES and _switchable(model) and (
            switch or _other_optimizer_seen(model, family))
        if switch:
            key = _structure(model, plan, batch_size, switch=True)
    except Exception:  # a model this module does not understand is trained as it is
        return None
    if key is None:
        return None
    entry = _TEMPLATES.get(key)
    if entry is None:
        try:
            template = _build(model, plan, switch)
            kinds = frozenset({"Adam", "RMSprop"} if switch else {type(model.optimizer).__name__})
            entry = _TEMPLATES[key] = _Entry(template, family=family,
                                             widths=tuple(plan.widened.values()), macs=macs_per_row(template),
                                             optimizers=kinds)
        except Exception as exc:  # e.g. a compile config Keras cannot rebuild (a loss given as a plain function)
            log.debug("no compiled template for this model (%s: %s)", type(exc).__name__, exc)
            return None
    keep(key)
    try:
        loaded = _load(entry.template, model)
    except Exception as exc:  # the next trial loads every variable again
        log.debug("the compiled template could not take this model's state (%s: %s)", type(exc).__name__, exc)
        loaded = False
    if not loaded:
        return None
    entry.fresh = model
    return entry.template


def user_model(model: Any) -> Any:
    """The model a trial saves: for a template, the user's model of the trial it trains, holding the
    template's trained state now (see the module's docstring); any other model as it is."""
    for entry in _TEMPLATES.values():
        if entry.template is model and entry.fresh is not None:
            (entry.unload or _extract)(model, entry.fresh)
            return entry.fresh
    return model
