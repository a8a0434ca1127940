"""An optimizer that is Keras' Adam or Keras' RMSprop by the value of a variable, so that a supernet
(:mod:`hpo.execution.supernet`) or a template (:mod:`hpo.execution.templates`) trains the trials of a search
choosing between the two with one compiled step; and the pairing of a trial's optimizer state with a switch's.

Keras has no such switch; this subclass of Adam adds RMSprop's velocity slots and computes both updates, then
assigns the chosen one's (``where``: the numbers are exactly that optimizer's, up to float summation order).
Only the settings a supernet allows: Adam without AMSGrad, RMSprop without momentum and not centered."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

__all__ = ["AdamOrRMSprop", "KERAS_DEFAULTS", "base_config", "optimizer_pairs", "slot_lists", "switch_for",
           "switch_settings", "switchable"]


# Keras' default Adam and RMSprop settings: what a switch holds for the optimizer a trial does not use
KERAS_DEFAULTS = {"Adam": {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-07}, "RMSprop": {"epsilon": 1e-07, "rho": 0.9}}
_OWN_KEYS = ("name", "beta_1", "beta_2", "epsilon", "amsgrad", "rho", "momentum", "centered")


def switchable(opt: Any) -> bool:
    """True for an Adam or RMSprop this optimizer can stand in for."""
    name = type(opt).__name__
    return (name == "Adam" and not opt.amsgrad) or (name == "RMSprop" and not opt.momentum and not opt.centered)


def base_config(opt: Any) -> dict[str, Any]:
    """An Adam's or RMSprop's config without the settings of its own kind (learning rate, clipping, weight
    decay...: what a switch standing in for it takes as they are)."""
    return {k: v for k, v in opt.get_config().items() if k not in _OWN_KEYS}


def switch_settings(opt: Any) -> dict[str, Any] | None:
    """What a switch standing in for ``opt`` compiles in: its base config but a float learning rate (a
    variable), its own kind's settings and Keras' defaults for the other kind; None when ``opt`` is not
    :func:`switchable`."""
    if not switchable(opt):
        return None
    kind = type(opt).__name__
    base = {k: v for k, v in base_config(opt).items() if not (k == "learning_rate" and isinstance(v, float))}
    own = {k: float(getattr(opt, k)) for k in KERAS_DEFAULTS[kind]}
    return {"base": base, **KERAS_DEFAULTS, kind: own}


def switch_for(opt: Any) -> "AdamOrRMSprop":
    """A switch standing in for ``opt`` (an Adam or RMSprop :func:`switchable`), at its learning rate."""
    settings = switch_settings(opt)
    if settings is None:
        raise ValueError(f"{type(opt).__name__} has no switch")
    adam, rms = settings["Adam"], settings["RMSprop"]
    return AdamOrRMSprop(**base_config(opt), **adam, rho=rms["rho"], rms_epsilon=rms["epsilon"])


@keras.saving.register_keras_serializable(package="hpo")
class AdamOrRMSprop(keras.optimizers.Adam):
    """Adam (``use_rms`` 0) or RMSprop (``use_rms`` 1, with ``rho`` and ``rms_epsilon``)."""

    def __init__(self, learning_rate: Any = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, rho: float = 0.9, rms_epsilon: float = 1e-7,
                 name: str = "adam_or_rmsprop", **kwargs: Any) -> None:
        kwargs.pop("amsgrad", None)
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                         amsgrad=False, name=name, **kwargs)
        self.rho, self.rms_epsilon = rho, rms_epsilon

    def build(self, var_list: list[Any]) -> None:
        if self.built:
            return
        super().build(var_list)
        self._rms_velocities = self.add_optimizer_variables(var_list, "rms_velocity")
        self.use_rms = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="use_rms")

    def slot_names(self, user: Any) -> dict[str, str]:
        """The user's optimizer's slot lists by attribute, to this one's."""
        if type(user).__name__ == "RMSprop":
            return {"_velocities": "_rms_velocities"}
        return {"_momentums": "_momentums", "_velocities": "_velocities"}

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        # Adam's and RMSprop's update_step as Keras writes them, without assigning; then the chosen one assigned
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        index = self._get_variable_index(variable)
        local_step = ops.cast(self.iterations + 1, variable.dtype)
        beta_1_power = ops.power(ops.cast(self.beta_1, variable.dtype), local_step)
        beta_2_power = ops.power(ops.cast(self.beta_2, variable.dtype), local_step)
        m, v, r = self._momentums[index], self._velocities[index], self._rms_velocities[index]
        m_old, v_old, r_old = m.value, v.value, r.value
        alpha = lr * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        m_new = ops.add(m_old, ops.multiply(ops.subtract(gradient, m_old), 1 - self.beta_1))
        v_new = ops.add(v_old, ops.multiply(ops.subtract(ops.square(gradient), v_old), 1 - self.beta_2))
        adam = ops.divide(ops.multiply(m_new, alpha), ops.add(ops.sqrt(v_new), self.epsilon))
        r_new = ops.add(ops.multiply(self.rho, r_old), ops.multiply(1 - self.rho, ops.square(gradient)))
        rms = ops.divide(ops.multiply(lr, gradient), ops.sqrt(ops.add(r_new, self.rms_epsilon)))
        on = ops.greater(self.use_rms.value, 0.5)
        self.assign(m, ops.where(on, m_old, m_new))
        self.assign(v, ops.where(on, v_old, v_new))
        self.assign(r, ops.where(on, r_new, r_old))
        self.assign_sub(variable, ops.where(on, rms, adam))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rho": self.rho, "rms_epsilon": self.rms_epsilon}


def slot_lists(opt: Any) -> dict[str, list[Any]]:
    """An optimizer's per-variable slot lists by attribute (Adam's ``_momentums``, ``_velocities``...)."""
    n, own = len(opt._trainable_variables), {id(v) for v in opt.variables}
    return {name: value for name, value in vars(opt).items()
            if isinstance(value, list) and len(value) == n and value
            and all(v is not None and id(v) in own for v in value)}


def optimizer_pairs(net: Any, fresh: Any, trained: dict[int, Any]) -> list[tuple[Any, Any]]:
    """(variable of ``net``'s optimizer, its counterpart in ``fresh``'s or None: a slot ``fresh``'s optimizer
    lacks, set to zero): slots by the variable they belong to (``trained``: id of a ``net`` variable -> ``fresh``'s),
    then the optimizers' own variables (iterations, learning rate) in order; raises when they do not line up."""
    topt, fopt = net.optimizer, fresh.optimizer
    if not fopt.built:
        fopt.build(fresh.trainable_variables)  # a fresh optimizer's slots (zeros, iterations 0, its rate)
    tlists, flists = slot_lists(topt), slot_lists(fopt)
    names = topt.slot_names(fopt) if hasattr(topt, "slot_names") else {n: n for n in flists}
    if set(names) != set(flists) or not set(names.values()) <= set(tlists):
        raise ValueError("the optimizers' slots differ")
    theirs = {ours: flists[user] for user, ours in names.items()}
    f_index = {id(v): i for i, v in enumerate(fopt._trainable_variables)}
    pairs, slots = [], set()
    for name, tslots in tlists.items():
        for tv, slot in zip(topt._trainable_variables, tslots):
            f_var = trained.get(id(tv))
            user = theirs[name][f_index[id(f_var)]] if f_var is not None and name in theirs else None
            pairs.append((slot, user))
            slots.add(id(slot))
    switch = getattr(topt, "use_rms", None)  # set from the trial's optimizer class, not loaded
    t_base = [v for v in topt.variables if id(v) not in slots and v is not switch]
    f_slots = {id(v) for lst in flists.values() for v in lst}
    f_base = [v for v in fopt.variables if id(v) not in f_slots]
    if len(t_base) != len(f_base):
        raise ValueError("the optimizers' own variables differ")
    return pairs + list(zip(t_base, f_base))
