"""A trial's state in a supernet (:mod:`hpo.execution.supernet`): the user's freshly built dense stack loaded into
the supernet that covers it (weights, seed states and optimizer slots in the corners of the supernet's, zeros
elsewhere; the switches set to the trial's depth, widths, activations, batch normalisation, dropout and L2), and
the trained state copied back out into the user's model, which is what the trial saves."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np

from hpo.execution.ahead import compile_train_step, wait
from hpo.execution.ahead import enabled as ahead_enabled
from hpo.execution.compile_cost import platform
from hpo.execution.reuse_policy import reuse_enabled
from hpo.execution.supernet import Roles, Shape, Stack, build_supernet, covering_shape, family_of, stack_of
from hpo.execution.switch_optimizer import optimizer_pairs
from hpo.execution.template_plan import ELEMENTWISE
from hpo.execution.templates import _TEMPLATES, _corner, _Entry, cut_corner, keep
from hpo.execution.xla import compiles_per_shape, dropout_draws_anywhere

log = logging.getLogger(__name__)

__all__ = ["compile_ahead", "largest_point", "space_hint", "supernet_twin"]

_PREFIX = "supernet:"


def _own(layer: Any) -> list[Any]:
    from hpo.execution.template_layers import VALUE_VARIABLES

    return [v for v in layer.variables if v.name not in VALUE_VARIABLES]


def _layer_pairs(mine: Any, user: Any) -> list[tuple[Any, Any]]:
    """(supernet variable, the user's variable or None: zeros) of one layer; raises when they do not line up."""
    ours = _own(mine)
    if user is None:
        return [(v, None) for v in ours]
    theirs = list(user.variables)
    if len(ours) != len(theirs):
        raise ValueError(f"{mine.name} holds {len(ours)} variables, {user.name} {len(theirs)}")
    return list(zip(ours, theirs))


def _pairs(net: Any, roles: Roles, stack: Stack) -> list[tuple[Any, Any]]:
    """Every supernet variable (weights, seed states, optimizer) with its counterpart in ``stack``'s model, or
    None where the trial's model has none (it is set to zero)."""
    pairs = []
    for i, dense in enumerate(roles.dense):
        block = stack.blocks[i] if i < len(stack.blocks) else None
        pairs += _layer_pairs(dense, block.dense if block else None)
        for mine, user in ((roles.bn[i], block.bn if block else None),
                           (roles.dropout[i], block.dropout if block else None)):
            if mine is not None:
                pairs += _layer_pairs(mine, user)
            elif user is not None:
                raise ValueError(f"block {i} of the supernet has no place for {user.name}")
    pairs += _layer_pairs(roles.head, stack.head)
    trainable = {id(v) for v in net.trainable_variables}
    trained = {id(t): f for t, f in pairs if f is not None and id(t) in trainable}
    pairs += optimizer_pairs(net, stack.model, trained)
    if any(f is not None and any(a < b for a, b in zip(t.shape, f.shape)) for t, f in pairs):
        raise ValueError("a variable of the trial's model is larger than the supernet's")
    return pairs


def _l2(reg: Any) -> float:
    return float(reg.l2) if reg is not None else 0.0


def _set(var: Any, value: Any) -> None:
    from hpo.execution.xla import to_device

    var.assign(to_device(np.asarray(value, dtype="float32").reshape(tuple(var.shape))))


def _switches(net: Any, roles: Roles, shape: Shape, stack: Stack) -> None:
    """The supernet's value variables set to ``stack``'s depth, widths, activations, switches and values."""
    width = [int(d) for d in stack.widths]
    for i, dense in enumerate(roles.dense):
        block = stack.blocks[i] if i < len(stack.blocks) else None
        _set(dense.kernel_l2, _l2(block.dense.kernel_regularizer) if block else 0.0)
        if dense.use_bias:
            _set(dense.bias_l2, _l2(block.dense.bias_regularizer) if block else 0.0)
        if dense.masked_input:
            _set(dense.in_mask, np.arange(shape.width) < (width[i - 1] if block else 0))
        if roles.bn[i] is not None:
            _set(roles.bn[i].on, float(block is not None and block.bn is not None))
        _set(roles.act[i].index, float(shape.family.index(block.activation)) if block else 0.0)
        if roles.dropout[i] is not None:
            # 1 - rate as Keras computes it (in Python, then float32)
            _set(roles.dropout[i].keep, 1.0 - block.dropout.rate if block and block.dropout is not None else 1.0)
            _set(roles.dropout[i].width, width[i] if block else shape.width)  # the block's units
        if roles.gate[i] is not None:
            _set(roles.gate[i].on, float(block is not None))
    if stack.optimizer is not None:
        _set(net.optimizer.use_rms, float(stack.optimizer[0] == "RMSprop"))
    head = roles.head
    _set(head.kernel_l2, _l2(stack.head.kernel_regularizer))
    if head.use_bias:
        _set(head.bias_l2, _l2(stack.head.bias_regularizer))
    _set(head.in_mask, np.arange(shape.width) < width[-1])


def _load(net: Any, roles: Roles, shape: Shape, stack: Stack) -> None:
    from hpo.execution.xla import to_device

    for t, f in _pairs(net, roles, stack):
        value = _corner(tuple(t.shape), np.asarray(f.value)) if f is not None else np.zeros(t.shape, t.dtype)
        t.assign(to_device(value))
    _switches(net, roles, shape, stack)


def _unloader(roles: Roles, batch_size: int) -> Any:
    def unload(net: Any, fresh: Any) -> None:
        stack = stack_of(fresh, batch_size)
        if stack is None:  # cannot happen for a model this module loaded
            raise RuntimeError("the trial's model is no longer a dense stack")
        for t, f in _pairs(net, roles, stack):
            if f is not None:
                cut_corner(t, f)
    return unload


_HINT: list[Any] = [None, None, None]  # the builder and space of the last hint, and its shape


def largest_point(space: Any) -> dict[str, Any]:
    """The values of ``space`` that build its largest model as far as a dense stack goes: numbers at their
    upper bounds (a numeric choice at its largest), booleans on (batch normalisation, L2), other choices at
    their defaults (an activation, an optimizer: a supernet switches between those)."""
    out: dict[str, Any] = {}
    for p in space.params:
        if not p.is_active(out):
            continue
        if p.kind in ("int", "float"):
            out[p.name] = p.snap(p.high)
        elif p.kind == "boolean":
            out[p.name] = True
        elif p.kind == "choice" and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p.values):
            out[p.name] = max(p.values)
        else:
            out[p.name] = p.default
    return out


def space_hint(build: Any, space: Any, make: Any) -> tuple[Shape | None, bool]:
    """The supernet shape of ``space``'s largest dense stack (``make(values)`` builds it), computed once per
    builder and space (None when that model is not a dense stack or cannot be built), and whether this call
    built it."""
    if _HINT[0] is build and _HINT[1] is space:
        return _HINT[2], False
    shape = None
    try:
        stack = stack_of(make(largest_point(space)), 1)
        shape = _hint_of(stack, space) if stack is not None else None
    except Exception as exc:  # only a hint: the trials run without it
        log.debug("no supernet hint from the largest point of the space (%s: %s)", type(exc).__name__, exc)
    _HINT[:] = [build, space, shape]
    return shape, True


def _hint_of(stack: Stack, space: Any) -> Shape:
    """The shape of the space's largest stack, its family grown to every activation the search may choose."""
    choices = [v for p in space.params if p.kind == "choice"
               and all(isinstance(c, str) and c in ELEMENTWISE for c in p.values) for v in p.values]
    shape = Shape.of(stack)
    return replace(shape, family=family_of(shape.family + tuple(choices)))


def compile_ahead(build: Any, space: Any, make: Any, x: Any, y: Any, batch_size: int) -> bool:
    """Build the supernet of ``space``'s largest dense stack (``make(values)`` builds a model), keep it for the
    trials and start compiling its train step on ``x``, ``y`` in the background
    (:func:`hpo.execution.ahead.compile_train_step`); the first trial that trains in it waits for that. False
    (nothing built, nothing started) where :func:`supernet_twin` would not train that model in a supernet, or
    this process keeps that supernet already."""
    if not compiles_per_shape() or not reuse_enabled() or not ahead_enabled():
        return False
    model = make(largest_point(space))
    stack = stack_of(model, batch_size) if dropout_draws_anywhere(model) else None
    if stack is None:
        return False
    shape = _hint_of(stack, space)
    _HINT[:] = [build, space, shape]  # the trials' hint: they build no model for it
    key = f"{_PREFIX}{stack.key}|{shape}"
    if key in _TEMPLATES:
        return False
    net, roles = build_supernet(stack, shape)
    entry = _Entry(net, unload=_unloader(roles, batch_size), shape=shape, roles=roles)
    entry.ready = compile_train_step(net, x, y, batch_size)
    _TEMPLATES[key] = entry
    keep(key)
    return entry.ready is not None


def supernet_twin(model: Any, batch_size: int, steps: int | None = None, hint: Shape | None = None) -> Any:
    """The compiled supernet ``model``'s trial trains, loaded with ``model``'s initial state and switches (built
    and kept for later trials the first time no kept one covers it at an acceptable cost); None when ``model``
    is not a dense stack, the backend is not JAX or ``$HPO_REUSE_COMPILED`` is off. ``steps``: the trial's train
    steps, for the cost of a supernet larger than the trial; ``hint``: the shape of the search's largest model
    (:func:`space_hint`), which a new supernet grows to where that is worth it."""
    if not compiles_per_shape() or not reuse_enabled() or not dropout_draws_anywhere(model):
        return None
    try:
        stack = stack_of(model, batch_size)
    except Exception:  # a model this module does not understand is trained another way
        return None
    if stack is None:
        return None
    prefix = f"{_PREFIX}{stack.key}|"
    kept = {entry.shape: key for key, entry in _TEMPLATES.items() if key.startswith(prefix)}
    shape, compiled = covering_shape(list(kept), stack, steps, platform(), hint)
    key = kept[shape] if compiled else f"{prefix}{shape}"
    if not compiled:
        try:
            net, roles = build_supernet(stack, shape)
        except Exception as exc:  # e.g. a compile config Keras cannot rebuild
            log.debug("no supernet for this model (%s: %s)", type(exc).__name__, exc)
            return None
        _TEMPLATES[key] = _Entry(net, unload=_unloader(roles, batch_size), shape=shape, roles=roles)
    entry = _TEMPLATES[key]
    keep(key)
    wait(entry.ready)  # a train step compiled ahead of the study's first trial (compile_ahead)
    entry.ready = None
    try:
        _load(entry.template, entry.roles, shape, stack)
    except Exception as exc:  # the next trial loads every variable again
        log.debug("the supernet could not take this model's state (%s: %s)", type(exc).__name__, exc)
        return None
    entry.fresh = model
    return entry.template
