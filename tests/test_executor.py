"""Worker-process executor: same results as in-process, a killed worker fails only its trial, user builders travel."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from hpo.study import run_study
from tests.conftest import small_config

WORKERS = {"mode": "processes", "cpu_workers": 2, "threads_per_worker": 1}


def _values(summary: Any) -> dict[int, tuple[Any, Any, str]]:
    return {t["number"]: (t["params"], t["value"], t["state"]) for t in summary.trials}


def test_two_workers_give_the_in_process_results(tmp_path: Path) -> None:
    common = dict(driver={"sampler": "random"}, study={"n_trials": 4}, ensemble={"enabled": False},
                  plots={"enabled": False}, report={"enabled": False}, guards={"enabled": False})
    inproc = run_study(small_config(tmp_path / "a", executor={"mode": "inprocess", "threads_per_worker": 1}, **common))
    pooled = run_study(small_config(tmp_path / "b", executor=WORKERS, **common))
    a, b = _values(inproc), _values(pooled)
    assert sorted(a) == sorted(b) == [0, 1, 2, 3]
    for n in a:
        assert a[n][0] == b[n][0], f"trial {n} sampled different parameters"
        assert a[n][2] == b[n][2] == "COMPLETE"
        assert b[n][1] == pytest.approx(a[n][1], abs=1e-6), f"trial {n}: select score differs"
    # every trial kept its logits and MLflow child run
    for n in b:
        r = json.loads((tmp_path / "b" / "run" / "trials" / f"{n:05d}" / "result.json").read_text())
        assert Path(r["predictions_path"]).exists() and r["mlflow_run_id"]
    assert not (tmp_path / "b" / "run" / ".executor").exists(), "the payload never lies in the run directory"


def test_killed_worker_fails_its_trial_and_the_study_completes(tmp_path: Path) -> None:
    pools: list[Any] = []
    killed: list[int] = []

    def on_epoch_end(number: int, epoch: int, total: int, logs: Any) -> None:
        if number == 1 and epoch == 1 and not killed:
            assert pools[0].kill(number)
            killed.append(number)

    cfg = small_config(tmp_path, executor=WORKERS, study={"n_trials": 5}, training={"epochs": 3},
                       plots={"enabled": False}, report={"enabled": False})
    summary = run_study(cfg, on_pool=pools.append, on_epoch_end=on_epoch_end)
    assert killed == [1]
    states = {t["number"]: t for t in summary.trials}
    assert states[1]["state"] == "FAILED" and "died: killed by SIGKILL" in states[1]["error"]
    assert summary.n_complete == 4 and summary.n_failed == 1
    assert summary.ensemble is not None and all(m[0] != 1 for m in summary.ensemble["members"])
    import mlflow

    client = mlflow.MlflowClient(summary.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("t").experiment_id], "tags.`hpo.kind` = 'trial'")
    by_number = {int(r.data.tags["hpo.trial"]): r for r in runs}
    assert sorted(by_number) == [0, 1, 2, 3, 4]
    assert by_number[1].info.status == "FAILED"


def _user_builder(hp: Any, parent_pid: int) -> Any:  # a module-level function: workers import it by reference
    import os

    import keras

    units = hp.Int("units", 8, 32, step=8)
    if hp.Boolean("explode", default=False) and os.getpid() != parent_pid:  # only in a worker, never while discovering
        import numpy as np

        np.ones((4096, 1024, 1024), dtype="float32")  # 16 GB: past the worker's memory limit
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(units, activation="relu"), keras.layers.Dense(10)])


def test_out_of_memory_trial_fails_and_its_worker_is_replaced(tmp_path: Path) -> None:
    """The out-of-memory fault: a trial allocating past executor.memory_limit_mb fails; the rest complete."""
    from sklearn.datasets import load_digits

    from hpo.study import search

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    # A closure: travels to the workers by value (cloudpickle).
    import os

    parent = os.getpid()

    def build(hp: Any) -> Any:
        return _user_builder(hp, parent)

    summary = search(build, x[:1200], y[:1200], validation_data=(x[1200:1500], y[1200:1500]),
                     test_data=(x[1500:], y[1500:]), run_dir=tmp_path / "run", n_trials=6, epochs=1, sampler="random",
                     ensemble=False, seed=3, executor={"mode": "processes", "cpu_workers": 1,
                                                       "memory_limit_mb": 3000})
    states = {t["number"]: t for t in summary.trials}
    exploded = [n for n, t in states.items() if t["params"]["explode"]]
    assert exploded, "the seed should sample explode=True at least once"
    for n, t in states.items():
        if n in exploded:
            assert t["state"] == "FAILED" and "MemoryError" in (t["error"] or ""), t
        else:
            assert t["state"] == "COMPLETE", t


def test_seed_refit_trains_the_best_configuration_packed(tmp_path: Path) -> None:
    """ensemble.seed_refit: N seeds of the incumbent in one packed model, logits saved (test's too, for the
    ensemble), scored on select and audit only: the locked test split stays the incumbent's and the ensemble's."""
    import numpy as np

    from ensembles.ledger import test_uses

    cfg = small_config(tmp_path, study={"n_trials": 2}, ensemble={"enabled": False, "seed_refit": 4},
                       space={"params": {"batchnorm": {"fixed": False}}},
                       plots={"enabled": False}, report={"enabled": False}, guards={"enabled": False})
    summary = run_study(cfg)
    sr = summary.seed_refit
    assert sr is not None and "skipped" not in sr, sr
    assert sr["members"] == 4 and sr["params"] == summary.best_params
    z = np.load(sr["predictions"])
    assert z["test/digit"].shape[0] == 4 and z["audit/digit"].shape[0] == 4
    # members differ (different seeds) and the average is scored
    assert not np.allclose(z["test/digit"][0], z["test/digit"][1])
    assert "test" not in sr and set(sr) >= {"select", "audit"}
    assert sr["select"]["logit_average_accuracy"] >= sr["select"]["member_accuracy_min"]
    assert sr["select"]["logit_average_accuracy"] > 0.75, sr["select"]  # chance is 0.1
    assert sr["select"]["member_accuracy_min"] <= sr["select"]["member_accuracy_median"] <= sr["select"]["member_accuracy_max"]
    assert test_uses(cfg.run_dir.resolve()) == 1  # the incumbent only


def test_hyperopt_runs_parallel_trials_on_the_pool(tmp_path: Path) -> None:
    """Hyperopt's parallel trials on one machine: pending trials live in its Trials object in this process."""
    from hyperopt import base

    from hpo.drivers.hyperopt.persist import load_trials

    cfg = small_config(tmp_path, driver={"name": "hyperopt", "sampler": "tpe"}, executor=WORKERS,
                       study={"n_trials": 4}, ensemble={"enabled": False}, plots={"enabled": False},
                       report={"enabled": False}, guards={"enabled": False})
    summary = run_study(cfg)
    assert summary.n_complete == 4
    trials = load_trials(tmp_path / "run" / "hyperopt_trials.json")
    done = [d for d in trials._dynamic_trials if d["state"] == base.JOB_STATE_DONE]
    assert len(done) == 4 and len({d["tid"] for d in done}) == 4
    params = [tuple(sorted(t["params"].items())) for t in summary.trials]
    assert len(set(params)) == 4, "parallel asks must not propose the same configuration"


def test_with_gpu_workers_the_study_process_takes_no_preallocated_share_either(monkeypatch: pytest.MonkeyPatch) -> None:
    from hpo.execution.pool import Slot, leave_card_to_workers

    for key in ("XLA_PYTHON_CLIENT_PREALLOCATE", "TF_FORCE_GPU_ALLOW_GROWTH"):
        monkeypatch.delenv(key, raising=False)
    leave_card_to_workers([Slot(0, None, {}), Slot(1, None, {})])  # CPU workers: nothing to leave
    assert "XLA_PYTHON_CLIENT_PREALLOCATE" not in os.environ
    leave_card_to_workers([Slot(0, 0, {}), Slot(1, 0, {})])
    assert os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false" and os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
