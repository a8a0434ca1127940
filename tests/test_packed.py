"""Packed populations (hpo.execution.packed): a packed member trains exactly like its unpacked Keras model."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from hpo.execution.packed import (  # noqa: E402
    PackedDense,
    PackedDropout,
    PackedMLPSpec,
    PackedSparseCategoricalCrossentropy,
    build_packed_mlp,
    evaluate_members,
    member_histories,
    member_logits,
    packed_optimizer,
    train_packed,
    unpack,
    variable_numpy,
)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data / 16.0).astype("float32"), d.target.astype("int64")


def _np(v) -> np.ndarray:
    return variable_numpy(v)


def _weights(model: keras.Model) -> list[np.ndarray]:
    return [_np(w) for w in model.weights]


def _assert_trains_like_singles(packed: keras.Model, singles: list[keras.Model], x: np.ndarray,
                                y: np.ndarray) -> None:
    """Six batches through the packed model and through each unpacked member: every member's weights move and end
    where its unpacked model's do."""
    initial = [_weights(s) for s in singles]
    for step in range(6):  # same data order for everyone
        xb, yb = x[32 * step:32 * (step + 1)], y[32 * step:32 * (step + 1)]
        packed.train_on_batch(xb, yb)
        for s in singles:
            s.train_on_batch(xb, yb)
    after = unpack(packed, compile=False)
    for m in range(len(singles)):
        for w_packed, w_single, w0 in zip(_weights(after[m]), _weights(singles[m]), initial[m]):
            assert np.abs(w_single - w0).max() > 1e-4  # it did train
            np.testing.assert_allclose(w_packed, w_single, rtol=1e-4, atol=2e-6)


@pytest.mark.parametrize("optimizer,rates", [("sgd", [0.05, 0.01, 0.2]), ("adam", [1e-3, 3e-3, 1e-2]),
                                            ("rmsprop", [1e-3, 3e-3, 7e-3])])
def test_packed_member_trains_like_its_unpacked_model(digits, optimizer, rates):
    x, y = digits
    keras.utils.set_random_seed(0)
    spec = PackedMLPSpec((64,), 10, seeds=[0, 1, 2], learning_rates=rates, l2s=[0.0, 1e-3, 0.0], layers=2,
                         units=16, optimizer=optimizer)
    packed = build_packed_mlp(spec, member_metrics=False)
    singles = unpack(packed)  # standard Dense models: same initial weights, each compiled with its own lr and L2
    assert [type(s.optimizer).__name__.lower() for s in singles] == [optimizer] * 3
    _assert_trains_like_singles(packed, singles, x, y)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
def test_members_of_different_widths_train_like_their_narrower_models(digits, optimizer):
    """A pack of 5-, 9- and 16-unit members held at 16 units: each member trains to the weights of its own
    narrower Dense model (issue 23's width masking), and the padded weights stay exactly zero."""
    x, y = digits
    keras.utils.set_random_seed(0)
    spec = PackedMLPSpec.from_params(
        [{"layers": 2, "units": u, "learning_rate": lr, "use_l2": True, "l2": l2, "optimizer": optimizer, "seed": s}
         for u, lr, l2, s in ((5, 1e-2, 1e-3, 0), (9, 3e-3, 0.0, 1), (16, 5e-3, 1e-4, 2))],
        input_shape=(64,), n_classes=10)
    assert spec.units == 16 and spec.member_units == [5, 9, 16]
    packed = build_packed_mlp(spec, member_metrics=False)
    singles = unpack(packed)
    assert [[layer.units for layer in s.layers if isinstance(layer, keras.layers.Dense)] for s in singles] == \
        [[5, 5, 10], [9, 9, 10], [16, 16, 10]]
    # the narrow member's own initial draw: glorot on its own (in, out), not the held layer's
    limit = np.sqrt(6.0 / (64 + 5))
    k0 = _np(singles[0].layers[1].kernel)
    assert np.abs(k0).max() <= limit and np.abs(k0).max() > 0.9 * limit
    _assert_trains_like_singles(packed, singles, x, y)
    hidden = [layer for layer in packed.layers if isinstance(layer, PackedDense)]
    k1, b1, k2 = _np(hidden[0].kernel), _np(hidden[0].bias), _np(hidden[1].kernel)
    assert not k1[0, :, 5:].any() and not b1[0, 5:].any() and not k2[0, 5:, :].any() and not k2[0, :, 5:].any()
    assert not _np(hidden[2].kernel)[1, 9:, :].any()  # the head reads nothing from member 1's padded units


# A hidden Dense bias feeding a BatchNormalization has no gradient (the normalisation removes a constant shift):
# its updates are rounding noise, which differs between the packed and the unpacked model, and Adam and RMSprop scale
# noise up to real steps. That noise reaches the moving mean behind it and, through both, inference outputs.
NOISE_ONLY = {"dense_0/bias": 2e-3, "dense_1/bias": 2e-3, "bn_0/moving_mean": 5e-5, "bn_1/moving_mean": 5e-5}
BN_LAYERS = ["Dense", "BatchNormalization", "Activation"] * 2 + ["Dense"]


def _batchnorm_pack(optimizer: str, rates: list[float], activation: str) -> PackedMLPSpec:
    """Three batch-normalized members: 16, 9 and 16 units (held at 16), each its own learning rate and seed."""
    return PackedMLPSpec.from_params(
        [{"layers": 2, "units": u, "activation": activation, "batchnorm": True, "optimizer": optimizer,
          "learning_rate": lr, "seed": s} for u, lr, s in zip((16, 9, 16), rates, (0, 1, 2))],
        input_shape=(64,), n_classes=10)


@pytest.mark.parametrize("optimizer,rates,activation", [
    ("sgd", [0.05, 0.01, 0.2], "relu"), ("adam", [1e-3, 3e-3, 1e-2], "relu"),
    ("rmsprop", [1e-3, 3e-3, 7e-3], "sigmoid")])  # sigmoid(0) != 0: the padded units' mask must hold
def test_batchnorm_members_train_and_predict_like_their_unpacked_models(digits, optimizer, rates, activation):
    """Each member normalises over its own batch and keeps its own moving statistics: six batches leave every
    member's weights and moving statistics where its unpacked Keras model's are (the bias before each batch norm
    and the moving mean behind it up to the optimizer's scaled rounding noise, see NOISE_ONLY); inference uses the
    moving statistics as Keras does; the 9-unit member's padded units stay exactly zero."""
    x, y = digits
    keras.utils.set_random_seed(0)
    spec = _batchnorm_pack(optimizer, rates, activation)
    assert spec.batchnorm and spec.member_params(1)["batchnorm"] is True
    packed = build_packed_mlp(spec, member_metrics=False)
    singles = unpack(packed)
    assert [[type(layer).__name__ for layer in s.layers[1:]] for s in singles] == [BN_LAYERS] * 3
    assert [layer.name for layer in singles[0].layers[1:4]] == ["dense_0", "bn_0", "act_0"]
    initial = [_weights(s) for s in singles]
    for step in range(6):
        xb, yb = x[32 * step:32 * (step + 1)], y[32 * step:32 * (step + 1)]
        packed.train_on_batch(xb, yb)
        for s in singles:
            s.train_on_batch(xb, yb)
    after = unpack(packed, compile=False)
    for m in range(3):
        for w_packed, w, w0 in zip(_weights(after[m]), singles[m].weights, initial[m]):
            w_single, loose = _np(w), NOISE_ONLY.get(w.path) if optimizer != "sgd" else None
            if w.path not in ("dense_0/bias", "dense_1/bias"):
                assert np.abs(w_single - w0).max() > 1e-4, w.path  # it did train (moving statistics too)
            np.testing.assert_allclose(w_packed, w_single, err_msg=w.path,
                                       **(dict(rtol=0, atol=loose) if loose else dict(rtol=1e-4, atol=2e-6)))
    z = member_logits(packed, x[1000:])
    for m in range(3):
        np.testing.assert_allclose(z[m], after[m].predict(x[1000:], verbose=0), atol=1e-5)
        np.testing.assert_allclose(z[m], singles[m].predict(x[1000:], verbose=0),
                                   atol=1e-5 if optimizer == "sgd" else 2e-3)
    batch_stats = np.swapaxes(keras.ops.convert_to_numpy(packed(x[1000:1064], training=True)), 0, 1)
    assert np.abs(batch_stats - z[:, :64]).max() > 1e-2  # inference is not the batch statistics' output
    layer = {lay.name: lay for lay in packed.layers}
    assert not _np(layer["dense_0"].kernel)[1, :, 9:].any() and not _np(layer["dense_0"].bias)[1, 9:].any()
    assert not _np(layer["bn_0"].beta)[1, 9:].any() and (_np(layer["bn_0"].gamma)[1, 9:] == 1).all()
    assert not _np(layer["dense_1"].kernel)[1, 9:, :].any() and not _np(layer["digit"].kernel)[1, 9:, :].any()


def test_batchnorm_pack_saves_loads_and_trains_on(digits, tmp_path):
    """A saved batch-normalized packed model loads with its moving statistics and optimizer state: the same
    logits, and one more training step (moving statistics included) agrees."""
    x, y = digits
    keras.utils.set_random_seed(2)
    spec = _batchnorm_pack("adam", [1e-3, 3e-3, 1e-2], "relu")
    result = train_packed(spec, x[:1000], y[:1000], epochs=2, batch_size=64, predict_on={"val": x[1000:]})
    # every member learns (training accuracy, on batch statistics: after 32 steps the moving statistics, momentum
    # 0.99, still lag, so inference on them is rough, as in Keras)
    assert all(h["accuracy"][1] > h["accuracy"][0] for h in result.histories)
    bn = [lay for lay in result.model.layers if lay.name == "bn_1"][0]
    assert np.abs(_np(bn.moving_mean)).max() > 1e-2 and np.abs(_np(bn.moving_variance) - 1).max() > 1e-2
    path = tmp_path / "packed_bn.keras"
    result.model.save(path)
    loaded = keras.saving.load_model(path)
    assert type([lay for lay in loaded.layers if lay.name == "bn_1"][0]).__name__ == "PackedBatchNormalization"
    for a, b in zip(_weights(result.model), _weights(loaded)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(member_logits(loaded, x[1000:]), result.logits["val"], atol=1e-6)
    member = unpack(loaded, compile=False)[1]
    assert [layer.__class__.__name__ for layer in member.layers[1:]] == BN_LAYERS
    np.testing.assert_allclose(member.predict(x[1000:], verbose=0), result.logits["val"][1], atol=1e-5)
    result.model.train_on_batch(x[:64], y[:64])
    loaded.train_on_batch(x[:64], y[:64])
    for a, b in zip(_weights(result.model), _weights(loaded)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_members_are_independent(digits):
    x, y = digits
    n, m = 64, 2

    def run(lr1: float, data1: np.ndarray, labels1: np.ndarray) -> list[np.ndarray]:
        spec = PackedMLPSpec((64,), 10, seeds=[3, 4], learning_rates=[1e-2, lr1], layers=1, units=8,
                             per_member_inputs=True)
        model = build_packed_mlp(spec, member_metrics=False)
        xs = np.stack([x[:n], data1], axis=1)  # (batch, members, features)
        ys = np.stack([y[:n], labels1], axis=1)
        for _ in range(4):
            model.train_on_batch(xs, ys)
        return [_np(w) for w in model.trainable_weights]  # not the settings (width masks: all ones here)

    base = run(1e-2, x[:n], y[:n])
    other = run(5e-2, x[n:2 * n], y[n:2 * n])  # member 1: other rows, other labels, other learning rate
    for wa, wb in zip(base, other):
        np.testing.assert_allclose(wa[0], wb[0], rtol=1e-5, atol=1e-7)  # member 0 untouched (up to rounding)
        assert np.abs(wa[1] - wb[1]).max() > 1e-4
    assert m == 2


def test_init_matches_unpacked_initializer_per_member():
    members, fan_in, units = 32, 100, 50
    layer = PackedDense(members, units, seeds=list(range(members)))
    layer.build((None, fan_in))
    k = _np(layer.kernel)
    assert k.shape == (members, fan_in, units)
    limit = np.sqrt(6.0 / (fan_in + units))  # glorot_uniform on the member's own (in, out)
    assert np.abs(k).max() <= limit and np.abs(k).max() > 0.98 * limit
    dense = keras.layers.Dense(units)
    dense.build((None, fan_in))
    ref_std = _np(dense.kernel).std()
    assert abs(k.std() - limit / np.sqrt(3)) < 0.01 * limit and abs(k.std() - ref_std) < 0.05 * ref_std
    per_member = k.reshape(members, -1).std(1)
    assert np.all(np.abs(per_member / (limit / np.sqrt(3)) - 1) < 0.05)
    assert not np.allclose(k[0], k[1])  # own seed each
    assert np.all(_np(layer.bias) == 0)
    again = PackedDense(members, units, seeds=list(range(members)))
    again.build((None, fan_in))
    np.testing.assert_array_equal(k, _np(again.kernel))


def test_trial_sized_seeds_derive_seeds_every_backend_takes():
    """A search's trial seeds go up to 2**31; the per-layer seeds derived from them must still fit JAX's uint32
    random keys (they overflowed there and failed every packed trial), stay distinct and be reproducible."""
    from hpo.execution.packed.spec import layer_seeds as _layer_seeds

    seeds = [2**31 - 2, 2**31 - 3, 172_882_524, 0]  # hpo.repro.trial_seed draws from [0, 2**31)
    spec = PackedMLPSpec.from_params([{"layers": 2, "units": 8, "seed": s} for s in seeds], input_shape=(4,), n_classes=3)
    for layer in range(spec.layers + 1):
        derived = _layer_seeds(spec, layer)
        assert all(0 <= d and d + 1 < 2**32 for d in derived)  # the bias takes seed + 1
        assert len(set(derived)) == len(derived)  # every member its own draw
    model = build_packed_mlp(spec)
    again = build_packed_mlp(spec)
    for a, b in zip(_weights(model), _weights(again)):
        np.testing.assert_array_equal(a, b)


def test_dropout_rate_per_member():
    layer = PackedDropout([0.0, 0.5], seed=1)
    x = np.ones((2, 500, 20), "float32")
    out = keras.ops.convert_to_numpy(layer(x, training=True))
    np.testing.assert_array_equal(out[0], x[0])
    zeros = (out[1] == 0).mean()
    assert 0.45 < zeros < 0.55 and np.allclose(out[1][out[1] != 0], 2.0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)


def test_loss_is_sum_of_member_means():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(8, 3, 5)).astype("float32")
    y = rng.integers(0, 5, 8)
    got = float(keras.ops.convert_to_numpy(PackedSparseCategoricalCrossentropy()(y, z)))
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    want = sum(-logp[np.arange(8), m, y].mean() for m in range(3))
    assert got == pytest.approx(want, rel=1e-5)
    assert evaluate_members(np.swapaxes(z, 0, 1), y)["loss"] == pytest.approx(
        [-logp[np.arange(8), m, y].mean() for m in range(3)], rel=1e-5)


def test_member_metrics_weigh_samples_like_numpy():
    from hpo.execution.packed import MemberMetrics

    rng = np.random.default_rng(1)
    z = rng.normal(size=(12, 3, 4)).astype("float32")
    y = rng.integers(0, 4, 12)
    w = rng.random(12).astype("float32")
    metric = MemberMetrics(3)
    metric.update_state(y[:5], z[:5], sample_weight=w[:5])  # two batches accumulate
    metric.update_state(y[5:], z[5:], sample_weight=w[5:])
    got = {k: float(keras.ops.convert_to_numpy(v)) for k, v in metric.result().items()}
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    for m in range(3):
        hit = (z[:, m].argmax(-1) == y).astype("float64")
        assert got[f"member_{m}_accuracy"] == pytest.approx((hit * w).sum() / w.sum(), rel=1e-5)
        assert got[f"member_{m}_loss"] == pytest.approx((-logp[np.arange(12), m, y] * w).sum() / w.sum(), rel=1e-5)
    metric.reset_state()
    assert all(float(keras.ops.convert_to_numpy(v)) == 0 for v in metric.result().values())


def test_train_save_load_and_unpack(digits, tmp_path):
    x, y = digits
    keras.utils.set_random_seed(1)
    spec = PackedMLPSpec.from_params(
        [{"layers": 1, "units": 16, "learning_rate": 1e-2, "seed": 0},
         {"layers": 1, "units": 16, "learning_rate": 3e-3, "dropout": 0.1, "use_l2": True, "l2": 1e-4, "seed": 1}],
        input_shape=(64,), n_classes=10)
    result = train_packed(spec, x[:1000], y[:1000], epochs=2, batch_size=64, validation_data=(x[1000:], y[1000:]),
                          predict_on={"val": x[1000:]})
    assert result.logits["val"].shape == (2, len(x) - 1000, 10)
    assert set(result.histories[1]) == {"accuracy", "loss", "val_accuracy", "val_loss"}
    assert len(result.histories[0]["val_accuracy"]) == 2
    scores = evaluate_members(result.logits["val"], y[1000:])
    assert min(scores["accuracy"]) > 0.3
    assert scores["accuracy"] == pytest.approx([h["val_accuracy"][-1] for h in result.histories], abs=1e-6)
    assert scores["loss"] == pytest.approx([h["val_loss"][-1] for h in result.histories], rel=1e-4)

    models = unpack(result.model)
    assert [layer.__class__.__name__ for layer in models[1].layers[1:]] == ["Dense", "Dropout", "Dense"]
    for m, single in enumerate(models):
        np.testing.assert_allclose(single.predict(x[1000:], verbose=0), result.logits["val"][m], atol=1e-5)
    assert models[1].layers[1].kernel_regularizer.l2 == pytest.approx(1e-4)
    single_path = tmp_path / "member.keras"
    models[0].save(single_path)  # a plain Keras model: loads without the packed classes
    assert isinstance(keras.saving.load_model(single_path).layers[1], keras.layers.Dense)

    path = tmp_path / "packed.keras"
    result.model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(member_logits(loaded, x[1000:]), result.logits["val"], atol=1e-6)
    assert list(loaded.optimizer.member_learning_rates) == pytest.approx([1e-2, 3e-3])
    again = loaded.evaluate(x[1000:], y[1000:], batch_size=256, verbose=0, return_dict=True)  # still per member
    assert [again[f"member_{m}_accuracy"] for m in range(2)] == pytest.approx(scores["accuracy"], abs=1e-6)
    xb, yb = x[:64], y[:64]  # optimizer state came back too: one more step agrees (member 0 has no dropout)
    result.model.train_on_batch(xb, yb)
    loaded.train_on_batch(xb, yb)
    for a, b in zip(_weights(result.model), _weights(loaded)):
        np.testing.assert_allclose(a[0], b[0], atol=1e-6)


def test_invalid_populations_are_refused():
    with pytest.raises(ValueError, match="shape parameter"):
        PackedMLPSpec.from_params([{"layers": 1}, {"layers": 2}], input_shape=(64,), n_classes=10)
    with pytest.raises(ValueError, match="member_units"):
        PackedMLPSpec((64,), 10, seeds=[0, 1], learning_rates=[1e-3, 1e-3], units=16, member_units=[8, 20])
    # widths may differ: held at the next power of two of the widest, each member its own
    mixed = PackedMLPSpec.from_params([{"units": 16}, {"units": 33}], input_shape=(64,), n_classes=10)
    assert (mixed.units, mixed.member_units) == (64, [16, 33])
    assert [mixed.member_params(m)["units"] for m in range(2)] == [16, 33]
    with pytest.raises(ValueError, match="one value per member"):
        PackedMLPSpec((64,), 10, seeds=[0, 1], learning_rates=[1e-3])
    with pytest.raises(ValueError, match="weight_decay"):
        packed_optimizer("adam", [1e-3, 1e-3], weight_decay=0.01)
    opt = packed_optimizer("sgd", [0.1, 0.1])
    with pytest.raises(ValueError, match="member axis"):
        opt.build([keras.Variable(np.zeros((3, 4), "float32"))])
    assert member_histories({"member_1_accuracy": [0.5], "val_member_0_loss": [1.0], "loss": [2.0]}, 2) == [
        {"val_loss": [1.0]}, {"accuracy": [0.5]}]
