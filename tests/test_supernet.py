"""Supernets (issue 23): dense stacks of different depths, widths, activations, batch normalisation, dropout and
L2 train in one compiled supernet to the weights their own models reach, a trial of a new structure compiles
nothing once the search's supernet is compiled, and only dense stacks are taken. The JAX checks run in one
subprocess with ``KERAS_BACKEND=jax`` (supernets exist under JAX only); the recognition and cost checks run
under the session's backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import keras
import pytest

from tests.jax_script import DIGITS_PRELUDE, ROOT, run_jax_script

from hpo.execution.supernet import FAMILY, Shape, covering_shape, stack_of

JAX_SCRIPT = DIGITS_PRELUDE + textwrap.dedent("""
    from hpo.execution.supernet_state import supernet_twin

    def build(units, layers=2, l2=None, dropout=0.0, bn=False, act="relu", lr=1e-3, inline=False, opt="adam"):
        keras.utils.set_random_seed(11)
        i = keras.Input((64,))
        h = i
        for _ in range(layers):
            h = keras.layers.Dense(units, activation=act if inline else None,
                                   kernel_regularizer=keras.regularizers.L2(l2) if l2 else None)(h)
            if bn:
                h = keras.layers.BatchNormalization()(h)
            if not inline:
                h = keras.layers.Activation(act)(h)
            if dropout:
                h = keras.layers.Dropout(dropout)(h)
        m = keras.Model(i, keras.layers.Dense(10)(h))
        m.compile(optimizer=keras.optimizers.Adam(lr) if opt == "adam" else keras.optimizers.RMSprop(lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
        return m

    def train(supernet, **kw):
        with host_initialisers():
            m = build(**kw)
            t = supernet_twin(m, 64, steps=45, hint=HINT) if supernet else m
            assert t is not None
        compiled.clear()
        keras.utils.set_random_seed(5)
        t.fit(x, y, batch_size=64, epochs=3, shuffle=False, verbose=0)
        steps = [f for f in compiled if "train_step" in f]
        saved = user_model(t)
        pred = float(np.abs(np.asarray(t.predict(x[:64], verbose=0))
                            - np.asarray(saved.predict(x[:64], verbose=0))).max())
        weights = named(saved)
        weights.update({f"opt{i}": np.asarray(v) for i, v in enumerate(saved.optimizer.variables)})
        return weights, steps, pred, saved, t

    def diff(a, b, skip=()):
        assert sorted(a) == sorted(b)
        return max(float(np.abs(a[k] - b[k]).max()) for k in a if not any(s in k for s in skip))

    # The first model is the largest (3 blocks of 64 units, batch norm, dropout); each later one, of another
    # depth, width, activation, L2, batch norm or dropout, trains in that supernet. The Dense bias in front of a
    # batch normalisation has no gradient (Adam turns rounding noise into steps there: see templates).
    cases = {"largest": dict(units=64, layers=3, dropout=0.2, bn=True, act="gelu"),
             "one_block_l2": dict(units=40, layers=1, l2=1e-3),
             "tanh_two_blocks": dict(units=64, layers=2, act="tanh", l2=1e-4, lr=3e-3),
             "bn_relu": dict(units=64, layers=3, bn=True, act="relu"),
             "inline_sigmoid": dict(units=33, layers=2, act="sigmoid", inline=True),
             "dropout_silu": dict(units=64, layers=2, dropout=0.3, act="silu"),
             "narrow_dropout": dict(units=37, layers=3, dropout=0.25, act="relu")}
    # the activations of a search space join the family of its supernet (trials: space_hint)
    from dataclasses import replace
    from hpo.execution.supernet import Shape, family_of, stack_of
    HINT = replace(Shape.of(stack_of(build(**cases["largest"]), 64)),
                   family=family_of(["relu", "gelu", "tanh", "sigmoid", "silu"]))
    out, nets = {}, set()
    for name, kw in cases.items():
        mine, steps, pred, saved, net = train(True, **kw)
        nets.add(id(net))
        plain = train(False, **kw)[0]
        skip = ("pre_bn/bias", "moving_mean", "opt") if kw.get("bn") else ()
        out[name] = {"diff": diff(plain, mine, skip), "steps": steps, "pred": pred,
                     "units": [l.units for l in saved.layers if isinstance(l, keras.layers.Dense)],
                     "classes": sorted({type(l).__name__ for l in saved.layers})}
    out["supernets"] = len(nets)
    # an activation outside the family: the supernet grows (one more compilation) and stays exact
    mine, steps = train(True, units=64, layers=2, act="elu")[:2]
    out["grown"] = {"diff": diff(train(False, units=64, layers=2, act="elu")[0], mine), "steps": steps}
    # RMSprop instead of Adam: the same supernet (its optimizer switches between Keras' two), RMSprop's numbers
    mine, steps = train(True, units=16, layers=2, opt="rmsprop", lr=2e-3, act="tanh")[:2]
    out["rmsprop"] = {"diff": diff(train(False, units=16, layers=2, opt="rmsprop", lr=2e-3, act="tanh")[0], mine),
                      "steps": steps}
    # an optimizer setting outside the switch (Adam's beta_1): its own supernet
    def other_adam(**kw):
        m = build(**kw)
        m.compile(optimizer=keras.optimizers.Adam(1e-3, beta_1=0.8), loss=m.loss, weighted_metrics=["accuracy"])
        return m
    with host_initialisers():
        net = supernet_twin(other_adam(units=16, layers=1), 64, steps=45, hint=HINT)
    out["other_adam_new_supernet"] = id(net) not in nets

    # a last partial batch (950 = 14 x 64 + 54) with batch norm: the supernet trains it padded (NaN rows its batch
    # statistics leave out, one train step) to the weights the unpadded model reaches; the same shuffle for both
    from hpo.execution.shapes import PaddedEpochs, padding_fill, trains_padded_safely

    def padded(supernet, **kw):
        with host_initialisers():
            m = build(**kw)
            t = supernet_twin(m, 64, steps=45, hint=HINT) if supernet else m
        compiled.clear()
        keras.utils.set_random_seed(5)
        t.fit(PaddedEpochs(x[:950], y[:950], 64, seed=3, pad=supernet, fill=padding_fill(t)), epochs=3,
              shuffle=False, verbose=0)  # as trials fit it: the batches in the dataset's own order
        return (named(user_model(t) if supernet else t),
                [f for f in compiled if "train_step" in f], trains_padded_safely(t))

    mine, steps, safe = padded(True, units=48, layers=2, bn=True, act="relu")
    plain = padded(False, units=48, layers=2, bn=True, act="relu")[0]
    out["bn_padded"] = {"diff": diff(plain, mine, ("pre_bn/bias", "moving_mean")), "steps": steps,
                        "safe": safe, "plain_safe": padded(False, units=48, layers=1, bn=True)[2]}

    # trials of the built-in mlp space: the first builds the supernet of the space's largest stack
    from hpo.config import from_dict
    from hpo.execution.trial import TrialSettings, run_trial
    from hpo.study.prepare import prepare

    cfg = from_dict({"study": {"name": "s"}, "data": {"dataset": "digits"}, "space": {"builder": "mlp",
                     "params": {"layers": {"min": 1, "max": 3}, "units": {"min": 16, "max": 128, "log": True}}},
                     "training": {"epochs": 2}})
    build_fn, splits, space = prepare(cfg)
    tmp = Path(tempfile.mkdtemp())

    def trial(i, **kw):
        compiled.clear()
        params = {**space.defaults(), "optimizer": "adam", **kw}
        r = run_trial(number=i, params=params, seed=7, build=build_fn, space=space, splits=splits,
                      settings=TrialSettings(epochs=2), trial_dir=tmp / str(i))
        assert r.state.name == "COMPLETE", r.error
        m = keras.saving.load_model(r.model_path, safe_mode=True)
        with np.load(r.predictions_path) as f:
            logits = f["test/digit"]
        return {"compiled": [f for f in compiled if "step" in f or "predict" in f],
                "units": [l.units for l in m.layers if isinstance(l, keras.layers.Dense)],
                "classes": sorted({type(l).__name__ for l in m.layers}),
                "logits_diff": float(np.abs(logits - np.asarray(m.predict(splits.x["test"], verbose=0))).max())}

    out["trial_a"] = trial(0, layers=1, units=20, activation="tanh", batchnorm=False, dropout=0.0)
    out["trial_b"] = trial(1, layers=3, units=100, activation="gelu", batchnorm=True, dropout=0.2)
    out["trial_c"] = trial(2, layers=2, units=50, activation="relu", batchnorm=False, dropout=0.1,
                           use_l2=True, l2=1e-3)
    print("RESULT" + json.dumps(out))
""")


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_jax_script(JAX_SCRIPT, tmp_path_factory.mktemp("supernet"), timeout=1200)


@pytest.mark.parametrize("case", ["one_block_l2", "tanh_two_blocks", "bn_relu", "inline_sigmoid", "dropout_silu",
                                  "narrow_dropout"])
def test_a_stack_trains_in_the_supernet_to_its_own_models_weights_compiling_nothing(
        jax_run: dict[str, Any], case: str) -> None:
    out = jax_run[case]
    assert out["diff"] < 1e-5, out  # weights, seed states and optimizer slots as its own model's
    assert out["steps"] == [], out  # the supernet's train step, compiled for the first (largest) stack
    assert out["pred"] < 1e-5  # the saved model predicts as the supernet did
    assert "TemplateDense" not in out["classes"] and "SwitchActivation" not in out["classes"]


def test_the_first_stack_compiles_one_supernet_for_all(jax_run: dict[str, Any]) -> None:
    assert jax_run["largest"]["steps"] and jax_run["largest"]["diff"] < 1e-5
    assert jax_run["supernets"] == 1
    assert jax_run["one_block_l2"]["units"] == [40, 10] and jax_run["inline_sigmoid"]["units"] == [33, 33, 10]
    assert jax_run["rmsprop"]["steps"] == [] and jax_run["rmsprop"]["diff"] < 1e-5
    assert jax_run["other_adam_new_supernet"]
    assert jax_run["grown"]["steps"] and jax_run["grown"]["diff"] < 1e-5  # elu: grown, compiled, exact


def test_a_padded_last_batch_trains_batch_norm_as_the_unpadded_one(jax_run: dict[str, Any]) -> None:
    out = jax_run["bn_padded"]
    assert out["safe"] and not out["plain_safe"]  # the user's own BatchNormalization is never trained padded
    # one train step shape (compiled here at most once more: these batches carry sample weights, the earlier
    # cases' did not); unpadded, the last batch would be a second shape
    assert len(out["steps"]) <= 1, out
    assert out["diff"] < 1e-5, out  # kernels, gamma, beta, moving variances: the unpadded model's


def test_trials_of_new_structures_compile_nothing_after_the_first(jax_run: dict[str, Any]) -> None:
    a, b, c = jax_run["trial_a"], jax_run["trial_b"], jax_run["trial_c"]
    # the first trial compiles the supernet of the space's largest stack (3 blocks of 128, batch norm; its last
    # partial batch padded: one train step) and the program that scores and predicts
    assert sorted(a["compiled"]) == ["jit(score_and_predict)", "jit(train_step)"], a
    assert b["compiled"] == [] and c["compiled"] == [], (b, c)  # deeper, wider, batch norm, gelu, L2: covered
    assert a["units"] == [20, 10] and b["units"] == [100, 100, 100, 10] and c["units"] == [50, 50, 10]
    assert "BatchNormalization" in b["classes"] and "BatchNormalization" not in c["classes"]
    for t in (a, b, c):
        assert t["logits_diff"] < 1e-5  # predictions.npz (from the supernet) match the saved user model's


def _stack(*blocks: list[Any], head: Any = None, optimizer: Any = "adam") -> keras.Model:
    i = keras.Input((8,))
    h = i
    for block in blocks:
        for layer in block:
            h = layer(h)
    m = keras.Model(i, (head or keras.layers.Dense(3))(h))
    m.compile(optimizer=optimizer, loss="mse")
    return m


def test_dense_stacks_are_recognised_and_nothing_else() -> None:
    L = keras.layers
    ok = _stack([L.Dense(12), L.BatchNormalization(), L.Activation("gelu"), L.Dropout(0.1)],
                [L.Dense(9, activation="relu")])
    s = stack_of(ok, 32)
    assert s is not None and s.widths == [12, 9] and [b.activation for b in s.blocks] == ["gelu", "relu"]
    assert s.blocks[0].bn is not None and s.blocks[1].dropout is None
    # same key across depth, widths, activations, batch norm, dropout and Adam/RMSprop; not across batch size or
    # an optimizer's settings outside the switch
    other = stack_of(_stack([L.Dense(30), L.Activation("tanh")]), 32)
    assert other is not None and other.key == s.key
    assert stack_of(ok, 64).key != s.key
    assert stack_of(_stack([L.Dense(30)], optimizer="rmsprop"), 32).key == s.key
    assert stack_of(_stack([L.Dense(30)], optimizer="sgd"), 32).key != s.key
    assert stack_of(_stack([L.Dense(30)], optimizer=keras.optimizers.Adam(clipnorm=1.0)), 32).key != s.key
    for blocks in ([L.Dense(12), L.Activation("relu"), L.BatchNormalization()],  # BN after the activation
                   [L.Dense(12), L.LayerNormalization()],
                   [L.Dense(12, activation="softmax")],
                   [L.Dense(12, kernel_regularizer=keras.regularizers.L1(1e-3))],
                   [L.Dense(12), L.Dropout(0.2, noise_shape=(None, 1))]):
        assert stack_of(_stack(blocks), 32) is None, blocks
    assert stack_of(_stack([L.Dense(12)], optimizer=keras.optimizers.Adafactor()), 32) is None
    seq = keras.Input((None, 8))  # a Dense over a sequence: not a stack
    unknown = keras.Model(seq, L.Dense(3)(L.Dense(4)(seq)))
    unknown.compile(optimizer="adam", loss="mse")
    assert stack_of(unknown, 32) is None
    image = keras.Input((4, 4, 1))  # flattened first: a stack
    flat = keras.Model(image, L.Dense(3)(L.Dense(4, activation="relu")(L.Flatten()(image))))
    flat.compile(optimizer="adam", loss="mse")
    assert stack_of(flat, 32) is not None
    seq_model = keras.Sequential([keras.Input((8,)), L.Dense(16, activation="relu"), L.Dropout(0.1), L.Dense(3)])
    seq_model.compile(optimizer="adam", loss="mse")
    assert stack_of(seq_model, 32).widths == [16]  # Sequential too
    i = keras.Input((8,))
    h = L.Dense(8)(i)
    residual = keras.Model(i, L.Dense(3)(L.Add()([h, i])))
    residual.compile(optimizer="adam", loss="mse")
    assert stack_of(residual, 32) is None


def test_a_supernet_covers_smaller_stacks_and_grows_only_where_cheaper_than_a_compilation() -> None:
    L = keras.layers
    small = stack_of(_stack([L.Dense(12), L.Activation("relu")]), 32)
    big = stack_of(_stack(*[[L.Dense(100), L.BatchNormalization(), L.Activation("tanh"), L.Dropout(0.2)]
                            for _ in range(3)]), 32)
    assert small is not None and big is not None
    s_big = Shape.of(big)
    assert (s_big.depth, s_big.width, s_big.bn, s_big.family) == (3, 128, (True,) * 3, (*FAMILY, "tanh"))
    assert not s_big.covers(small)  # relu: not in its family
    s_big = s_big.union(Shape.of(small))
    assert s_big.covers(small) and not Shape.of(small).covers(big) and set(s_big.family) == {"linear", "relu", "tanh"}
    assert Shape.of(small).union(s_big) is not None and Shape.of(small).union(s_big).covers(big)
    # a few hundred steps: the largest stack as a hint is worth it; millions of steps: the trial's own shape
    assert covering_shape([], small, 200, "cpu", hint=s_big) == (s_big, False)
    assert covering_shape([], small, 10**7, "cpu", hint=s_big) == (Shape.of(small), False)
    assert covering_shape([s_big], small, 200, "cpu") == (s_big, True)


@pytest.mark.slow
def test_the_readme_quickstart_under_jax_saves_each_trials_own_model(tmp_path: Path) -> None:
    """``hpo run experiments/quickstart.yaml`` as a user runs it (default tracking, executor and ensemble) with
    ``KERAS_BACKEND=jax``: its trials train in supernets, yet each saves a model of its own depth, width and
    batch normalisation, 12 distinct configurations complete, and the ensemble is no worse than its best trial."""
    run_dir = tmp_path / "runs" / "quickstart"
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "HPO_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run([sys.executable, "-m", "hpo.cli", "run", "experiments/quickstart.yaml", "--run-dir",
                           str(run_dir)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in sorted(run_dir.glob("trials/*/result.json"))]
    assert len(results) == 12 and all(r["state"] == "COMPLETE" for r in results)
    assert len({json.dumps(r["params"], sort_keys=True) for r in results}) == 12
    for r in results:
        p, m = r["params"], keras.saving.load_model(r["model_path"], safe_mode=True)
        dense = [la for la in m.layers if isinstance(la, keras.layers.Dense)]
        assert [la.units for la in dense] == [p["units"]] * p["layers"] + [10], (p, [la.units for la in dense])
        assert any(isinstance(la, keras.layers.BatchNormalization) for la in m.layers) == p["batchnorm"]
        assert type(m.optimizer).__name__.lower() == p["optimizer"]  # the user's Adam or RMSprop, not the switch
        assert r["measures"]["params"] == m.count_params()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["ensemble"]["metrics"]["select_accuracy"] >= summary["best_select"] - 1e-6
