"""Searches that pack trials sharing an architecture into one model (executor.pack)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hpo.errors import ConfigError
from hpo.execution.packed import SHAPE_PARAMS
from hpo.study import run_study
from tests.conftest import ROOT, small_config

QUIET = dict(plots={"enabled": False}, report={"enabled": False}, guards={"enabled": False})
NO_BATCHNORM = {"builder": "mlp", "params": {"layers": {"min": 1, "max": 2}, "units": {"min": 16, "max": 64, "log": True},
                                             "batchnorm": {"fixed": False}}}


def _results(run_dir: Path) -> dict[int, dict[str, Any]]:
    return {int(p.parent.name): json.loads(p.read_text()) for p in (run_dir / "trials").glob("*/result.json")}


def test_optuna_packs_trials_that_keep_their_own_records_models_and_ensemble(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, study={"n_trials": 8}, training={"epochs": 3}, executor={"pack": 4}, space=NO_BATCHNORM,
                       ensemble={"enabled": True, "size": 3}, **QUIET)
    summary = run_study(cfg)
    assert summary.n_complete == 8
    res = _results(tmp_path / "run")
    packs = {tuple(r["pack"]) for r in res.values()}
    assert packs == {(0, 1, 2, 3), (4, 5, 6, 7)}, packs
    for pack in packs:
        shapes = {tuple(res[n]["params"].get(k) for k in SHAPE_PARAMS) for n in pack}
        assert len(shapes) == 1, f"pack {pack} mixes architectures: {shapes}"
        rates = {res[n]["params"]["learning_rate"] for n in pack}
        assert len(rates) == len(pack), "the sampler chose each member's learning rate"
    for n, r in res.items():
        assert len(r["history"]["val_accuracy"]) == 3 and len(r["history"]["audit_accuracy"]) == 3
        assert r["value"] == r["metrics"]["select_accuracy"] == r["history"]["val_accuracy"][-1]
    # Each saved model is its member: plain Keras layers, loaded in a fresh process, reproducing the saved logits.
    check = (
        "import sys, numpy as np, keras\n"
        "from hpo.data import load_dataset\n"
        "s = load_dataset('digits', seed=0)\n"
        "m = keras.saving.load_model(sys.argv[1], safe_mode=True, compile=False)\n"
        "assert not any('Packed' in type(l).__name__ for l in m.layers)\n"
        "z = np.asarray(m.predict(s.x['test'], verbose=0))\n"
        "ref = np.load(sys.argv[2])['test/digit']\n"
        "assert np.allclose(z, ref, atol=1e-4), float(np.abs(z - ref).max())\n"
        "print('same logits')\n"
    )
    r5 = res[5]
    out = subprocess.run([sys.executable, "-c", check, r5["model_path"], r5["predictions_path"]], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "same logits" in out.stdout, out.stderr[-2000:]
    assert summary.ensemble is not None and Path(summary.ensemble["artifact_dir"]).exists()
    import mlflow

    client = mlflow.MlflowClient(summary.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("t").experiment_id], "tags.`hpo.kind` = 'trial'")
    assert len(runs) == 8
    for run in runs:
        n = int(run.data.tags["hpo.trial"])
        assert run.data.tags["hpo.pack"] == ",".join(str(m) for m in res[n]["pack"])
        steps = client.get_metric_history(run.info.run_id, "epoch_select_accuracy")
        assert [m.step for m in steps] == [0, 1, 2]


def test_worker_processes_train_packs_with_the_records_of_in_process_packs(tmp_path: Path) -> None:
    """executor.pack with two worker processes: each worker trains whole packs; every trial keeps its own
    configuration, result, logits and MLflow run, tagged with its pack, as packs in the study's process do."""
    pools: list[Any] = []
    seen: dict[int, int] = {}  # trial -> pid of the worker process that trained it

    def on_epoch_end(number: int, epoch: int, total: int, logs: Any) -> None:
        seen.update(pools[0].pids())

    cfg = small_config(tmp_path, study={"n_trials": 8}, training={"epochs": 2}, space=NO_BATCHNORM,
                       executor={"pack": 2, "mode": "processes", "cpu_workers": 2, "threads_per_worker": 1},
                       ensemble={"enabled": False}, **QUIET)
    summary = run_study(cfg, on_pool=pools.append, on_epoch_end=on_epoch_end)
    assert summary.n_complete == 8
    res = _results(tmp_path / "run")
    packs = {tuple(r["pack"]) for r in res.values()}
    assert packs == {(0, 1), (2, 3), (4, 5), (6, 7)}, packs
    configs = {json.dumps(r["params"], sort_keys=True) for r in res.values()}
    assert len(configs) == 8, "every trial trained its own configuration"
    for pack in packs:
        assert len({tuple(res[n]["params"].get(k) for k in SHAPE_PARAMS) for n in pack}) == 1, pack
        assert len({seen[n] for n in pack}) == 1, f"pack {pack} trained in one worker process"
    assert len(set(seen.values())) == 2, "both workers trained packs"
    assert os.getpid() not in seen.values()
    for r in res.values():
        assert len(r["history"]["val_accuracy"]) == 2 and r["value"] == r["metrics"]["select_accuracy"]
        assert np.load(r["predictions_path"])["test/digit"].shape[-1] == 10 and Path(r["model_path"]).exists()
    import mlflow

    client = mlflow.MlflowClient(summary.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("t").experiment_id], "tags.`hpo.kind` = 'trial'")
    assert len(runs) == 8
    for run in runs:
        n = int(run.data.tags["hpo.trial"])
        assert run.info.status == "FINISHED"
        assert run.data.tags["hpo.pack"] == ",".join(str(m) for m in res[n]["pack"])
        assert [m.step for m in client.get_metric_history(run.info.run_id, "epoch_select_accuracy")] == [0, 1]


def test_a_worker_killed_mid_pack_fails_its_members_and_the_study_goes_on(tmp_path: Path) -> None:
    pools: list[Any] = []
    killed: list[int] = []

    def on_epoch_end(number: int, epoch: int, total: int, logs: Any) -> None:
        if number == 0 and not killed:
            assert pools[0].kill(number)
            killed.append(number)

    cfg = small_config(tmp_path, study={"n_trials": 4}, training={"epochs": 3}, space=NO_BATCHNORM,
                       executor={"pack": 2, "mode": "processes", "cpu_workers": 1, "threads_per_worker": 1},
                       ensemble={"enabled": False}, **QUIET)
    summary = run_study(cfg, on_pool=pools.append, on_epoch_end=on_epoch_end)
    states = {t["number"]: t for t in summary.trials}
    assert states[0]["state"] == states[1]["state"] == "FAILED"
    assert all("died: killed by SIGKILL" in states[n]["error"] for n in (0, 1))
    assert states[2]["state"] == states[3]["state"] == "COMPLETE", "a new worker trained the next pack"


def test_pruned_member_stops_reporting_while_its_pack_trains_on(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, study={"n_trials": 12}, training={"epochs": 4}, executor={"pack": 4}, space=NO_BATCHNORM,
                       driver={"sampler": "random", "pruner": "median"}, ensemble={"enabled": False}, **QUIET)
    summary = run_study(cfg)
    res = _results(tmp_path / "run")
    pruned = [r for r in res.values() if r["state"] == "PRUNED"]
    assert pruned, "the median pruner pruned no member of the later packs"
    early = 0
    for r in pruned:
        # the pruner may also answer at the last epoch (as Optuna's own Keras callback does): a member pruned at
        # epoch k has trained and reported exactly k epochs
        found = re.search(r"pruned at epoch (\d+)", r["error"] or "")
        assert found and r["epochs"] == int(found.group(1)), r
        mates = [res[n] for n in r["pack"] if res[n]["state"] == "COMPLETE"]
        assert all(m["epochs"] == 4 for m in mates)
        early += r["epochs"] < 4 and bool(mates)
    assert early, "no member was pruned before the last epoch while a pack mate trained on"
    assert summary.n_complete + len(pruned) == 12


def test_hyperopt_packs_trials_whose_space_fixes_the_architecture(tmp_path: Path) -> None:
    space = {"builder": "mlp", "params": {"layers": {"fixed": 1}, "units": {"fixed": 32}, "activation": {"fixed": "relu"},
                                          "optimizer": {"fixed": "adam"}, "batchnorm": {"fixed": False}}}
    cfg = small_config(tmp_path, driver={"name": "hyperopt"}, space=space, study={"n_trials": 6},
                       executor={"pack": 3}, ensemble={"enabled": False}, **QUIET)
    summary = run_study(cfg)
    assert summary.n_complete == 6
    assert {tuple(r["pack"]) for r in _results(tmp_path / "run").values()} == {(0, 1, 2), (3, 4, 5)}


def test_batch_normalized_trials_pack_and_save_their_own_models(tmp_path: Path) -> None:
    """Trials with batch normalization pack together (each member its own batch statistics) and each saves a plain
    Keras model with its BatchNormalization layers and moving statistics, reproducing its saved logits."""
    space = {"builder": "mlp", "params": {"layers": {"fixed": 2}, "activation": {"fixed": "relu"},
                                          "optimizer": {"fixed": "adam"}, "batchnorm": {"fixed": True}}}
    cfg = small_config(tmp_path, driver={"name": "hyperopt"}, space=space, study={"n_trials": 4},
                       executor={"pack": 2}, ensemble={"enabled": False}, **QUIET)
    summary = run_study(cfg)
    assert summary.n_complete == 4
    res = _results(tmp_path / "run")
    assert {tuple(r["pack"]) for r in res.values()} == {(0, 1), (2, 3)}
    import keras

    from hpo.data import load_dataset

    x = load_dataset("digits", seed=0).x["test"]
    for r in res.values():
        assert r["params"]["batchnorm"] is True
        model = keras.saving.load_model(r["model_path"], compile=False)
        bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
        assert [b.name for b in bns] == ["bn_0", "bn_1"]
        # the member's own moving statistics came along
        assert np.abs(keras.ops.convert_to_numpy(bns[0].moving_variance) - 1).max() > 1e-3
        z = np.asarray(model.predict(x, verbose=0))
        np.testing.assert_allclose(z, np.load(r["predictions_path"])["test/digit"], atol=1e-4)


@pytest.mark.parametrize("change, field", [
    (dict(space={"builder": "convnet", "params": {}}), "executor.pack"),
    (dict(training={"early_stopping_patience": 2}), "training.early_stopping_patience"),
    (dict(training={"callbacks": [{"name": "TerminateOnNaN"}]}), "training.callbacks"),
    (dict(executor={"pack": 0}), "executor.pack"),
])
def test_a_study_that_cannot_pack_is_refused_before_any_trial(tmp_path: Path, change: dict[str, Any], field: str) -> None:
    sections: dict[str, Any] = {"executor": {"pack": 4}, **QUIET}
    for k, v in change.items():
        sections[k] = {**sections.get(k, {}), **v}
    with pytest.raises(ConfigError) as err:
        run_study(small_config(tmp_path, **sections))
    assert err.value.field == field, str(err.value)
    assert not (tmp_path / "run" / "trials").exists()


def test_packed_and_single_trials_agree_on_what_a_trial_records(tmp_path: Path) -> None:
    """A packed trial's result.json has every key a normal trial's has, so reports and ensembles read both."""
    single = run_study(small_config(tmp_path / "a", study={"n_trials": 1}, ensemble={"enabled": False}, **QUIET))
    packed = run_study(small_config(tmp_path / "b", study={"n_trials": 2}, executor={"pack": 2},
                                    ensemble={"enabled": False}, **QUIET))
    a = _results(tmp_path / "a" / "run")[0]
    b = _results(tmp_path / "b" / "run")[0]
    assert set(a) == set(b)
    assert set(a["metrics"]) <= set(b["metrics"]) | {"select_loss", "audit_loss"}
    assert set(a["history"]) == set(b["history"])
    assert single.n_complete == 1 and packed.n_complete == 2
    assert np.load(b["predictions_path"])["test/digit"].shape == np.load(a["predictions_path"])["test/digit"].shape


def test_cli_pack_flag_is_validated_before_anything_runs(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "hpo.cli", "run", str(ROOT / "experiments" / "quickstart.yaml"),
                          "--pack", "0", "--run-dir", str(tmp_path / "run"), "--quiet"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2  # the CLI's exit status for a bad config
    assert "executor.pack" in out.stdout + out.stderr
    assert not (tmp_path / "run").exists()
