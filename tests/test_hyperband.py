"""Multi-fidelity search that reuses its checkpoints (issue 27): KerasTuner's Hyperband through our driver continues a
promoted trial from its parent's weights and optimizer state, trains only the epochs after the parent's, and
records the epochs it trained; in this process, on worker processes, and across an interrupted and resumed study.
A checkpoint that is missing, does not fit, or lies outside the run directory is not loaded: the trial trains all
its epochs from a fresh model."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import keras
import mlflow
import pytest

from hpo.execution.continuation import CHECKPOINT, Resume
from hpo.results import TrialState, trial_dir
from tests.conftest import small_config

QUIET = {"ensemble": {"enabled": False}, "plots": {"enabled": False}, "report": {"enabled": False},
         "guards": {"enabled": False}}
# A learning rate that learns digits over several epochs: a continued model and a fresh one are far apart.
SLOW = {"layers": {"fixed": 1}, "units": {"min": 16, "max": 64, "log": True}, "learning_rate": {"fixed": 0.001},
        "batchnorm": {"fixed": False}}


def _config(tmp: Path, name: str, max_epochs: int, n_trials: int, **sections: Any) -> Any:
    return small_config(tmp, study={"name": name, "n_trials": n_trials},
                        driver={"name": "kerastuner", "sampler": "hyperband"}, space={"params": SLOW},
                        training={"epochs": max_epochs, "batch_size": 128}, **{**QUIET, **sections})


def _results(run_dir: Path) -> dict[int, dict[str, Any]]:
    return {int(p.parent.name): json.loads(p.read_text()) for p in (run_dir / "trials").glob("*/result.json")}


def _oracle_budgets(run_dir: Path) -> dict[int, dict[str, Any]]:
    """What KerasTuner's oracle allotted each trial (by our trial number): its parent, initial epoch and epochs."""
    import keras_tuner as kt

    oracle_dir = run_dir / "kerastuner" / "oracle"
    order = json.loads((oracle_dir / "oracle.json").read_text())["start_order"]
    out = {}
    for number, trial_id in enumerate(order):
        values = kt.engine.trial.Trial.load(str(oracle_dir / f"trial_{trial_id}" / "trial.json")).hyperparameters.values
        parent = values.get("tuner/trial_id")
        out[number] = {"parent": None if parent is None else order.index(parent),
                       "initial_epoch": int(values["tuner/initial_epoch"]), "epochs": int(values["tuner/epochs"])}
    return out


def _iterations(run_dir: Path, number: int) -> int:
    """Optimizer steps in trial ``number``'s saved model (its optimizer state is saved with it)."""
    model = keras.saving.load_model(trial_dir(run_dir, number) / "model.keras", safe_mode=True)
    return int(model.optimizer.iterations)


def test_the_driver_names_each_promoted_trials_parent_and_first_epoch(tmp_path: Path) -> None:
    """One Hyperband iteration (max_epochs 9, factor 3) through the driver alone: 23 proposals, each promoted one
    naming its parent (an earlier proposal of the same configuration) and starting at the parent's last epoch; the
    proposals the oracle may promote later ask for a checkpoint. 75 epochs to train where from-scratch rounds
    trained 87; the other oracles promote nothing."""
    from hpo.drivers.kerastuner import KerasTunerDriver
    from hpo.results import TrialResult
    from hpo.space import discover

    def declare(hp: Any) -> None:
        hp.Int("units", 8, 64, step=8)
        hp.Float("lr", 1e-4, 1e-1, sampling="log")

    space = discover(declare)
    for oracle in ("hyperband", "random"):
        drv = KerasTunerDriver(space, direction="maximize", seed=3, directory=tmp_path / oracle, n_trials=40,
                               oracle=oracle, epochs=9)
        drv.open({})
        props = []
        while (prop := drv.ask()) is not None and len(props) < 40:
            props.append(prop)
            drv.tell(prop, TrialResult(number=prop.number, params=prop.params, seed=0, state=TrialState.COMPLETE,
                                       value=prop.params["lr"] * (prop.epochs or 9)))
        assert [p.number for p in props] == list(range(len(props)))
        if oracle == "random":
            assert all(p.parent is None and p.initial_epoch == 0 and not p.checkpoint for p in props)
            continue
        assert len(props) == 23
        for p in props:
            assert p.checkpoint == (p.epochs < 9)
            if p.parent is None:
                assert p.initial_epoch == 0
                continue
            parent = props[p.parent]
            assert p.parent < p.number and p.params == parent.params and parent.checkpoint
            assert p.initial_epoch == parent.epochs < p.epochs
        assert sum(p.parent is not None for p in props) == 6
        assert (sum(p.epochs - p.initial_epoch for p in props), sum(p.epochs for p in props)) == (75, 87)


@pytest.mark.slow
def test_a_promoted_trial_continues_its_parent_and_the_study_trains_fewer_epochs(tmp_path: Path) -> None:
    """Hyperband, max_epochs 9, factor 3: the first bracket's 9 one-epoch trials, 3 promoted to 3 epochs, 1 to 9.
    Each promoted trial starts where its parent ended (its first epoch's select accuracy at least the parent's
    last, far above a fresh model's first), carries on the parent's optimizer steps, trains only the epochs after
    the parent's, and says so in result.json and MLflow; the study trains 21 epochs where from-scratch rounds
    trained 27."""
    from hpo.study import run_study

    cfg = _config(tmp_path, "hb", 9, 13)
    summary = run_study(cfg)
    results, budgets = _results(cfg.run_dir), _oracle_budgets(cfg.run_dir)
    assert sorted(results) == list(range(13)) and all(r["state"] == "COMPLETE" for r in results.values())
    promoted = [n for n, b in budgets.items() if b["parent"] is not None]
    assert len(promoted) == 4  # 3 to epoch 3, then 1 to epoch 9
    for n, r in results.items():
        b = budgets[n]
        assert (r["resumed_from"], r["initial_epoch"]) == (b["parent"], b["initial_epoch"])
        assert r["epochs"] == b["epochs"] - b["initial_epoch"] == len(r["history"]["val_accuracy"])
        # a trial the oracle may still promote keeps its checkpoint; one at max_epochs never is
        assert (trial_dir(cfg.run_dir, n) / CHECKPOINT).is_file() == (b["epochs"] < 9)
    trained = sum(r["epochs"] for r in results.values())
    from_scratch = sum(b["epochs"] for b in budgets.values())  # what each round trained before: all its epochs
    assert (trained, from_scratch) == (21, 27)
    for n in promoted:
        child, parent = results[n], results[budgets[n]["parent"]]
        root = parent
        while root["resumed_from"] is not None:
            root = results[root["resumed_from"]]
        fresh_first = root["history"]["val_accuracy"][0]  # a fresh model of this configuration after one epoch
        first = child["history"]["val_accuracy"][0]
        assert first >= parent["value"] - 0.05, (n, first, parent["value"])
        if parent["resumed_from"] is not None:  # the parent trained 3 epochs: a fresh model is far behind
            assert first > fresh_first + 0.2, (n, first, fresh_first)
        # the optimizer's state went on from the parent's: steps of all the epochs up to this trial's last
        steps_per_epoch = _iterations(cfg.run_dir, root["number"])
        assert _iterations(cfg.run_dir, n) == budgets[n]["epochs"] * steps_per_epoch
    last = max(promoted)
    client = mlflow.MlflowClient(summary.tracking_uri)
    run = client.get_run(results[last]["mlflow_run_id"])
    assert run.data.tags["hpo.resumed_from"] == str(budgets[last]["parent"])
    assert run.data.tags["hpo.initial_epoch"] == "3" and run.data.metrics["epochs"] == 6
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "epoch_select_accuracy")]
    assert sorted(steps) == list(range(3, 9))  # its curve continues the parent's epochs


@pytest.mark.slow
def test_worker_processes_and_a_resumed_study_continue_from_checkpoints(tmp_path: Path) -> None:
    """max_epochs 3: three one-epoch trials, then the best continued to epoch 3. On a worker process, with the
    study interrupted during the promoted trial and rerun: the oracle hands the same trial back, and it still
    continues its parent's checkpoint."""
    from hpo.study import run_study

    cfg = _config(tmp_path, "hb-workers", 3, 4, executor={"mode": "processes", "cpu_workers": 1})

    def stop_in_the_promoted_trial(number: int, epoch: int, of: int, logs: Any) -> None:
        if number == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(cfg, on_epoch_end=stop_in_the_promoted_trial)
    assert sorted(_results(cfg.run_dir)) == [0, 1, 2]
    run_study(cfg)
    results, budgets = _results(cfg.run_dir), _oracle_budgets(cfg.run_dir)
    assert sorted(results) == [0, 1, 2, 3] and budgets[3]["parent"] is not None
    child = results[3]
    assert child["state"] == "COMPLETE"
    assert (child["resumed_from"], child["initial_epoch"], child["epochs"]) == (budgets[3]["parent"], 1, 2)
    assert child["history"]["val_accuracy"][0] >= results[budgets[3]["parent"]]["value"] - 0.05
    assert _iterations(cfg.run_dir, 3) == 3 * _iterations(cfg.run_dir, budgets[3]["parent"])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from hpo.execution.trial import TrialSettings
    from hpo.study import prepare

    tmp = tmp_path_factory.mktemp("prepared")
    build, splits, space = prepare(_config(tmp, "unit", 3, 1))
    params = space.active(space.defaults() | {"units": 32})
    return build, splits, space, params, TrialSettings(epochs=3, batch_size=128, audit_per_epoch=False,
                                                       save_models=False)


def _trial(prepared: Any, where: Path, number: int, **kwargs: Any) -> Any:
    from hpo.execution.trial import run_trial

    build, splits, space, params, settings = prepared
    return run_trial(number=number, params=kwargs.pop("params", params), seed=number, build=build, space=space,
                     splits=splits, settings=settings, trial_dir=where / f"{number:05d}", **kwargs)


def test_a_checkpoint_that_does_not_load_leaves_the_trial_training_all_its_epochs(prepared: Any, tmp_path: Path,
                                                                               caplog: pytest.LogCaptureFixture) -> None:
    parent = _trial(prepared, tmp_path, 0, epochs=1, checkpoint=True)
    saved = tmp_path / "00000" / CHECKPOINT
    assert parent.state is TrialState.COMPLETE and saved.is_file()
    ok = _trial(prepared, tmp_path, 1, epochs=3, resume=Resume(0, str(saved), 1))
    assert (ok.state, ok.resumed_from, ok.initial_epoch, ok.epochs) == (TrialState.COMPLETE, 0, 1, 2)
    garbage = tmp_path / "garbage.weights.h5"
    garbage.write_bytes(b"not an HDF5 file")
    other = dict(prepared[3], units=16)  # another architecture: the checkpoint's weights do not fit it
    for n, resume, params in ((2, Resume(0, str(garbage), 1), prepared[3]), (3, Resume(0, str(saved), 1), other)):
        with caplog.at_level(logging.WARNING, logger="hpo.execution.trial"):
            r = _trial(prepared, tmp_path, n, epochs=3, resume=resume, params=params)
        assert (r.state, r.resumed_from, r.initial_epoch, r.epochs) == (TrialState.COMPLETE, None, 0, 3), r.error
        assert f"the checkpoint of trial 0 ({resume.path}) cannot be loaded" in caplog.text


def test_a_parent_checkpoint_outside_the_run_directory_is_not_read(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """A run directory may come from someone else: a checkpoint that is a symlink out of it is skipped."""
    from hpo.drivers.base import Proposal
    from hpo.study.trials import parent_checkpoint

    run_dir = (tmp_path / "run").resolve()
    outside = tmp_path / "secret.weights.h5"
    outside.write_bytes(b"x")
    for n in (0, 1):
        trial_dir(run_dir, n).mkdir(parents=True)
    os.symlink(outside, trial_dir(run_dir, 0) / CHECKPOINT)
    (trial_dir(run_dir, 1) / CHECKPOINT).write_bytes(b"y")
    child = Proposal(number=5, params={}, epochs=3, parent=0, initial_epoch=1)
    with caplog.at_level(logging.WARNING):
        assert parent_checkpoint(run_dir, child) is None
    assert "lies outside the run directory" in caplog.text
    resume = parent_checkpoint(run_dir, Proposal(number=5, params={}, epochs=3, parent=1, initial_epoch=1))
    assert resume == Resume(1, str(trial_dir(run_dir, 1) / CHECKPOINT), 1)
    assert parent_checkpoint(run_dir, Proposal(number=5, params={}, epochs=3, parent=2, initial_epoch=1)) is None
