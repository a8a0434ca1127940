"""Under JAX a trial scores and predicts through one compiled program per model (issue 23,
:mod:`hpo.execution.forward`): its scores are what ``test_on_batch`` reports and its outputs what the model
predicts, for a multi-input, multi-output model with regularisation losses and padded splits; it changes nothing
of the model; and a trial's saved predictions are its final model's, whether taken from the last epoch's scoring
or computed after a restore of its best weights. Checked in a subprocess with ``KERAS_BACKEND=jax``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.jax_script import run_jax_script

SCRIPT = """
import json, tempfile
from pathlib import Path
from jax import monitoring
compiled = []
monitoring.register_event_duration_secs_listener(
    lambda e, d, **k: compiled.append(k.get("fun_name")) if e == "/jax/core/compile/backend_compile_duration" else None)
import keras
import numpy as np
from hpo.execution.forward import evaluate, has_program
from hpo.execution.scoring import scorable

out = {}
rng = np.random.default_rng(0)
n, rows = 90, 128  # 90 real rows padded to 128 with zero-weight rows
xa, xb = rng.normal(size=(n, 6)).astype("float32"), rng.normal(size=(n, 3)).astype("float32")
y = {"kind": rng.integers(0, 4, n).astype("int32"), "score": rng.normal(size=(n, 1)).astype("float32")}
keras.utils.set_random_seed(1)
a, b = keras.Input((6,), name="a"), keras.Input((3,), name="b")
h = keras.layers.Dense(16, activation="relu", kernel_regularizer=keras.regularizers.L2(0.01))(
    keras.layers.Concatenate()([a, b]))
h = keras.layers.Dropout(0.3)(keras.layers.BatchNormalization()(h))
model = keras.Model({"a": a, "b": b}, {"kind": keras.layers.Dense(4, name="kind")(h),
                                      "score": keras.layers.Dense(1, name="score")(h)})
model.compile(optimizer="adam", loss={"kind": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                                      "score": "mse"}, loss_weights={"kind": 1.0, "score": 0.5},
              weighted_metrics={"kind": ["accuracy"], "score": ["mae"]})
x = {"a": xa, "b": xb}
model.fit(x, y, epochs=2, batch_size=32, verbose=0)
xy = scorable(x, y, rows)
out["has_program"] = has_program(model)
before = [np.array(v) for v in model.variables]
compiled.clear()
scores, kept = evaluate(model, xy.x, xy.y, xy.sample_weight, xy.rows)
outputs = kept.numpy()
out["first_call"] = list(compiled); compiled.clear()
out["unchanged"] = all(np.array_equal(p, np.asarray(v)) for p, v in zip(before, model.variables))
expected = model.test_on_batch(xy.x, xy.y, sample_weight=xy.sample_weight, return_dict=True)
out["keys"] = [sorted(scores), sorted(expected)]
out["score_diff"] = max(abs(scores[k] - float(expected[k])) for k in expected)
out["scores"] = {k: float(v) for k, v in expected.items()}
direct = model.predict_on_batch(x)
out["shapes"] = {k: list(v.shape) for k, v in outputs.items()}
out["output_diff"] = max(float(np.abs(outputs[k] - np.asarray(direct[k])).max()) for k in direct)
# other weights, the same program: new numbers, nothing compiled
model.fit(x, y, epochs=1, batch_size=32, verbose=0)
compiled.clear()
again, _ = evaluate(model, xy.x, xy.y, xy.sample_weight, xy.rows)
out["second_call"] = list(compiled)
expected = model.test_on_batch(xy.x, xy.y, sample_weight=xy.sample_weight, return_dict=True)
out["second_diff"] = max(abs(again[k] - float(expected[k])) for k in expected)
out["moved"] = abs(again["loss"] - scores["loss"])

class Probabilities(keras.Model):  # a model whose own predict step a program would bypass
    def predict_step(self, data):
        return keras.ops.softmax(super().predict_step(data))

i = keras.Input((6,))
own = Probabilities(i, keras.layers.Dense(3)(i))
own.compile(optimizer="adam", loss="sparse_categorical_crossentropy", weighted_metrics=["accuracy"])
out["own_steps"] = has_program(own)
eager = keras.Model(i, keras.layers.Dense(3)(i))
eager.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=True)
out["run_eagerly"] = has_program(eager)

# trials: the saved predictions are the final model's, with and without a restore of the best weights
from hpo.config import from_dict
from hpo.execution.trial import TrialSettings, run_trial
from hpo.study.prepare import prepare

cfg = from_dict({"study": {"name": "s"}, "data": {"dataset": "digits"}, "space": {"builder": "mlp"},
                 "training": {"epochs": 4}})
build, splits, space = prepare(cfg)
tmp = Path(tempfile.mkdtemp())
for name, settings in (("last", TrialSettings(epochs=4)),
                       ("restored", TrialSettings(epochs=6, early_stopping_patience=1, restore_best_weights=True))):
    compiled.clear()
    r = run_trial(number=0, params={**space.defaults(), "units": 40, "learning_rate": 0.03}, seed=3, build=build,
                  space=space, splits=splits, settings=settings, trial_dir=tmp / name)
    assert r.state.name == "COMPLETE", r.error
    out[f"{name}_compiled"] = sorted(set(compiled))
    saved = keras.saving.load_model(r.model_path)
    with np.load(r.predictions_path) as f:
        out[f"{name}_pred_diff"] = max(float(np.abs(f[f"{s}/digit"] - np.asarray(saved(splits.x[s]))).max())
                                       for s in ("select", "audit", "test"))
    out[f"{name}_epochs"] = r.epochs
    # the objective is the final model's accuracy on select
    pred = np.asarray(saved(splits.x["select"])).argmax(-1)
    out[f"{name}_value"] = [r.value, float((pred == splits.y["select"]).mean())]

# a HyperModel whose fit override changes the weights after the last epoch's scoring: its predictions and
# scores are the final model's, not the last epoch's
import keras_tuner as kt

class ChangesAfterFit(kt.HyperModel):
    def build(self, hp):
        m = keras.Sequential([keras.Input((64,)), keras.layers.Dense(hp.Int("units", 8, 32), activation="relu"),
                              keras.layers.Dense(10)])
        m.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  weighted_metrics=["accuracy"])
        return m

    def fit(self, hp, model, *args, **kwargs):
        history = model.fit(*args, **kwargs)
        model.layers[-1].bias.assign(np.linspace(-3, 3, 10).astype("float32"))
        return history

hm = ChangesAfterFit()
_, _, hm_space = prepare(cfg, build=hm)
r = run_trial(number=0, params=hm_space.defaults(), seed=3, build=hm, space=hm_space, splits=splits,
              settings=TrialSettings(epochs=2), trial_dir=tmp / "hm")
assert r.state.name == "COMPLETE", r.error
saved = keras.saving.load_model(r.model_path)
with np.load(r.predictions_path) as f:
    out["hm_pred_diff"] = max(float(np.abs(f[f"{s}/digit"] - np.asarray(saved(splits.x[s]))).max())
                              for s in ("select", "audit", "test"))
pred = np.asarray(saved(splits.x["select"])).argmax(-1)
out["hm_value"] = [r.value, float((pred == splits.y["select"]).mean()), r.history["val_accuracy"][-1]]

# the preflight traces the scoring program without compiling it, and still stops bad input before any trial
from hpo.errors import ConfigError
from hpo.study.prepare import clear_prepared

def wrong_width(hp, spec):
    m = keras.Sequential([keras.Input((5,)), keras.layers.Dense(10)])
    m.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              weighted_metrics=["accuracy"])
    return m

errors = {}
for name, cfg_extra, b in (("unknown_metric", {"objective": {"metric": "auc"}}, None),
                           ("wrong_width", {}, wrong_width)):
    clear_prepared()
    compiled.clear()
    try:
        prepare(from_dict({"study": {"name": "s"}, "data": {"dataset": "digits"}, "space": {"builder": "mlp"},
                           **cfg_extra}), build=b)
        errors[name] = None
    except ConfigError as exc:
        errors[name] = [exc.field, str(exc)]
    errors[name + "_compiled"] = list(compiled)
out["preflight"] = errors
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run_jax_script(SCRIPT, tmp_path_factory.mktemp("forward"))


def test_one_program_scores_as_test_on_batch_and_predicts_as_the_model(out: dict) -> None:
    assert out["has_program"]
    assert out["first_call"] == ["jit(score_and_predict)"], out["first_call"]
    # every log test_on_batch gives (the weighted total with the L2 penalty, each head's loss and metric), equal
    assert out["keys"][0] == out["keys"][1] and {"loss", "kind_loss", "score_mae"} <= set(out["keys"][0])
    assert out["score_diff"] < 1e-6, out
    # the outputs of the 90 real rows, each head
    assert out["shapes"] == {"kind": [90, 4], "score": [90, 1]}
    assert out["output_diff"] < 1e-6, out
    assert out["unchanged"]  # no variable (weights, moving statistics, metrics, optimizer) changed
    assert not out["own_steps"]  # a model with its own predict (or test) step keeps it
    assert not out["run_eagerly"]  # as does one Keras runs eagerly


def test_the_program_is_compiled_once_and_reads_the_present_weights(out: dict) -> None:
    assert out["second_call"] == [], out["second_call"]
    assert out["second_diff"] < 1e-6 and out["moved"] > 1e-4, out


@pytest.mark.parametrize("name", ["last", "restored"])
def test_a_trial_saves_its_final_models_predictions(out: dict, name: str) -> None:
    # a trial compiles its train step and the scoring program: no test step, no predict step (the second trial
    # may train in what the first compiled; EarlyStopping compares its monitor with eager ops)
    compiled = out[f"{name}_compiled"]
    if name == "last":
        assert compiled == ["jit(score_and_predict)", "jit(train_step)"], compiled
    assert not {"jit(test_step)", "jit(predict_step)"} & set(compiled), compiled
    assert out[f"{name}_pred_diff"] < 1e-5, out
    value, recomputed = out[f"{name}_value"]
    assert value == pytest.approx(recomputed, abs=1e-6)  # Keras' float32 mean
    if name == "restored":
        assert out["restored_epochs"] >= 2


def test_the_jax_preflight_compiles_nothing_and_still_stops_bad_input(out: dict) -> None:
    errors = out["preflight"]
    assert errors["unknown_metric"][0] == "objective.metric" and "not reported" in errors["unknown_metric"][1]
    assert "accuracy" in errors["unknown_metric"][1]  # what the model does report
    assert errors["wrong_width"][0] == "data" and "check input shapes" in errors["wrong_width"][1]
    assert errors["unknown_metric_compiled"] == [] and errors["wrong_width_compiled"] == [], errors


def test_a_fit_override_that_changes_the_weights_saves_and_scores_the_final_model(out: dict) -> None:
    assert out["hm_pred_diff"] < 1e-5, out
    value, recomputed, last_epoch = out["hm_value"]
    assert value == pytest.approx(recomputed, abs=1e-6) and value != last_epoch, out["hm_value"]
