"""Packed training: ``members`` MLPs of one architecture trained as one Keras model.

A search (or the course's ensemble of 50) trains many small models one after another; each is too small
to keep a GPU busy, and each pays Keras' model building, tracing and compilation again. Here their Dense
weights get a leading member axis (:mod:`~hpo.execution.packed.layers`) so one ``fit`` trains all of them,
with per-member seeds, dropout rates, L2 and learning rates. Each member's gradient and update are exactly
those of its independent training (the loss is the sum of the members' mean losses, the learning rate is
applied per member to the update), which ``tests/test_packed.py`` checks against unpacked Keras models.

What members share: the architecture (layers, units, activation, optimizer kind) and, with shared inputs,
the order of the training data (one shuffle per epoch for all). ``per_member_inputs=True`` gives each member
its own rows instead (inputs ``(batch, members, features)``).

Modules, each using the ones above it: ``layers`` (packed Dense, Dropout, BatchNormalization and
Activation, per-member initializer and L2),
``metrics`` (the summed loss, per-member metrics), ``optimizers`` (per-member learning rates), ``spec`` (the
population), ``model`` (build, read logits, unpack), ``train`` (one packed fit), ``search`` (a study's trials
as packs: ``executor.pack``). Keras registers the classes under the package ``hpo_packed``, so importing this
package is what lets ``keras.saving.load_model`` read a saved packed model.

API::

    spec = PackedMLPSpec.from_params(params_list, input_shape=(64,), n_classes=10)   # mlp-space params
    model = build_packed_mlp(spec)                           # compiled keras.Model, output (batch, M, classes)
    result = train_packed(spec, x_train, y_train, epochs=..., batch_size=..., validation_data=(xv, yv),
                          predict_on={"test": x_test})       # PackedResult: model, histories, logits, wall_s
    models = unpack(model)                                   # M standard keras.Model (Dense layers)
    member_logits(model, x)                                  # (M, N, classes)
    evaluate_members(logits, y)                              # per-member accuracy and loss
"""

from __future__ import annotations

from hpo.execution.packed._common import PACKAGE, variable_numpy
from hpo.execution.packed.layers import (
    MemberInitializer,
    MemberL2,
    PackedActivation,
    PackedBatchNormalization,
    PackedDense,
    PackedDropout,
    PackedLayer,
    SwapMemberBatch,
)
from hpo.execution.packed.metrics import (
    MemberAccuracy,
    MemberLoss,
    MemberMetrics,
    PackedSparseCategoricalCrossentropy,
)
from hpo.execution.packed.model import PackedModel, build_packed_mlp, member_logits, unpack
from hpo.execution.packed.optimizers import (
    PACKED_OPTIMIZERS,
    PackedAdam,
    PackedRMSprop,
    PackedSGD,
    packed_optimizer,
    unpacked_optimizer,
)
from hpo.execution.packed.search import PACK_METRICS, check, group, shape_key, shape_params, train_pack
from hpo.execution.packed.spec import SHAPE_PARAMS, PackedMLPSpec
from hpo.execution.packed.train import (
    PackedResult,
    evaluate_members,
    log_uniform,
    matmul_flops,
    member_histories,
    train_packed,
)

__all__ = [
    "PACKAGE", "PACKED_OPTIMIZERS", "PACK_METRICS", "SHAPE_PARAMS", "MemberAccuracy", "MemberInitializer", "MemberL2",
    "MemberLoss", "MemberMetrics", "PackedActivation", "PackedAdam", "PackedBatchNormalization", "PackedDense",
    "PackedDropout", "PackedLayer", "PackedMLPSpec",
    "PackedModel", "PackedRMSprop", "PackedResult", "PackedSGD", "PackedSparseCategoricalCrossentropy",
    "SwapMemberBatch", "build_packed_mlp", "check", "evaluate_members", "group", "log_uniform", "matmul_flops",
    "member_histories", "member_logits", "packed_optimizer", "shape_key", "shape_params", "train_pack",
    "train_packed", "unpack", "unpacked_optimizer", "variable_numpy",
]
