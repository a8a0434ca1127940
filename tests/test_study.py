"""End-to-end studies on real data: tracking in MLflow, resume after a kill, failures, reproducibility."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
import pytest
import yaml

from hpo.data import load_ticket_splits
from hpo.study import run_study, search

from .conftest import ROOT, serving, small_config


def test_parent_run_with_child_runs_params_and_epoch_metrics(finished_study: Any) -> None:
    cfg, summary = finished_study
    assert summary.n_complete == 12
    client = mlflow.tracking.MlflowClient(f"sqlite:///{cfg.run_dir.resolve() / 'mlflow.db'}")
    exp = client.get_experiment_by_name("shared")
    mlflow.set_tracking_uri(client.tracking_uri)
    runs = mlflow.search_runs([exp.experiment_id], output_format="list")
    parents = [r for r in runs if r.data.tags.get("hpo.kind") == "study"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["driver"] == "optuna"
    assert "best_select" in parent.data.metrics and "best_test_accuracy" in parent.data.metrics
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
                and r.data.tags.get("hpo.kind") == "trial"]
    results = {int(p.parent.name): json.loads(p.read_text()) for p in (cfg.run_dir / "trials").glob("*/result.json")}
    assert sorted(int(c.data.tags["hpo.trial"]) for c in children) == sorted(results) == list(range(12))
    for child in children:  # each run carries its own trial's configuration, as MLflow params (strings)
        params = results[int(child.data.tags["hpo.trial"])]["params"]
        assert {k: child.data.params[k] for k in params} == {
            k: json.dumps(v) if isinstance(v, bool) else str(v) for k, v in params.items()}
    for child in children:
        assert {"layers", "units", "learning_rate"} <= set(child.data.params)
        assert "select_accuracy" in child.data.metrics and "audit_accuracy" in child.data.metrics
        history = client.get_metric_history(child.info.run_id, "epoch_select_accuracy")
        assert [m.step for m in history] == [0, 1, 2]
        assert child.data.tags["hpo.seed"].isdigit()
    ens = {r.info.run_id: r for r in runs if r.data.tags.get("hpo.kind") == "ensemble"}
    mine = ens[summary.ensemble["mlflow_run_id"]]  # other tests may add more ensembles to this store
    assert mine.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert "test_accuracy" in mine.data.metrics


def test_summary_reports_select_audit_and_locked_test(finished_study: Any) -> None:
    cfg, summary = finished_study
    data = json.loads((cfg.run_dir / "summary.json").read_text())
    assert data["best_trial"] == summary.best_trial
    best = max((t for t in data["trials"] if t["state"] == "COMPLETE"), key=lambda t: t["value"])
    assert best["number"] == summary.best_trial
    assert 0.5 < summary.best_select <= 1 and 0.5 < summary.best_audit <= 1
    assert set(summary.best_test) == {"accuracy", "nll", "ece"}
    assert summary.ensemble and Path(summary.ensemble["artifact_dir"], "ensemble.keras").exists()
    recorded = json.loads((cfg.run_dir / "data.json").read_text())["hashes"]
    assert set(recorded) == {"train", "select", "audit", "test"}


def _cli_env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}


@pytest.mark.slow
def test_killed_study_resumes_without_redoing_finished_trials(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, study={"name": "killme", "n_trials": 7}, ensemble={"enabled": False})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    cmd = [sys.executable, "-m", "hpo.cli", "run", str(path), "--quiet"]
    proc = subprocess.Popen(cmd, env=_cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trials = cfg.run_dir / "trials"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(trials.glob("*/result.json"))) < 3:
        time.sleep(0.05)
        assert proc.poll() is None, "the study ended before it could be killed"
    # Killed as soon as the third result is written, while the fourth trial starts: under JAX a trial of this
    # study takes a few tenths of a second, and waiting half a second more let all seven finish first.
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {p.parent.name: (p.stat().st_mtime_ns, p.read_text()) for p in trials.glob("*/result.json")}
    assert 3 <= len(before) < 7
    done = subprocess.run(cmd, env=_cli_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    after = {p.parent.name: (p.stat().st_mtime_ns, p.read_text()) for p in trials.glob("*/result.json")}
    for name, stamp in before.items():
        assert after[name] == stamp, f"finished trial {name} was redone"
    finished = [json.loads(v[1]) for v in after.values()]
    assert sum(r["state"] == "COMPLETE" for r in finished) == 7
    import optuna

    from hpo.drivers.optuna import resolve_storage

    assert (cfg.run_dir / "optuna.journal").exists() and not (cfg.run_dir / "optuna.db").exists()
    study = optuna.load_study(study_name="killme", storage=resolve_storage(f"journal://{cfg.run_dir / 'optuna.journal'}"))
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 7 and "RUNNING" not in states


@pytest.mark.slow
def test_sigterm_marks_the_running_trial_and_the_study_resumes(tmp_path: Path) -> None:
    # CSVLogger writes a row at each epoch's end: the test sees which trial is training. Under JAX a digits epoch
    # takes hundredths of a second: 40 epochs keep a trial training long enough to be seen mid-way.
    epochs = 40 if keras.backend.backend() == "jax" else 4
    cfg = small_config(tmp_path, study={"name": "termme", "n_trials": 5}, ensemble={"enabled": False},
                       report={"enabled": False}, plots={"enabled": False},
                       training={"epochs": epochs,
                                 "callbacks": [{"name": "CSVLogger", "args": {"filename": "epochs.csv"}}]})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    cmd = [sys.executable, "-m", "hpo.cli", "run", str(path), "--quiet"]
    proc = subprocess.Popen(cmd, env=_cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    trials = cfg.run_dir / "trials"

    def training() -> list[str]:
        """Trials between their first and last epochs, once two trials are recorded."""
        if len(list(trials.glob("*/result.json"))) < 2:
            return []
        return [p.parent.name for p in trials.glob("*/epochs.csv")
                if 2 <= len(p.read_text().splitlines()) <= epochs and not (p.parent / "result.json").exists()]

    deadline = time.monotonic() + 240
    running: list[str] = []
    while time.monotonic() < deadline and not running:
        time.sleep(0.05)
        assert proc.poll() is None, "the study ended before it could be stopped"
        running = training()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "rerun the same command to resume" in err
    client = mlflow.tracking.MlflowClient(f"sqlite:///{cfg.run_dir.resolve() / 'mlflow.db'}")
    exp = client.get_experiment_by_name("termme")
    parent = client.search_runs([exp.experiment_id], filter_string="tags.`hpo.kind` = 'study'")[0]
    assert parent.info.status == "KILLED"
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`hpo.kind` = 'trial'")
    by_trial = {int(r.data.tags["hpo.trial"]): r for r in runs}
    assert len(by_trial) == len(runs), "one MLflow run per trial"
    recorded = {int(p.parent.name) for p in trials.glob("*/result.json")}
    interrupted = {n for n, r in by_trial.items() if r.data.tags.get("hpo.state") == "INTERRUPTED"}
    states = (running, {n: r.data.tags.get("hpo.state") for n, r in by_trial.items()})
    # the trial seen training is the one marked, unless it finished before the signal came (under JAX an epoch of
    # this study takes hundredths of a second): then the one after it, if it had started
    still = {int(n) for n in running} - recorded
    assert interrupted == still if still else len(interrupted) <= 1, states
    assert interrupted == set(by_trial) - recorded, states  # every trial with a run but no result was stopped
    assert all(by_trial[n].info.status == "FAILED" for n in interrupted)
    assert all(by_trial[n].info.status == "FINISHED" for n in recorded) and not recorded & interrupted
    done = subprocess.run(cmd, env=_cli_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((cfg.run_dir / "summary.json").read_text())
    assert summary["n_complete"] == 5, json.dumps(
        {k: v for k, v in summary.items() if k.startswith("n_") or k == "trials"}, default=str)[:4000]


def test_hyperopt_study_completes_and_resumes(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, study={"name": "hy", "n_trials": 3}, driver={"name": "hyperopt", "sampler": "tpe"})
    first = run_study(cfg)
    assert first.n_complete == 3 and first.ensemble is not None
    cfg.study.n_trials = 4
    second = run_study(cfg)
    assert second.n_complete == 4
    numbers = sorted(int(p.parent.name) for p in (cfg.run_dir / "trials").glob("*/result.json"))
    assert numbers == [0, 1, 2, 3]


def test_kerastuner_baseline_driver_runs_a_study(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, study={"name": "kt", "n_trials": 2}, driver={"name": "kerastuner", "sampler": "random"},
                       ensemble={"enabled": False})
    assert run_study(cfg).n_complete == 2


def test_resume_with_another_config_is_refused(tmp_path: Path) -> None:
    from hpo.errors import ConfigError

    cfg = small_config(tmp_path, study={"name": "same", "n_trials": 1}, ensemble={"enabled": False})
    run_study(cfg)
    other = small_config(tmp_path, study={"name": "same", "n_trials": 1}, ensemble={"enabled": False},
                         training={"epochs": 3})
    with pytest.raises(ConfigError) as err:
        run_study(other)
    assert err.value.field == "study.name" and "training" in str(err.value)


def _failing_builder(hp: Any, spec: Any) -> keras.Model:
    """Fails for one activation, produces NaN for another, trains for the third."""
    act = hp.Choice("activation", ["relu", "boom", "nan"])
    if act == "boom":
        raise RuntimeError("builder exploded")
    inp = keras.Input(spec.input_shape)
    x = keras.layers.Dense(8, activation="relu")(inp)
    if act == "nan":
        x = keras.layers.Rescaling(float("nan"))(x)
    out = keras.layers.Dense(spec.n_classes)(x)
    m = keras.Model(inp, out)
    m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return m


def test_failing_and_nan_trials_are_recorded_and_the_study_goes_on(tmp_path: Path) -> None:
    from hpo.data import load_digits_splits

    splits = load_digits_splits()
    cfg = small_config(tmp_path, study={"name": "faults", "n_trials": 3}, driver={"sampler": "grid"},
                       space={"builder": "tests.test_study:_failing_builder", "params": {}})
    summary = run_study(cfg, build=_failing_builder, splits=splits)
    by_act = {t["params"]["activation"]: t for t in summary.trials}
    assert by_act["relu"]["state"] == "COMPLETE"
    assert by_act["boom"]["state"] == "FAILED" and "builder exploded" in by_act["boom"]["error"]
    assert by_act["nan"]["state"] == "FAILED" and "NaN" in by_act["nan"]["error"]
    # Training stops in the epoch the loss turned NaN (2 were asked for), not after the last one.
    assert by_act["nan"]["error"].endswith("at epoch 1")
    assert summary.n_complete == 1 and summary.n_failed == 2
    client = mlflow.tracking.MlflowClient(f"sqlite:///{cfg.run_dir.resolve() / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("faults").experiment_id],
                              filter_string="tags.`hpo.kind` = 'trial'")
    assert sorted(r.info.status for r in runs) == ["FAILED", "FAILED", "FINISHED"]


NAN_STOP_SCRIPT = """
import jax.numpy as jnp
import keras
import numpy as np
from hpo.execution.fitting import TrialSettings, _callbacks

model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
model.compile("adam", "mse", metrics=["mae"])
model.fit(np.ones((8, 4), "float32"), np.ones((8, 3), "float32"), epochs=1, verbose=0)
# The training loop in the middle of an epoch: its last state is held in _jax_state, not in the model, and
# those buffers were just donated to the step now running (deleted here, as donation leaves them).
state = {"trainable_variables": [jnp.array(v.value) for v in model.trainable_variables],
         "non_trainable_variables": [jnp.array(v.value) for v in model.non_trainable_variables],
         "optimizer_variables": [jnp.array(v.value) for v in model.optimizer.variables],
         "metrics_variables": [jnp.array(v.value) for v in model.metrics_variables]}
for arrays in state.values():
    for a in arrays:
        a.delete()
model._jax_state, model._jax_state_synced = state, False
stop = _callbacks(TrialSettings(), None, "val_loss", 0.0, None, {})[0]
stop.set_model(model)
error = None
try:
    stop.on_batch_end(0, {"loss": float("nan")})  # on Keras' callback thread in a real fit
    readable = all(np.isfinite(np.asarray(v.value)).all() for v in model.variables)
except RuntimeError as exc:
    error, readable = str(exc), False
print("RESULT" + json.dumps({"async_safe": bool(stop.async_safe), "stop": bool(model.stop_training),
                             "readable": readable, "error": error}))
"""


def test_nan_stop_on_the_callback_thread_leaves_a_jax_model_whole(tmp_path: Path) -> None:
    """Under JAX, the NaN stop runs on Keras' callback thread while the next train step runs: it must set the flag
    without copying the loop's state into the model (those buffers are donated to that step). It did, through
    ``Callback.model``: a NaN trial after a few others failed with "Array has been deleted" instead of its NaN."""
    from tests.jax_script import run_jax_script

    out = run_jax_script("import json\n" + NAN_STOP_SCRIPT, tmp_path)
    assert out["async_safe"] and out["stop"], out
    assert out["readable"] and out["error"] is None, out


def test_same_seed_same_params_and_metrics(tmp_path: Path) -> None:
    out = []
    for i in range(2):
        cfg = small_config(tmp_path / str(i), study={"name": "rep", "n_trials": 2}, ensemble={"enabled": False})
        s = run_study(cfg)
        out.append([(t["params"], t["value"], t["audit"]) for t in s.trials])
    assert out[0] == out[1]


def test_script_api_with_named_inputs_and_outputs(tmp_path: Path) -> None:
    """A multi-input, multi-output KerasTuner-style builder on dicts of arrays, ensembled per head."""
    splits = load_ticket_splits(n=600)

    def build_model(hp: Any) -> keras.Model:  # an unchanged KerasTuner builder that compiles itself
        inputs = {k: keras.Input((v.shape[1],), name=k) for k, v in splits.x["train"].items()}
        x = keras.layers.Concatenate()(list(inputs.values()))
        x = keras.layers.Dense(hp.Int("units", 8, 32, sampling="log"), activation="relu")(x)
        out = {"priority": keras.layers.Dense(1, name="priority")(x),
               "department": keras.layers.Dense(4, name="department")(x)}
        m = keras.Model(inputs, out)
        m.compile(keras.optimizers.Adam(hp.Float("lr", 1e-3, 1e-2, sampling="log")),
                  loss={"priority": keras.losses.BinaryCrossentropy(from_logits=True),
                        "department": keras.losses.SparseCategoricalCrossentropy(from_logits=True)},
                  metrics={"priority": [keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)],
                           "department": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]})
        return m

    summary = search(
        build_model, splits.x["train"], splits.y["train"], validation_data=(splits.x["select"], splits.y["select"]),
        test_data=(splits.x["test"], splits.y["test"]), name="ticket-api", n_trials=3, epochs=3, batch_size=64,
        objective="department_accuracy", run_dir=tmp_path / "r", heads=splits.spec.heads,
        ensemble={"method": "top_k", "size": 3, "combine": "logits"},
    )
    assert summary.n_complete == 3
    m = summary.ensemble["metrics"]
    assert {"test_priority_accuracy", "test_department_accuracy", "test_department_nll"} <= set(m)
    assert m["test_department_accuracy"] > 0.5


@pytest.mark.parametrize("builder, dataset, metric", [("convnet", "digits", "accuracy"),
                                                      ("ticket", "ticket", "department_accuracy")])
def test_every_builtin_builder_runs_and_ensembles(tmp_path: Path, builder: str, dataset: str, metric: str) -> None:
    cfg = small_config(tmp_path, study={"name": builder, "n_trials": 2}, data={"dataset": dataset},
                       space={"builder": builder, "params": {}}, training={"epochs": 1}, objective={"metric": metric},
                       ensemble={"method": "top_k", "size": 2})
    summary = run_study(cfg)
    assert summary.n_complete == 2
    heads = json.loads((cfg.run_dir / "data.json").read_text())["heads"]
    for h in heads:
        key = f"test_{h['name']}_accuracy" if len(heads) > 1 else "test_accuracy"
        assert key in summary.ensemble["metrics"]


def test_script_api_tf_data_one_hot_labels_and_uncompiled_builder(tmp_path: Path) -> None:
    """A builder that does not compile gets the space's compile; one-hot labels get a categorical loss."""
    import tensorflow as tf

    from hpo.data import load_digits_splits

    s = load_digits_splits()
    onehot = {k: np.eye(10, dtype="float32")[v] for k, v in s.y.items()}

    def build(hp: Any) -> keras.Model:
        return keras.Sequential([keras.Input((64,)), keras.layers.Dense(hp.Int("units", 8, 32), activation="relu"),
                                 keras.layers.Dense(10)])

    train = tf.data.Dataset.from_tensor_slices((s.x["train"], onehot["train"])).batch(64)
    val = tf.data.Dataset.from_tensor_slices((s.x["select"], onehot["select"])).batch(64)
    summary = search(build, train, validation_data=val, test_data=(s.x["test"], onehot["test"]), name="tfdata",
                     n_trials=2, epochs=2, run_dir=tmp_path / "r", ensemble={"method": "top_k", "size": 2})
    assert summary.n_complete == 2
    assert "learning_rate" in summary.best_params  # the space's own compile choices were searched
    assert summary.best_test["accuracy"] > 0.45, summary.best_test  # 0.56 measured (2 trials of 2 epochs); chance 0.1


def test_hpo_ui_serves_the_study_store(finished_study: Any, tmp_path: Path) -> None:
    cfg, summary = finished_study
    with serving(["ui", str(cfg.run_dir)], "/health", tmp_path) as port:
        client = mlflow.tracking.MlflowClient(f"http://127.0.0.1:{port}")
        exp = client.get_experiment_by_name("shared")
        runs = client.search_runs([exp.experiment_id], filter_string="tags.`hpo.kind` = 'trial'")
        assert sorted(int(r.data.tags["hpo.trial"]) for r in runs) == list(range(12))
        assert client.get_run(summary.parent_run_id).data.tags["hpo.kind"] == "study"


def test_cli_prints_progress_per_trial_and_quiet_prints_only_the_summary(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from hpo.cli import main

    cfg = small_config(tmp_path, study={"name": "progress", "n_trials": 2}, training={"epochs": 1},
                       ensemble={"enabled": False}, report={"enabled": False}, plots={"enabled": False})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert main(["run", str(path)]) == 0
    out = capsys.readouterr().out
    assert "[1/2] trial 0 COMPLETE" in out and "[2/2] trial 1" in out
    assert "best=" in out and "eta=" in out and "failed=0 pruned=0" in out
    assert main(["run", str(path), "--quiet", "--n-trials", "3"]) == 0
    quiet = capsys.readouterr().out
    assert "[3/3]" not in quiet and "done in" in quiet and "3 complete" in quiet
