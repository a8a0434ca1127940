"""Packs compile once per shape and reuse their compiled model (issue 23): under JAX a pack compiles one train
step and one predict step whatever its member count, a later pack of the same held shapes with other widths,
learning rates, dropout rates, L2 factors and seeds compiles nothing and trains exactly as its own model would,
and what it saves for each member carries that member's own values and widths. Run in a subprocess with ``KERAS_BACKEND=jax``."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.jax_script import run_jax_script


JAX_SCRIPT = textwrap.dedent("""
    import json, tempfile
    from pathlib import Path
    from jax import monitoring
    compiled = []
    monitoring.register_event_duration_secs_listener(
        lambda e, d, **k: compiled.append(k.get("fun_name")) if e == "/jax/core/compile/backend_compile_duration" else None)
    import keras
    import numpy as np
    from hpo.config import from_dict
    from hpo.execution.packed import train_pack
    from hpo.execution.packed.reuse import clear_pack_twins
    from hpo.execution.trial import TrialSettings
    from hpo.study.prepare import prepare

    cfg = from_dict({"study": {"name": "s"}, "data": {"dataset": "digits"}, "space": {"builder": "mlp"},
                     "training": {"epochs": 2}})
    build, splits, space = prepare(cfg)
    base = {**space.defaults(), "layers": 2, "units": 24, "use_l2": True}
    tmp = Path(tempfile.mkdtemp())
    out = {}

    def pack(tag, lrs, dropouts, l2s, seeds, units):
        params = [{**base, "learning_rate": lr, "dropout": d, "l2": l2, "units": u}
                  for lr, d, l2, u in zip(lrs, dropouts, l2s, units)]
        dirs = [tmp / tag / str(i) for i in range(len(params))]
        compiled.clear()
        results = train_pack(numbers=list(range(len(params))), params=params, seeds=seeds,
                             listeners=[lambda e, logs: None] * len(params), trial_dirs=dirs, splits=splits,
                             settings=TrialSettings(epochs=2, batch_size=64))
        assert all(r.state.name == "COMPLETE" for r in results), [r.error for r in results]
        names = list(compiled)
        logits = [np.load(r.predictions_path)["test/digit"] for r in results]
        saved = []
        for r in results:
            m = keras.saving.load_model(r.model_path, compile=True)
            drop = [l.rate for l in m.layers if isinstance(l, keras.layers.Dropout)]
            widths = [l.units for l in m.layers if isinstance(l, keras.layers.Dense)]
            l2 = [float(l.kernel_regularizer.l2) for l in m.layers
                  if isinstance(l, keras.layers.Dense) and l.kernel_regularizer is not None]
            saved.append({"dropout": drop, "l2": l2, "units": widths, "lr": float(keras.ops.convert_to_numpy(m.optimizer.learning_rate))})
        return names, logits, [r.value for r in results], [r.history["loss"] for r in results], saved

    # once per process (Keras' loss tracker, its optimizer's step counter), not per pack: paid here
    pack("warm", [1e-3, 1e-3], [0.1, 0.1], [1e-4, 1e-4], [8, 9], [16, 16])
    # members of different widths pack together, held at 32 units (the next power of two of the widest)
    out["first"] = pack("a", [1e-3, 3e-3, 1e-2], [0.1, 0.2, 0.3], [1e-4, 1e-3, 1e-5], [1, 2, 3], [20, 30, 24])[0]
    b_names, b_logits, b_values, b_loss, b_saved = pack("b", [5e-3, 2e-3, 4e-4], [0.25, 0.05, 0.4],
                                                        [2e-3, 3e-5, 5e-4], [4, 5, 6], [17, 32, 25])
    out["reused"], out["saved"] = b_names, b_saved
    clear_pack_twins()  # the same pack on a packed model built and compiled for it
    _, f_logits, f_values, f_loss, _ = pack("f", [5e-3, 2e-3, 4e-4], [0.25, 0.05, 0.4], [2e-3, 3e-5, 5e-4], [4, 5, 6],
                                            [17, 32, 25])
    out["reused_minus_fresh"] = max(float(np.abs(a - b).max()) for a, b in zip(b_logits, f_logits))
    out["loss_diff"] = max(abs(a - b) for x, y in zip(b_loss, f_loss) for a, b in zip(x, y))
    out["values"] = [b_values, f_values]
    # batch normalization: no padded last batch (its rows would enter the batch statistics), and a later pack on the
    # compiled model starts from fresh moving statistics (0 and 1) and trains exactly as its own model would
    base["batchnorm"] = True
    out["bn_first"] = pack("bn1", [1e-3, 3e-3], [0.1, 0.2], [1e-4, 1e-3], [11, 12], [20, 30])[0]
    bn_args = ([2e-3, 5e-3], [0.3, 0.1], [3e-4, 1e-5], [13, 14], [25, 17])
    out["bn_reused"], r_logits, r_values = pack("bn2", *bn_args)[:3]
    clear_pack_twins()
    f_logits, f_values = pack("bn2f", *bn_args)[1:3]
    out["bn_reused_minus_fresh"] = max(float(np.abs(a - b).max()) for a, b in zip(r_logits, f_logits))
    out["bn_values"] = [r_values, f_values]
    out["train_rows"] = len(splits.y["train"])
    # the padded last batch (NaN rows, left out of each member's batch statistics) trains as the unpadded one
    from hpo.execution.packed import PackedMLPSpec, build_packed_mlp
    from hpo.execution.packed.search import fit_pack
    from hpo.execution.shapes import PaddedEpochs
    from hpo.execution.xla import host_initialisers
    xs, ys = splits.x["train"].reshape(len(splits.x["train"]), -1).astype("float32"), splits.y["train"]
    spec = PackedMLPSpec.from_params([{**base, "units": 24, "dropout": 0.0, "use_l2": False}] * 2,
                                     input_shape=(xs.shape[1],), n_classes=10, seeds=[21, 22], head_name="digit")
    trained = []
    for padded in (True, False):
        with host_initialisers():
            model = build_packed_mlp(spec)
        keras.utils.set_random_seed(3)
        if padded:
            fit_pack(model, spec, xs, ys, epochs=2, batch_size=64)
        else:
            model.fit(PaddedEpochs(xs, ys, 64, seed=int(np.random.randint(2**31 - 1)), pad=False), epochs=2,
                      shuffle=False, verbose=0)
        trained.append({v.path: np.asarray(v) for v in model.variables if "dense" not in v.path or "kernel" in v.path
                        or "digit" in v.path})
    out["bn_padded_minus_unpadded"] = {k: float(np.abs(trained[0][k] - trained[1][k]).max()) for k in trained[0]
                                       if "moving_mean" not in k}
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.slow
def test_packs_compile_once_per_shape_and_reuse_exactly(tmp_path: Path) -> None:
    out = run_jax_script(JAX_SCRIPT, tmp_path)
    # a pack of new shapes and member count: its train step and its predict step (select, audit and test padded to one size)
    assert sorted(out["first"]) == ["jit(predict_step)", "jit(train_step)"], out["first"]
    # the same held shapes with other widths, rates, L2 factors, learning rates and seeds: nothing compiles ...
    assert out["reused"] == [], out["reused"]
    # ... and it trains exactly as a packed model built and compiled for those values
    assert out["reused_minus_fresh"] < 1e-5 and out["loss_diff"] < 1e-5, out
    assert out["values"][0] == pytest.approx(out["values"][1], abs=1e-6)
    # each member saved from the reused model carries its own values, not the first pack's
    assert [s["dropout"] for s in out["saved"]] == [[0.25, 0.25], [0.05, 0.05], [0.4, 0.4]]
    assert [s["units"] for s in out["saved"]] == [[17, 17, 10], [32, 32, 10], [25, 25, 10]]
    assert [s["l2"] for s in out["saved"]] == [[pytest.approx(v)] * 2 for v in (2e-3, 3e-5, 5e-4)]
    assert [s["lr"] for s in out["saved"]] == [pytest.approx(v) for v in (5e-3, 2e-3, 4e-4)]
    # batch normalization: the last partial batch is padded too (its NaN rows stay out of the batch statistics),
    # one train step; a second pack compiles nothing and equals a pack trained on its own freshly built model
    # (moving statistics reset)
    assert out["train_rows"] % 64 and sorted(out["bn_first"]) == ["jit(predict_step)", "jit(train_step)"], \
        out["bn_first"]
    # and the padded pack trains to the unpadded pack's kernels, head, gamma, beta and moving variances (the
    # hidden Dense biases before the normalisation have no gradient and pick up rounding noise, as the moving
    # means that follow them)
    diffs = out["bn_padded_minus_unpadded"]
    assert len(diffs) >= 8 and max(diffs.values()) < 1e-5, diffs
    assert out["bn_reused"] == [] and out["bn_reused_minus_fresh"] < 1e-5, out
    assert out["bn_values"][0] == pytest.approx(out["bn_values"][1], abs=1e-6)


STUDY_SCRIPT = textwrap.dedent("""
    import json, time
    from pathlib import Path
    from jax import monitoring
    events = []
    monitoring.register_event_duration_secs_listener(
        lambda e, d, **k: events.append((time.monotonic(), k.get("fun_name")))
        if e == "/jax/core/compile/backend_compile_duration" else None)
    import hpo.execution.packed as packed
    from hpo.config import from_dict
    from hpo.study import run_study

    windows, inner = [], packed.train_pack

    def timed(**kw):
        t0 = time.monotonic()
        res = inner(**kw)
        windows.append((t0, time.monotonic(), [p["units"] for p in kw["params"]]))
        return res

    packed.train_pack = timed
    cfg = from_dict({"study": {"name": "packs", "seed": 3, "n_trials": 8, "run_dir": str(Path.cwd() / "run")},
                     "data": {"dataset": "digits"},
                     "space": {"builder": "mlp", "params": {
                         "layers": {"fixed": 2}, "units": {"min": 33, "max": 64}, "batchnorm": {"fixed": False},
                         "activation": {"fixed": "relu"}, "optimizer": {"fixed": "adam"},
                         "use_l2": {"fixed": True}, "l2": {"min": 1e-6, "max": 1e-3, "log": True},
                         "dropout": {"min": 0.05, "max": 0.4}}},
                     "training": {"epochs": 2}, "executor": {"pack": 4}})
    summary = run_study(cfg)
    out = {"packs": [{"units": u, "compiled": sorted(f for t, f in events if a <= t < b)} for a, b, u in sorted(windows)],
           "complete": summary.n_complete, "ensemble": bool(summary.ensemble and summary.ensemble.get("members"))}
    print("RESULT" + json.dumps(out))
""")


def test_a_default_packed_jax_study_compiles_its_first_pack_only(tmp_path: Path) -> None:
    """The user's path (``run_study`` with ``executor.pack``, every default else, the ensemble at the end): the
    first pack compiles its two steps and nothing else, the second (other widths, rates and seeds, held at the
    same 64 units) compiles nothing, and the study ends with its 8 trials and an ensemble."""
    out = run_jax_script(STUDY_SCRIPT, tmp_path)
    assert [len(p["units"]) for p in out["packs"]] == [4, 4], out
    assert len({u for p in out["packs"] for u in p["units"]}) > 2, out  # the members differ in width
    assert out["packs"][0]["compiled"] == ["jit(predict_step)", "jit(train_step)"], out
    assert out["packs"][1]["compiled"] == [], out
    assert out["complete"] == 8 and out["ensemble"], out
