"""Compiled templates widen Conv2D filters too (issue 23: "architectures that differ only in widths (units,
filters) share one compiled step"): a Conv2D is held at the next power of two of its filters, the layer that
reads it (a Conv2D, or a Dense behind global pooling) masks the padded channels, and the template trains to the
narrower model's weights; a trial of the ``convnet`` space with other filters in the same bucket compiles no
step. The JAX checks run in one subprocess with ``KERAS_BACKEND=jax``; the plan checks under the session's
backend."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import keras
import pytest

from tests.jax_script import DIGITS_PRELUDE, run_jax_script

from hpo.execution.template_plan import plan_of as _plan

JAX_SCRIPT = DIGITS_PRELUDE + textwrap.dedent("""
    from hpo.execution.templates import template_twin

    xi = x.reshape(-1, 8, 8, 1)

    def build(f1, f2, bn=True, act="relu", l2=None, pool="max", opt="adam", residual=False):
        keras.utils.set_random_seed(11)
        i = keras.Input((8, 8, 1))
        reg = keras.regularizers.L2(l2) if l2 else None
        h = keras.layers.Conv2D(f1, 3, padding="same", use_bias=not bn, kernel_regularizer=reg)(i)
        if bn:
            h = keras.layers.BatchNormalization()(h)
        h = keras.layers.Activation(act)(h)
        h = (keras.layers.MaxPooling2D(2) if pool == "max" else keras.layers.AveragePooling2D(2))(h)
        shortcut = h
        h = keras.layers.Conv2D(f2, 3, padding="same", activation=act, kernel_regularizer=reg)(h)
        if residual:  # a sum of two widened convolutions (a 1x1 projection): both held at one width
            h = keras.layers.Conv2D(f2, 3, padding="same", use_bias=False)(h)
            h = keras.layers.BatchNormalization()(h)
            h = keras.layers.Activation(act)(h)
            h = keras.layers.Add()([h, keras.layers.Conv2D(f2, 1, padding="same")(shortcut)])
            h = keras.layers.MaxPooling2D(2)(h)
        h = keras.layers.GlobalAveragePooling2D()(h)
        m = keras.Model(i, keras.layers.Dense(10)(h))
        m.compile(optimizer=keras.optimizers.Adam(1e-3) if opt == "adam" else keras.optimizers.RMSprop(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
        return m

    def train(template, steps=None, **kw):
        with host_initialisers():
            m = build(**kw)
            t = template_twin(m, 64, steps) if template else m
            assert t is not None
        compiled.clear()
        keras.utils.set_random_seed(5)
        t.fit(xi, y, batch_size=64, epochs=3, shuffle=False, verbose=0)
        saved = user_model(t)
        return (named(saved), [f for f in compiled if "train_step" in f],
                [list(v.shape) for v in t.trainable_variables][:1], [l.filters for l in saved.layers
                                                                     if isinstance(l, keras.layers.Conv2D)],
                type(t.optimizer).__name__)

    out = {}
    cases = {"bn_max": dict(f1=12, f2=20), "same_buckets_l2": dict(f1=10, f2=24, l2=1e-3),
             "tanh_avg_rmsprop": dict(f1=9, f2=17, act="tanh", bn=False, pool="avg", opt="rmsprop", l2=1e-4),
             # RMSprop: under Adam this deeper net turns float rounding into drift (3e-5 after three epochs at the
             # template's own widths, where it computes what the user's model does; 5e-7 after one)
             "residual": dict(f1=11, f2=19, residual=True, opt="rmsprop")}
    # then 6 and 8 filters (buckets 8 and 8, not compiled yet): over 45 train steps the 16- and 32-filter
    # template of bn_max costs less extra arithmetic than a compilation, over a million steps it does not
    cases |= {"covered": dict(f1=6, f2=8, steps=45), "own_buckets": dict(f1=6, f2=8, steps=10**6)}
    # Adam after RMSprop in one structure: the switch between the two (a template of its own), which then trains
    # both: Adam at other widths, and RMSprop wider than its own plain template
    tanh = dict(act="tanh", bn=False, pool="avg", l2=1e-4, steps=45)
    cases |= {"switch_adam": dict(f1=9, f2=17, opt="adam", **tanh),
              "switch_adam_again": dict(f1=10, f2=20, opt="adam", **tanh),
              "rms_small": dict(f1=3, f2=4, opt="rmsprop", **{**tanh, "pool": "max"}),
              "switch_adam_max": dict(f1=12, f2=20, opt="adam", **{**tanh, "pool": "max"}),
              "switch_rms": dict(f1=11, f2=19, opt="rmsprop", **{**tanh, "pool": "max"})}
    for name, kw in cases.items():
        mine, steps, shapes, filters, opt = train(True, **kw)
        kw.pop("steps", None)
        plain = train(False, **kw)[0]
        assert sorted(mine) == sorted(plain)
        out[name] = {"diff": max(float(np.abs(mine[k] - plain[k]).max()) for k in mine), "steps": steps,
                     "template_kernel": shapes[0], "saved_filters": filters, "variables": len(mine),
                     "optimizer": opt}

    # batch normalization and a last partial batch (950 = 14 x 64 + 54): the template trains it padded (its NaN
    # rows left out of the batch statistics) to the weights the unpadded user model reaches, in one train step
    from hpo.execution.shapes import PaddedEpochs, padding_fill

    def padded(template):
        with host_initialisers():
            m = build(f1=12, f2=20)
            t = template_twin(m, 64) if template else m
        compiled.clear()
        keras.utils.set_random_seed(5)
        t.fit(PaddedEpochs(xi[:950], y[:950], 64, seed=3, pad=template, fill=padding_fill(t)), epochs=3,
              shuffle=False, verbose=0)
        return named(user_model(t)), [f for f in compiled if "train_step" in f], padding_fill(t)

    mine, steps, fill = padded(True)
    plain = padded(False)[0]
    out["bn_padded"] = {"diff": max(float(np.abs(mine[k] - plain[k]).max()) for k in mine), "steps": steps,
                        "nan_fill": fill != fill, "variables": len(mine)}

    # trials of the convnet space as it comes (residual blocks, a 1x1 projection on each shortcut, batch norm):
    # filters 12 (held at 16 and 32), then 10 (the same)
    from hpo.config import from_dict
    from hpo.execution.trial import TrialSettings, run_trial
    from hpo.study.prepare import prepare

    cfg = from_dict({"study": {"name": "c"}, "data": {"dataset": "digits"}, "space": {"builder": "convnet"},
                     "training": {"epochs": 1}})
    build_fn, splits, space = prepare(cfg)
    tmp = Path(tempfile.mkdtemp())

    def trial(i, **kw):
        compiled.clear()
        params = {**space.defaults(), "blocks": 2, **kw}
        r = run_trial(number=i, params=params, seed=7, build=build_fn, space=space, splits=splits,
                      settings=TrialSettings(epochs=1), trial_dir=tmp / str(i))
        assert r.state.name == "COMPLETE", r.error
        m = keras.saving.load_model(r.model_path, safe_mode=True)
        with np.load(r.predictions_path) as f:
            logits = f["test/digit"]
        return {"compiled": [f for f in compiled if "step" in f or "predict" in f],
                "filters": [l.filters for l in m.layers if isinstance(l, keras.layers.Conv2D)],
                "classes": sorted({type(l).__name__ for l in m.layers}),
                "logits_diff": float(np.abs(logits - np.asarray(m.predict(splits.x["test"], verbose=0))).max())}

    out["trial_12"] = trial(0, filters=12)
    out["trial_10"] = trial(1, filters=10, dropout=0.1)
    out["trial_rmsprop"] = trial(2, filters=10, optimizer="rmsprop")  # the space chooses Adam or RMSprop: a switch
    print("RESULT" + json.dumps(out))
""")


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_jax_script(JAX_SCRIPT, tmp_path_factory.mktemp("conv"), timeout=900)


@pytest.mark.parametrize("case", ["bn_max", "same_buckets_l2", "tanh_avg_rmsprop", "residual"])
def test_a_widened_conv_trains_to_the_narrower_models_weights(jax_run: dict[str, Any], case: str) -> None:
    out = jax_run[case]
    assert out["diff"] < 1e-5, out  # every variable: kernels, biases, batch statistics, the head
    assert out["variables"] >= 6
    assert out["template_kernel"] == [3, 3, 1, 16]  # 12, 10 and 9 filters held at 16
    assert out["saved_filters"][:2] == list(cases_filters[case])  # the user's own Conv2D layers


cases_filters = {"bn_max": (12, 20), "same_buckets_l2": (10, 24), "tanh_avg_rmsprop": (9, 17), "residual": (11, 19)}


def test_other_filters_in_the_same_buckets_compile_no_train_step(jax_run: dict[str, Any]) -> None:
    assert jax_run["bn_max"]["steps"]  # the first compiles the template (16 and 32 filters)
    assert jax_run["same_buckets_l2"]["steps"] == []  # 10 and 24 filters, L2 on: the same template


def test_a_trial_trains_in_a_wider_compiled_template_when_that_costs_less_than_compiling(
        jax_run: dict[str, Any]) -> None:
    covered, own = jax_run["covered"], jax_run["own_buckets"]
    # 6 and 8 filters in the 16- and 32-filter template compiled for 12 and 20: no train step compiled, and
    # the trial still trains to its own narrower model's weights
    assert covered["template_kernel"] == [3, 3, 1, 16] and covered["steps"] == [], covered
    assert covered["diff"] < 1e-5 and covered["saved_filters"][:2] == [6, 8], covered
    # over a million steps the extra arithmetic outweighs a compilation: its own 8- and 8-filter template
    assert own["template_kernel"] == [3, 3, 1, 8] and own["steps"], own
    assert own["diff"] < 1e-5, own


def test_adam_and_rmsprop_of_one_structure_share_the_switch_once_both_are_seen(jax_run: dict[str, Any]) -> None:
    first = jax_run["tanh_avg_rmsprop"]
    assert first["optimizer"] == "RMSprop"  # one optimizer so far: a plain template
    out = {k: jax_run[k] for k in ("switch_adam", "switch_adam_again", "rms_small", "switch_adam_max", "switch_rms")}
    # Adam where an RMSprop template of the structure is kept: the switch, compiled once
    assert out["switch_adam"]["optimizer"] == "AdamOrRMSprop" and out["switch_adam"]["steps"], out
    assert out["switch_adam_again"]["optimizer"] == "AdamOrRMSprop" and out["switch_adam_again"]["steps"] == [], out
    # RMSprop at widths its plain template (4 and 4 filters) does not cover: trained by the switch, no compilation
    assert out["rms_small"]["optimizer"] == "RMSprop" and out["rms_small"]["steps"], out
    assert out["switch_adam_max"]["optimizer"] == "AdamOrRMSprop", out
    assert out["switch_rms"]["optimizer"] == "AdamOrRMSprop" and out["switch_rms"]["steps"] == [], out
    for name, case in out.items():  # each to its own model's weights, optimizer slots aside
        assert case["diff"] < 1e-5, (name, case)


def test_batch_norm_in_a_template_trains_a_padded_last_batch_as_the_unpadded_one(jax_run: dict[str, Any]) -> None:
    out = jax_run["bn_padded"]
    assert out["nan_fill"] and out["variables"] >= 6
    assert len(out["steps"]) <= 1, out  # one train step shape (compiled here if the sample weights are new)
    assert out["diff"] < 1e-5, out  # every variable, the batch statistics included (no Dense bias before them)


def test_convnet_trials_of_other_filters_share_the_template(jax_run: dict[str, Any]) -> None:
    first, second = jax_run["trial_12"], jax_run["trial_10"]
    # the first compiles the template's train step (one: the last partial batch is padded, the batch
    # normalizations leave its padding rows out) and the program that scores and predicts
    assert sorted(first["compiled"]) == ["jit(score_and_predict)", "jit(train_step)"], first
    assert second["compiled"] == [], second  # filters 10 and 20 in the 16- and 32-filter template
    # the convnet space chooses between Adam and RMSprop: its template holds the switch, so RMSprop compiles nothing
    assert jax_run["trial_rmsprop"]["compiled"] == [], jax_run["trial_rmsprop"]
    # two convolutions and a 1x1 projection per block, all widened (the projection sums with the second)
    assert first["filters"] == [12, 12, 12, 24, 24, 24] and second["filters"] == [10, 10, 10, 20, 20, 20]
    for t in (first, second):
        assert "TemplateConv2D" not in t["classes"] and "Conv2D" in t["classes"]
        assert t["logits_diff"] < 1e-5  # predictions.npz (from the template) match the saved model's


def _conv_model(*middle: Any, reader: str = "conv") -> keras.Model:
    i = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(12, 3, padding="same", name="hidden")(i)
    for layer in middle:
        h = layer(h)
    if reader == "conv":
        h = keras.layers.Conv2D(5, 3, name="reader")(h)
        h = keras.layers.GlobalAveragePooling2D()(h)
        o = keras.layers.Dense(3, name="head")(h)
    else:
        o = keras.layers.Dense(3, name="reader")(h)
    m = keras.Model(i, o)
    m.compile(optimizer="adam", loss="mse")
    return m


@pytest.mark.parametrize("middle, reader, widened", [
    ((), "conv", True),
    ((keras.layers.BatchNormalization(), keras.layers.Activation("relu"), keras.layers.MaxPooling2D(2)), "conv", True),
    ((keras.layers.AveragePooling2D(2), keras.layers.Dropout(0.1)), "conv", True),
    ((keras.layers.GlobalAveragePooling2D(),), "dense", True),  # channels in order: a prefix of the Dense's rows
    ((keras.layers.GlobalMaxPooling2D(),), "dense", True),
    ((keras.layers.Flatten(),), "dense", False),  # flattening interleaves the padded channels with real ones
    ((keras.layers.LayerNormalization(),), "conv", False),  # normalises across channels
    ((keras.layers.SpatialDropout2D(0.1),), "conv", False),
])
def test_only_exact_conv_paths_are_widened(middle: tuple[Any, ...], reader: str, widened: bool) -> None:
    plan = _plan(_conv_model(*middle, reader=reader))
    assert plan is not None and ("hidden" in plan.widened) is widened, plan
    assert ("reader" in plan.masked) is widened
    if widened:
        assert plan.widened["hidden"] == 16


def test_a_sum_is_widened_only_with_every_input() -> None:
    i = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(12, 3, padding="same", name="a")(i)
    b = keras.layers.Conv2D(12, 1, name="b")(i)
    h = keras.layers.Add()([keras.layers.Activation("relu")(a), b])
    h = keras.layers.Conv2D(5, 3, name="reader")(h)
    m = keras.Model(i, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h)))
    m.compile(optimizer="adam", loss="mse")
    plan = _plan(m)
    assert plan is not None and plan.widened["a"] == plan.widened["b"] == 16 and "reader" in plan.masked
    # an identity shortcut (the block's input, 12 channels, never widened) keeps the other input's width too
    j = keras.Input((8, 8, 12))
    c = keras.layers.Conv2D(12, 3, padding="same", name="c")(j)
    h = keras.layers.Conv2D(5, 3, name="reader")(keras.layers.Add()([c, j]))
    m = keras.Model(j, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h)))
    m.compile(optimizer="adam", loss="mse")
    plan = _plan(m)
    assert plan is not None and "c" not in plan.widened and "reader" not in plan.masked


def test_grouped_convs_are_not_widened() -> None:
    i = keras.Input((8, 8, 4))
    h = keras.layers.Conv2D(12, 3, groups=2, name="hidden")(i)
    h = keras.layers.Conv2D(6, 3, name="reader")(h)
    m = keras.Model(i, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h)))
    m.compile(optimizer="adam", loss="mse")
    plan = _plan(m)
    assert plan is not None and "hidden" not in plan.widened and "hidden" not in plan.dense_l2
