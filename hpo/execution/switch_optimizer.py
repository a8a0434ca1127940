"""An optimizer that is Keras' Adam or Keras' RMSprop by the value of a variable, so that a supernet
(:mod:`hpo.execution.supernet`) trains the trials of a search choosing between the two with one compiled step.

Keras has no such switch; this subclass of Adam adds RMSprop's velocity slots and computes both updates, then
assigns the chosen one's (``where``: the numbers are exactly that optimizer's, up to float summation order).
Only the settings a supernet allows: Adam without AMSGrad, RMSprop without momentum and not centered."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

__all__ = ["AdamOrRMSprop", "switchable"]


def switchable(opt: Any) -> bool:
    """True for an Adam or RMSprop this optimizer can stand in for."""
    name = type(opt).__name__
    return (name == "Adam" and not opt.amsgrad) or (name == "RMSprop" and not opt.momentum and not opt.centered)


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
