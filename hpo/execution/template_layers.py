"""The layers of a compiled template (:mod:`hpo.execution.templates`): a Dense and a Dropout that read what a
search varies from non-trainable variables instead of compiled constants, so one compiled train step serves
every value.

* :class:`TemplateDense`: a Dense whose L2 factors are variables (0 where the user's layer has no
  regularizer: ``0 * sum(w**2)`` adds exactly nothing) and, behind a widened Dense, whose input rows are
  multiplied by a 0/1 mask: rows beyond the narrower model's width read nothing and get a zero gradient.
* :class:`TemplateConv2D`: the same for a Conv2D (its filters widened, its input channels masked).
* :class:`TemplateDropout`: a Dropout whose keep probability is a variable; it draws the same numbers as
  Keras' own Dropout under JAX (``uniform < keep``, then ``x / keep``) at the narrower model's width too, so a
  template trains exactly as the user's model, and a trial's dropout does not depend on which template trained
  it.

Model code, ``keras.ops`` only. These layers live in templates only; a trial saves the user's own model.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

__all__ = ["VALUE_VARIABLES", "DepthGate", "MaskedBatchNormalization", "PaddingRows", "SwitchActivation",
           "SwitchBatchNormalization", "TemplateConv2D", "TemplateDense", "TemplateDropout", "VariableL2"]

# a template layer's variables the user's layer lacks
VALUE_VARIABLES = ("in_mask", "kernel_l2", "bias_l2", "keep", "width", "on", "index")


class VariableL2(keras.regularizers.Regularizer):
    """``factor * sum(x**2)`` as Keras' ``L2``, with ``factor`` a variable (read as the compiled step's
    current value)."""

    def __init__(self, factor: Any) -> None:
        self.factor = factor

    def __call__(self, x: Any) -> Any:
        return ops.cast(self.factor.value, x.dtype) * ops.sum(ops.square(x))

    def get_config(self) -> dict[str, Any]:
        return {}  # never serialised: templates are not saved


class _ValueVariables:
    """What a template's Dense and Conv2D add to Keras' layer: L2 factors as variables (``value_l2``: kernel,
    bias) and, with ``masked_input``, a 0/1 mask on the input features (the kernel's second-to-last axis)."""

    def _add_value_variables(self, input_shape: Any) -> None:
        if self.value_l2[0]:
            self.kernel_l2 = self.add_weight(shape=(), initializer="zeros", trainable=False, name="kernel_l2")
            self._kernel.regularizer = VariableL2(self.kernel_l2)
        if self.value_l2[1] and self.bias is not None:
            self.bias_l2 = self.add_weight(shape=(), initializer="zeros", trainable=False, name="bias_l2")
            self.bias.regularizer = VariableL2(self.bias_l2)
        if self.masked_input:
            self.in_mask = self.add_weight(shape=(int(input_shape[-1]),), initializer="ones", trainable=False,
                                           name="in_mask")

    def _masked_kernel(self) -> Any:
        kernel = self.kernel
        if self.masked_input:
            mask = ops.reshape(ops.cast(self.in_mask, kernel.dtype), (1,) * (len(kernel.shape) - 2) + (-1, 1))
            kernel = ops.multiply(kernel, mask)
        return kernel

    def _value_config(self) -> dict[str, Any]:
        return {"masked_input": self.masked_input, "value_l2": list(self.value_l2)}


class TemplateDense(_ValueVariables, keras.layers.Dense):
    """A Dense with variable L2 factors (``value_l2``: kernel, bias) and, with ``masked_input``, a mask on its
    input rows; otherwise Keras' Dense (same operations in the same order)."""

    def __init__(self, *args: Any, masked_input: bool = False, value_l2: tuple[bool, bool] = (False, False),
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.masked_input = bool(masked_input)
        self.value_l2 = (bool(value_l2[0]), bool(value_l2[1]))

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self._add_value_variables(input_shape)

    def call(self, inputs: Any, training: Any = None) -> Any:
        x = ops.matmul(inputs, self._masked_kernel())
        if self.bias is not None:
            x = ops.add(x, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._value_config()}


class TemplateConv2D(_ValueVariables, keras.layers.Conv2D):
    """A Conv2D (channels last, one group) with variable L2 factors and, with ``masked_input``, a mask on its
    input channels; otherwise Keras' Conv2D (same operations in the same order)."""

    def __init__(self, *args: Any, masked_input: bool = False, value_l2: tuple[bool, bool] = (False, False),
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.masked_input = bool(masked_input)
        self.value_l2 = (bool(value_l2[0]), bool(value_l2[1]))

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self._add_value_variables(input_shape)

    def call(self, inputs: Any) -> Any:
        outputs = self.convolution_op(inputs, self._masked_kernel())
        if self.use_bias:
            outputs = ops.add(outputs, ops.reshape(self.bias, (1,) * (self.rank + 1) + (self.filters,)))
        if self.activation is not None:
            return self.activation(outputs)
        return outputs

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._value_config()}


class TemplateDropout(keras.layers.Dropout):
    """A Dropout (rate above 0, no ``noise_shape``) whose keep probability ``1 - rate`` is the variable ``keep``
    and whose input's real width (its last axis, the one a template widens) is the variable ``width``; the
    ``rate`` it is built with is a placeholder."""

    def build(self, input_shape: Any) -> None:
        self.keep = self.add_weight(shape=(), initializer="ones", trainable=False, name="keep")
        full = float(input_shape[-1])

        def full_width(shape: Any, dtype: Any = None) -> Any:  # made on the host (Constant compiles under JAX)
            from hpo.execution.xla import to_device

            return to_device(np.full(tuple(shape), full, dtype="float32"))

        self.width = self.add_weight(shape=(), initializer=full_width, trainable=False, name="width")

    def call(self, inputs: Any, training: Any = False) -> Any:
        if not training:
            return inputs
        keep = ops.cast(self.keep, inputs.dtype)
        # As Keras' JAX dropout draws it (jax.random.bernoulli: a uniform draw in the keep probability's
        # dtype, below it), from the same seed generator, at the narrower model's shape: JAX's draws (threefry,
        # partitionable, its default) give each element the number of its flat index alone, so the narrower
        # model's draws are the first rows x width numbers of one flat draw, read at index row * width + unit.
        # Drawn at the template's own shape instead, a trial's dropout masks (so its result) depended on the
        # width of the template that trained it, that is on the trials its process had run before.
        shape = tuple(ops.shape(inputs))
        full = int(shape[-1])
        rows = 1
        for n in shape[:-1]:
            rows *= int(n)
        flat = keras.random.uniform((rows * full,), dtype=inputs.dtype, seed=self.seed_generator)
        width = ops.cast(self.width, "int32")
        unit = ops.minimum(ops.arange(full, dtype="int32"), width - 1)  # units beyond the width are masked anyway
        index = ops.reshape(ops.arange(rows, dtype="int32")[:, None] * width + unit[None, :], (-1,))
        draws = ops.reshape(ops.take(flat, index), shape)
        return ops.where(ops.less(draws, keep), ops.divide(inputs, keep), ops.zeros_like(inputs))


class SwitchActivation(keras.layers.Layer):
    """One of ``family``'s elementwise activations, chosen by the variable ``index``: a supernet
    (:mod:`hpo.execution.supernet`) trains every activation of a search in one compiled step. Each activation is
    computed and the chosen one selected (``where``, not a product), so the output and its gradient are exactly
    the chosen activation's: the others receive a zero cotangent and have finite derivatives."""

    def __init__(self, family: tuple[str, ...] | list[str] = ("linear",), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.family = tuple(family)

    def build(self, input_shape: Any) -> None:
        self.index = self.add_weight(shape=(), initializer="zeros", trainable=False, name="index")

    def call(self, inputs: Any) -> Any:
        out = keras.activations.get(self.family[0])(inputs)
        for k, name in enumerate(self.family[1:], start=1):
            out = ops.where(ops.equal(self.index, float(k)), keras.activations.get(name)(inputs), out)
        return out

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "family": list(self.family)}


class MaskedBatchNormalization(keras.layers.BatchNormalization):
    """Keras' BatchNormalization; with ``row_mask``, called on ``[inputs, rows]`` (``rows`` from
    :class:`PaddingRows`: 1 a real row, 0 the padding of a last training batch), its batch mean and variance are
    those of the real rows only (Keras' own masked moments), so a padded last batch trains as the unpadded one.
    Its variables are Keras' (a template's batch normalisation lines up with the user's)."""

    def __init__(self, row_mask: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.row_mask = bool(row_mask)

    def build(self, input_shape: Any) -> None:
        super().build(input_shape[0] if self.row_mask else input_shape)
        if self.row_mask:
            self.input_spec = None  # Keras' spec is of one input; this layer takes two

    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        if self.row_mask:
            inputs, rows = inputs
            real = ops.reshape(ops.greater(rows, 0.5), (-1,) + (1,) * (len(inputs.shape) - 2))
            mask = ops.broadcast_to(real, ops.shape(inputs)[:-1])  # every position of a real row
        return super().call(inputs, training=training, mask=mask)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape[0] if self.row_mask else input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "row_mask": self.row_mask}


class SwitchBatchNormalization(MaskedBatchNormalization):
    """A :class:`MaskedBatchNormalization` where the variable ``on`` is 1, the identity where it is 0 (the
    layer's own numbers are computed and not selected: its weights get a zero gradient)."""

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self.on = self.add_weight(shape=(), initializer="ones", trainable=False, name="on")

    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        x = inputs[0] if self.row_mask else inputs
        return ops.where(ops.greater(self.on, 0.5), super().call(inputs, training=training, mask=mask), x)


@keras.saving.register_keras_serializable(package="hpo")
class PaddingRows(keras.layers.Layer):
    """The padding rows of a last training batch, marked by every input value being NaN (see
    :func:`hpo.execution.shapes.padding_fill`): returns the inputs with those rows zeroed and the row mask
    (1 real, 0 padding) that :class:`SwitchBatchNormalization` (and packed batch normalisation) reads. Real rows
    pass unchanged: a study refuses NaN inputs before any trial (``hpo.data.splits.check_finite``), so a row of
    NaN is always padding. Registered for saving: a packed model holding it can be saved whole."""

    def call(self, inputs: Any) -> Any:
        axes = tuple(range(1, len(inputs.shape)))
        real = ops.logical_not(ops.all(ops.isnan(inputs), axis=axes))
        keep = ops.reshape(real, (-1,) + (1,) * len(axes))
        return ops.where(keep, inputs, ops.zeros_like(inputs)), ops.cast(real, inputs.dtype)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return tuple(input_shape), (input_shape[0],)


class DepthGate(keras.layers.Layer):
    """A block of a supernet that is part of the trial's model (``on`` 1: the block's output) or not (``on`` 0:
    the block's input, passed on unchanged)."""

    def build(self, input_shape: Any) -> None:
        self.on = self.add_weight(shape=(), initializer="ones", trainable=False, name="on")

    def call(self, inputs: Any) -> Any:
        block_input, block_output = inputs
        return ops.where(ops.greater(self.on, 0.5), block_output, block_input)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape[1]
