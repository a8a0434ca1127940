"""Fit-time hyperparameters on digits: a searched batch size and epoch count reach model.fit, and a KerasTuner
HyperModel with a fit override runs unchanged under Optuna and Hyperopt."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import pytest

from hpo.data import load_dataset
from hpo.errors import ConfigError
from hpo.study import run_study, search

from .conftest import small_config


class StepCounter(keras.callbacks.Callback):
    """Counts the training batches of each epoch: with N training rows, ceil(N / batch_size) of them."""

    def __init__(self, seen: dict[str, list[int]], key: str) -> None:
        super().__init__()
        self.seen, self.key = seen, key

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.seen.setdefault(self.key, []).append(0)

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.seen[self.key][-1] += 1


def _quiet(**kw: Any) -> dict[str, Any]:
    return dict(ensemble={"enabled": False}, report={"enabled": False}, plots={"enabled": False},
                guards={"enabled": False}, **kw)


def test_a_searched_batch_size_and_epoch_count_reach_fit(tmp_path: Path) -> None:
    seen: dict[str, list[int]] = {}
    cfg = small_config(tmp_path, study={"n_trials": 4}, driver={"sampler": "random"},
                       training={"batch_size": {"values": [16, 128]}, "epochs": {"min": 1, "max": 2}}, **_quiet())
    summary = run_study(cfg, callbacks=lambda trial_dir: [StepCounter(seen, trial_dir.name)])
    n_train = load_dataset("digits").size("train")
    sizes = set()
    for t in summary.trials:
        p = t["params"]
        steps = seen[f"{t['number']:05d}"]
        assert len(steps) == p["epochs"]  # the sampled epoch count is what fit ran
        assert steps == [math.ceil(n_train / p["batch_size"])] * p["epochs"]  # and the sampled batch size
        sizes.add(p["batch_size"])
    space = json.loads((cfg.run_dir / "space.json").read_text())
    assert {"batch_size", "epochs"} <= {p["name"] for p in space}
    assert sizes == {16, 128}, sizes  # both were sampled (seed 0, random sampler)


@pytest.mark.parametrize("driver", [("hyperopt", "tpe"), ("kerastuner", "random")])
def test_every_driver_samples_the_batch_size(tmp_path: Path, driver: Any) -> None:
    seen: dict[str, list[int]] = {}
    cfg = small_config(tmp_path, study={"n_trials": 2}, driver={"name": driver[0], "sampler": driver[1]},
                       training={"batch_size": {"min": 16, "max": 256, "log": True}, "epochs": 1}, **_quiet())
    summary = run_study(cfg, callbacks=lambda trial_dir: [StepCounter(seen, trial_dir.name)])
    n_train = load_dataset("digits").size("train")
    assert summary.n_complete == 2
    for t in summary.trials:
        assert 16 <= t["params"]["batch_size"] <= 256
        assert seen[f"{t['number']:05d}"] == [math.ceil(n_train / t["params"]["batch_size"])]


@pytest.mark.slow
def test_worker_processes_train_each_trial_with_its_sampled_epochs(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, study={"n_trials": 3}, driver={"sampler": "random"},
                       executor={"mode": "processes", "cpu_workers": 1},
                       training={"epochs": {"values": [1, 3]}, "batch_size": {"values": [32, 256]}}, **_quiet())
    run_study(cfg)
    for path in (cfg.run_dir / "trials").iterdir():
        r = json.loads((path / "result.json").read_text())
        assert r["epochs"] == r["params"]["epochs"] and len(r["history"]["loss"]) == r["params"]["epochs"]


@pytest.mark.parametrize("bad, field", [
    ({"batch_size": {"min": 0, "max": 8}}, "training.batch_size"),
    ({"batch_size": {"values": []}}, "training.batch_size.values"),
    ({"batch_size": "big"}, "training.batch_size"),
    ({"epochs": {"values": [1, 2.5]}}, "training.epochs.values"),
    ({"epochs": {"mni": 1}}, "training.epochs.mni"),
])
def test_a_bad_fit_parameter_is_refused_naming_the_field(tmp_path: Path, bad: Any, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        small_config(tmp_path, training=bad)
    assert err.value.field == field


def test_searched_epochs_are_refused_with_hyperband(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        small_config(tmp_path, training={"epochs": {"values": [1, 3]}}, driver={"pruner": "hyperband"})
    assert err.value.field == "training.epochs"


def test_packs_share_their_batch_size(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, study={"n_trials": 6}, executor={"pack": 3, "mode": "inprocess"},
                       training={"batch_size": {"values": [16, 128]}, "epochs": 1},
                       space={"builder": "mlp", "params": {"batchnorm": {"fixed": False}}}, **_quiet())
    run_study(cfg)
    records = {int(p.name): json.loads((p / "result.json").read_text()) for p in (cfg.run_dir / "trials").iterdir()}
    packs = {tuple(r["pack"]) for r in records.values() if r.get("pack")}
    assert packs, "no trials were packed"
    for pack in packs:
        assert len({records[n]["params"]["batch_size"] for n in pack}) == 1, pack


class FitHyperModel(kt.HyperModel):
    """A KerasTuner HyperModel as users write it: the batch size and shuffling are searched in fit."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[dict[str, Any]] = []

    def build(self, hp: Any) -> keras.Model:
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(hp.Int("units", 8, 32), activation="relu"),
                                  keras.layers.Dense(10)])
        model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        return model

    def fit(self, hp: Any, model: keras.Model, *args: Any, **kwargs: Any) -> Any:
        batch_size, shuffle = hp.Choice("batch_size", [16, 128]), hp.Boolean("shuffle")
        self.calls.append({"rows": len(args[0]), "kwargs": sorted(kwargs), "batch_size": batch_size})
        return model.fit(*args, batch_size=batch_size, shuffle=shuffle, **kwargs)


@pytest.mark.parametrize("driver", ["optuna", "hyperopt"])
def test_a_hypermodel_with_a_fit_override_runs_unchanged(tmp_path: Path, driver: str) -> None:
    splits = load_dataset("digits")
    hm = FitHyperModel()
    seen: dict[str, list[int]] = {}
    val = (keras.ops.convert_to_numpy(splits.x["select"]), splits.y["select"])
    summary = search(hm, splits.x["train"], splits.y["train"], validation_data=val,
                     test_data=(splits.x["test"], splits.y["test"]), n_trials=4, driver=driver, epochs=1,
                     run_dir=tmp_path / driver, ensemble=False, name=f"hm-{driver}",
                     callbacks=lambda trial_dir: [StepCounter(seen, trial_dir.name)])
    assert summary.n_complete == 4
    assert len(hm.calls) == 4  # the override trained every trial
    n_train = len(splits.y["train"])
    for call, t in zip(hm.calls, sorted(summary.trials, key=lambda t: t["number"])):
        assert call["rows"] == n_train and {"callbacks", "epochs", "validation_data"} <= set(call["kwargs"])
        assert "batch_size" not in call["kwargs"]  # the override chooses it
        assert call["batch_size"] == t["params"]["batch_size"]  # hp holds the trial's sampled values
        assert seen[f"{t['number']:05d}"] == [math.ceil(n_train / t["params"]["batch_size"])]
    space = {p["name"]: p for p in json.loads((tmp_path / driver / "space.json").read_text())}
    assert space["batch_size"]["values"] == [16, 128] and space["shuffle"]["kind"] == "boolean"  # declared only in fit
