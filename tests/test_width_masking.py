"""Compiled templates (issue 23): a model held at a wider bucket width with masked units trains to the narrower
model's weights, a reused compiled step with new dropout, L2 and width values gives a fresh model's result, and
a second trial of a new width in the same bucket compiles nothing. The JAX checks run in one subprocess with
``KERAS_BACKEND=jax`` (templates exist under JAX only); the plan checks run under the session's backend."""

from __future__ import annotations

import textwrap
from typing import Any

import keras
import pytest

from tests.jax_script import DIGITS_PRELUDE, run_jax_script

from hpo.execution.template_plan import plan_of as _plan
from hpo.execution.templates import bucket, template_twin


JAX_SCRIPT = DIGITS_PRELUDE + textwrap.dedent("""
    from hpo.execution.templates import template_twin

    def build(units, l2=None, dropout=0.0, bn=False, act="relu", opt="adam", lr=1e-3):
        keras.utils.set_random_seed(11)
        i = keras.Input((64,))
        h = i
        for _ in range(2):
            h = keras.layers.Dense(units, kernel_regularizer=keras.regularizers.L2(l2) if l2 else None)(h)
            if bn:
                h = keras.layers.BatchNormalization()(h)
            h = keras.layers.Activation(act)(h)
            if dropout:
                h = keras.layers.Dropout(dropout)(h)
        m = keras.Model(i, keras.layers.Dense(10)(h))
        m.compile(optimizer=keras.optimizers.Adam(lr) if opt == "adam" else keras.optimizers.RMSprop(lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
        return m

    def train(units, template, epochs=4, **kw):
        with host_initialisers():
            m = build(units, **kw)
            t = template_twin(m, 64) if template else m
            assert t is not None
        compiled.clear()
        keras.utils.set_random_seed(5)
        t.fit(x, y, batch_size=64, epochs=epochs, shuffle=False, verbose=0)
        saved = user_model(t)
        return named(saved), list(compiled), t, saved

    def diff(a, b, skip=()):
        return max(float(np.abs(a[k] - b[k]).max()) for k in a if not any(s in k for s in skip))

    out = {}
    # 1. 40 units held at 64, masked, against the plain 40-unit model: Adam and L2, RMSprop and sigmoid
    for name, kw in {"adam_l2": dict(l2=1e-3), "rmsprop_sigmoid": dict(opt="rmsprop", act="sigmoid", l2=1e-4)}.items():
        plain = train(40, False, **kw)[0]
        masked, _, t, saved = train(40, True, **kw)
        pad = [np.asarray(v) for v in t.trainable_variables]
        out[name] = {"diff": diff(plain, masked), "shapes": [list(v.shape) for v in pad],
                     "padded_nonzero": float(max(np.abs(pad[0][:, 40:]).max(), np.abs(pad[2][40:, :]).max(),
                                                 np.abs(pad[2][:, 40:]).max(), np.abs(pad[4][40:, :]).max())),
                     "saved_classes": sorted({type(l).__name__ for l in saved.layers}),
                     "saved_units": [l.units for l in saved.layers if isinstance(l, keras.layers.Dense)]}
    # with BatchNormalization: the Dense bias in front of it has no gradient (the normalisation removes it), so
    # Adam turns rounding noise into steps there (and into the moving mean that follows it); the rest agrees
    plain = train(40, False, bn=True)[0]
    masked = train(40, True, bn=True)[0]
    out["bn"] = {"diff": diff(plain, masked, skip=("pre_bn/bias", "moving_mean"))}
    # 2. a reused compiled step with new values against fresh models with those values
    train(64, True, dropout=0.3, l2=1e-4)  # compiles the template with dropout
    reused, n_reused = train(64, True, dropout=0.1, l2=3e-3, lr=3e-3)[:2]
    out["dropout_reused"] = {"diff": diff(train(64, False, dropout=0.1, l2=3e-3, lr=3e-3)[0], reused),
                             "compiled": n_reused}
    # dropout at a narrower width: the template draws the narrower model's numbers, not its own shape's
    train(64, True, dropout=0.3, l2=1e-4)
    reused, n_reused = train(40, True, dropout=0.25, l2=1e-4)[:2]
    out["dropout_narrow"] = {"diff": diff(train(40, False, dropout=0.25, l2=1e-4)[0], reused),
                             "compiled": n_reused}
    train(40, True, l2=1e-3)  # compiled above (1.)
    reused, n_reused = train(50, True, lr=2e-3)[:2]  # another width in the bucket, no L2: the same template
    out["width_reused"] = {"diff": diff(train(50, False, lr=2e-3)[0], reused), "compiled": n_reused}

    # 3. trials: a new width in a bucket this process compiled compiles nothing; the saved model is the user's
    from hpo.config import from_dict
    from hpo.execution.trial import TrialSettings, run_trial
    from hpo.study.prepare import prepare

    cfg = from_dict({"study": {"name": "s"}, "data": {"dataset": "digits"}, "space": {"builder": "mlp"},
                     "training": {"epochs": 2}})
    build_fn, splits, space = prepare(cfg)
    tmp = Path(tempfile.mkdtemp())

    def trial(i, **kw):
        compiled.clear()
        r = run_trial(number=i, params={**space.defaults(), **kw}, seed=7, build=build_fn, space=space,
                      splits=splits, settings=TrialSettings(epochs=2, snapshot_epochs=(1,)), trial_dir=tmp / str(i),
                      checkpoint=True)
        assert r.state.name == "COMPLETE", r.error
        names = list(compiled)
        m = keras.saving.load_model(r.model_path, safe_mode=True)
        snap = keras.saving.load_model(tmp / str(i) / "snapshots" / "epoch_001" / "model.keras", safe_mode=True)
        from hpo.execution.continuation import load_checkpoint
        from hpo.space import call_builder
        again_built = call_builder(build_fn, space.hyperparameters_for({**space.defaults(), **kw}), splits.spec)
        load_checkpoint(again_built, tmp / str(i) / "checkpoint.weights.h5")  # weights and optimizer state
        ckpt_diff = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                        for a, b in zip(again_built.trainable_variables + again_built.optimizer.variables[2:],
                                        m.trainable_variables + m.optimizer.variables[2:]))
        with np.load(r.predictions_path) as f:
            logits = f["test/digit"]
        again = np.asarray(m.predict(splits.x["test"], verbose=0))
        return {"compiled": names, "params": r.measures["params"], "count": m.count_params(),
                "units": [l.units for l in m.layers if isinstance(l, keras.layers.Dense)],
                "classes": sorted({type(l).__name__ for l in m.layers}),
                "snapshot_units": [l.units for l in snap.layers if isinstance(l, keras.layers.Dense)],
                "checkpoint_diff": ckpt_diff,
                "moments": max(float(np.abs(np.asarray(v)).max()) for v in again_built.optimizer.variables[2:]),
                "logits_diff": float(np.abs(logits - again).max())}

    out["trial_40"] = trial(0, units=40, layers=2)
    out["trial_50"] = trial(1, units=50, layers=2, dropout=0.0, use_l2=True, l2=1e-3)
    print("RESULT" + json.dumps(out))
""")


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_jax_script(JAX_SCRIPT, tmp_path_factory.mktemp("masking"), timeout=1200)


@pytest.mark.parametrize("case", ["adam_l2", "rmsprop_sigmoid"])
def test_masked_width_trains_to_the_narrower_models_weights(jax_run: dict[str, Any], case: str) -> None:
    out = jax_run[case]
    assert out["diff"] < 1e-5, out
    assert out["shapes"][:4] == [[64, 64], [64], [64, 64], [64]]  # trained at 64 units, masked to 40
    assert out["padded_nonzero"] == 0.0  # padded units never leave zero
    # what the trial keeps is the user's 40-unit model of Keras' own layers
    assert out["saved_units"] == [40, 40, 10] and "TemplateDense" not in out["saved_classes"]


def test_masked_width_with_batchnorm_agrees_but_for_the_bias_batchnorm_removes(jax_run: dict[str, Any]) -> None:
    assert jax_run["bn"]["diff"] < 1e-5


def test_reused_step_with_new_values_gives_the_fresh_models_result(jax_run: dict[str, Any]) -> None:
    # new dropout rate, L2 factor and learning rate at the template's width: the same dropout draws
    assert jax_run["dropout_reused"]["compiled"] == [] and jax_run["dropout_reused"]["diff"] < 1e-5
    # a new width in the same bucket, L2 off (a zero factor): nothing compiles, the narrower model's weights
    assert jax_run["width_reused"]["compiled"] == [] and jax_run["width_reused"]["diff"] < 1e-5
    # dropout in a template at a wider width than the trial's (40 of 64 units): the narrower model's own dropout
    # masks, so a trial's result does not depend on which template its process trained it in
    assert jax_run["dropout_narrow"]["compiled"] == [] and jax_run["dropout_narrow"]["diff"] < 1e-5


def test_a_new_width_in_a_compiled_bucket_compiles_no_step_and_saves_the_users_model(
        jax_run: dict[str, Any]) -> None:
    first, second = jax_run["trial_40"], jax_run["trial_50"]
    # the first trial compiles its template's train step and the program that scores and predicts (and stages
    # its scoring data)
    assert sorted(f for f in first["compiled"] if "step" in f or "predict" in f) == \
        ["jit(score_and_predict)", "jit(train_step)"], first["compiled"]
    assert second["compiled"] == [], second["compiled"]  # 50 units, L2 on: the same template, nothing new
    for t, units in ((first, 40), (second, 50)):
        assert t["units"] == [units, units, 10] and t["classes"] == ["Activation", "Dense", "InputLayer"]
        assert t["params"] == t["count"]  # the measure counts the user's model, not the template
        assert t["logits_diff"] < 1e-5  # predictions.npz (from the template) match the saved model's
        assert t["snapshot_units"] == [units, units, 10]  # an epoch's snapshot is the user's model too
        assert t["checkpoint_diff"] == 0.0 and t["moments"] > 0  # trained weights and optimizer moments


def _model(*middle: Any, out_from_hidden: bool = False) -> keras.Model:
    i = keras.Input((8,))
    h = keras.layers.Dense(12, name="hidden")(i)
    for layer in middle:
        h = layer(h)
    o = keras.layers.Dense(3, name="head")(h)
    m = keras.Model(i, [o, h] if out_from_hidden else o)
    m.compile(optimizer="adam", loss="mse")
    return m


@pytest.mark.parametrize("middle, widened", [
    ((), True),
    ((keras.layers.BatchNormalization(), keras.layers.Activation("gelu"), keras.layers.Dropout(0.2)), True),
    ((keras.layers.LayerNormalization(),), False),  # normalises across the features: padding would count
    ((keras.layers.Activation("softmax"),), False),
    ((keras.layers.Dropout(0.2, noise_shape=(None, 1)),), False),
])
def test_only_exact_paths_are_widened(middle: tuple[Any, ...], widened: bool) -> None:
    plan = _plan(_model(*middle))
    assert plan is not None and ("hidden" in plan.widened) is widened
    assert ("head" in plan.masked) is widened and "head" not in plan.widened  # an output keeps its width


def test_an_output_and_a_non_elementwise_optimizer_are_never_widened() -> None:
    plan = _plan(_model(out_from_hidden=True))
    assert plan is not None and not plan.widened
    m = _model()
    m.compile(optimizer=keras.optimizers.Adafactor(), loss="mse")  # second moments shared across a kernel
    assert _plan(m) is None


def test_buckets_and_backend_gate() -> None:
    assert [bucket(n) for n in (1, 2, 16, 17, 40, 64, 65, 500)] == [1, 2, 16, 32, 64, 64, 128, 512]
    if keras.backend.backend() != "jax":  # other backends keep the model they built
        assert template_twin(_model(), 64) is None


def test_models_differing_in_widths_dropout_and_l2_share_a_structure() -> None:
    from hpo.execution.templates import _structure

    def seq(units: int, rate: float, l2: float | None, act: str = "relu") -> keras.Model:
        m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(
            units, activation=act, kernel_regularizer=keras.regularizers.L2(l2) if l2 else None),
            keras.layers.Dropout(rate), keras.layers.Dense(3)])
        m.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
        return m

    def key(m: keras.Model, batch: int = 32) -> str | None:
        plan = _plan(m)
        assert plan is not None
        return _structure(m, plan, batch)

    a = key(seq(12, 0.2, None))
    assert a is not None and a == key(seq(10, 0.4, 1e-3)) == key(seq(16, 0.1, 1e-5))  # all held at 16 units
    assert a != key(seq(17, 0.2, None))  # 32 units
    assert a != key(seq(12, 0.2, None, act="tanh")) and a != key(seq(12, 0.2, None), batch=64)
