"""Compile once, train many: padded batches and splits give the numbers of the unpadded ones, and a trial that
reuses a compiled model trains exactly as a fresh model would (issue 23). The JAX checks run in a subprocess
with ``KERAS_BACKEND=jax``; the rest under the test session's backend (TensorFlow)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.jax_script import run_jax_script

from hpo.execution.scoring import score
from hpo.execution.shapes import PaddedEpochs, forward_rows, padded_predict, pads_safely, trains_padded_safely



def _data(n: int = 250) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(0).normal(size=(n, 8)).astype("float32")
    return x, (x[:, 0] + 0.3 * x[:, 1] > 0).astype("int32")


def _model(weighted: bool = True, batchnorm: bool = False) -> keras.Model:
    keras.utils.set_random_seed(3)
    i = keras.Input((8,))
    h = keras.layers.Dense(16, activation="relu")(i)
    o = keras.layers.Dense(2)(keras.layers.BatchNormalization()(h) if batchnorm else h)
    m = keras.Model(i, o)
    acc = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    m.compile(optimizer=keras.optimizers.Adam(0.01), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              **({"weighted_metrics": acc} if weighted else {"metrics": acc}))
    return m


def test_padded_last_batch_trains_to_the_unpadded_weights() -> None:
    x, y = _data(250)  # 3 batches of 64 and one of 58, padded to 64 with zero-weight rows
    data = PaddedEpochs(x, y, 64, seed=5)
    order = data.order.copy()
    assert len(data) == 4 and all(len(data[i][2]) == 64 for i in range(4))
    data.served = 0
    padded, plain = _model(), _model()
    padded.fit(data, epochs=1, shuffle=False, verbose=0)
    plain.fit(x[order], y[order], batch_size=64, shuffle=False, epochs=1, verbose=0)
    for a, b in zip(padded.trainable_variables, plain.trainable_variables):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_a_batch_normalized_model_trains_its_last_batch_unpadded() -> None:
    """Padding rows would enter a BatchNormalization's batch statistics: the padded fit ends elsewhere than the
    unpadded one, so such a model is not trained padded (its forward calls, on moving statistics, still are)."""
    x, y = _data(250)
    data = PaddedEpochs(x, y, 64, seed=5)
    order = data.order.copy()
    padded, plain = _model(batchnorm=True), _model(batchnorm=True)
    padded.fit(data, epochs=1, shuffle=False, verbose=0)
    plain.fit(x[order], y[order], batch_size=64, shuffle=False, epochs=1, verbose=0)
    diff = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
               for a, b in zip(padded.trainable_variables, plain.trainable_variables))
    assert diff > 1e-4
    assert pads_safely(padded) and not trains_padded_safely(padded) and trains_padded_safely(_model())
    nested = keras.Sequential([keras.Input((8,)), _model(batchnorm=True)])  # a model used as a layer
    nested.compile(optimizer="adam", loss="mse", weighted_metrics=["mae"])
    assert not trains_padded_safely(nested)


def test_padded_scoring_counts_only_real_rows() -> None:
    x, y = _data(50)
    m = _model()
    m.fit(x, y, epochs=3, verbose=0)
    plain = score(m, x, y)
    padded = score(m, x, y, rows=400)  # 350 copies of row 0 with weight 0
    assert padded.keys() == plain.keys()
    for k in plain:
        assert padded[k] == pytest.approx(plain[k], abs=1e-5), k
    assert pads_safely(m) and not pads_safely(_model(weighted=False))  # a metrics= accuracy would count padding


def test_padded_forward_gives_the_eager_logits() -> None:
    x, _ = _data(250)
    m = _model()
    rows = forward_rows([250, 70, 120])
    assert rows == 256
    np.testing.assert_allclose(padded_predict(m, x, rows), np.asarray(m(x, training=False)), atol=1e-5)
    np.testing.assert_allclose(padded_predict(m, x[:70], rows), np.asarray(m(x[:70], training=False)), atol=1e-5)


JAX_SCRIPT = textwrap.dedent("""
    import json, sys, tempfile
    from pathlib import Path
    from jax import monitoring
    compiled = []
    monitoring.register_event_duration_secs_listener(
        lambda e, d, **k: compiled.append(k.get("fun_name")) if e == "/jax/core/compile/backend_compile_duration" else None)
    import numpy as np
    from hpo.config import from_dict
    from hpo.execution.reuse import clear_twins
    from hpo.execution.templates import clear_templates
    from hpo.execution.trial import TrialSettings, run_trial
    from hpo.study.prepare import prepare

    out = {}
    cfg = from_dict({"study": {"name": "s"}, "data": {"dataset": "digits"}, "space": {"builder": "mlp"},
                     "training": {"epochs": 2}})
    build, splits, space = prepare(cfg)
    out["startup"] = list(compiled); compiled.clear()
    base, tmp = space.defaults(), Path(tempfile.mkdtemp())

    def trial(i, epochs=2, **kw):
        r = run_trial(number=i, params={**base, **kw}, seed=7, build=build, space=space, splits=splits,
                      settings=TrialSettings(epochs=epochs, save_models=False), trial_dir=tmp / str(i))
        assert r.state.name == "COMPLETE", r.error
        names = list(compiled); compiled.clear()
        with np.load(r.predictions_path) as f:
            return names, f["test/digit"], r.value

    out["first"] = trial(0, units=40, dropout=0.2)[0]
    # over 2 epochs the first trains in the supernet of the space's largest model (its extra arithmetic costs less
    # than a compilation, hpo.execution.compile_cost); over 4 that one costs more: a supernet of its own size
    out["new_shape"] = trial(1, units=100, epochs=4)[0]
    out["reused"], reused, v1 = trial(2, units=40, learning_rate=0.003, dropout=0.1)
    clear_twins()  # the same trial on a model built and compiled for it
    clear_templates()
    _, fresh, v2 = trial(3, units=40, learning_rate=0.003, dropout=0.1)
    out["reused_minus_fresh"] = float(np.abs(reused - fresh).max())
    out["values"] = [v1, v2]
    # trials seed, build, train and score, and Keras saves a model, under JAX without importing TensorFlow (~2 s
    # where it is installed)
    import keras
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(tmp / "saved.keras")
    out["tensorflow_imported"] = "tensorflow" in sys.modules
    print("RESULT" + json.dumps(out))
""")


def test_jax_trials_compile_each_shape_once_and_reuse_exactly(tmp_path: Path) -> None:
    out = run_jax_script(JAX_SCRIPT, tmp_path)
    # start-up (discovery builds, preflight) compiles nothing: no initialiser, no scalar conversion for the
    # optimizer's variables, and the preflight traces the scoring program without compiling it
    assert out["startup"] == [], out["startup"]
    steps = ["jit(score_and_predict)", "jit(train_step)"]
    # the process's first trial too (a Dropout's seed state, the scoring inputs and the metrics' results are
    # made on the host): its train step and the one program that scores and predicts (hpo.execution.forward)
    assert sorted(out["first"]) == steps, out["first"]
    # a new architecture: its train step and scoring program, one shape each, nothing else
    assert sorted(out["new_shape"]) == steps, out["new_shape"]
    # the architecture and batch size seen before, another learning rate and dropout rate: nothing compiles, and it trains
    # exactly as a model built and compiled for it
    assert out["reused"] == [], out["reused"]
    assert out["reused_minus_fresh"] == 0.0 and out["values"][0] == out["values"][1]
    assert (tmp_path / "cache" / "jax-compilation-cache").is_dir()  # the persistent cache, on by default
    assert not out["tensorflow_imported"]


def test_reuse_key_ignores_the_learning_rate_and_refuses_custom_layers() -> None:
    from hpo.execution.reuse import signature

    def build(lr: float = 1e-3, units: int = 16, layer: type = keras.layers.Dense) -> keras.Model:
        i = keras.Input((8,))
        m = keras.Model(i, keras.layers.Dense(2)(layer(units)(i)))
        m.compile(optimizer=keras.optimizers.Adam(lr), loss="mse")
        return m

    class Custom(keras.layers.Dense):  # Python state its config may not show: never reused
        pass

    a = signature(build(), 64)
    assert a is not None and a == signature(build(lr=3e-3), 64)  # generated layer names differ, too
    assert a != signature(build(units=17), 64) and a != signature(build(), 32)
    assert signature(build(layer=Custom), 64) is None
