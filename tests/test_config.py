"""Bad configuration stops a study before any trial, with one error naming the field, and writes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from hpo.cli import main
from hpo.config import load
from hpo.errors import ConfigError
from hpo.study import run_study, search

from .conftest import small_config

BAD = [
    ({"driver": {"samplr": "tpe"}}, "driver.samplr", "did you mean 'sampler'"),
    ({"study": {"n_trials": "ten"}}, "study.n_trials", "integer"),
    ({"study": {"n_trials": 0}}, "study.n_trials", "at least 1"),
    ({"driver": {"name": "smac"}}, "driver.name", "not one of"),
    ({"driver": {"name": "hyperopt", "sampler": "cmaes"}}, "driver.sampler", "not one of"),
    ({"data": {"dataset": "cifar"}}, "data.dataset", "not one of"),
    ({"space": {"builder": "resnet9000"}}, "space.builder", "unknown builder"),
    ({"space": {"params": {"units": {"min": 64, "max": 16}}}}, "space.params.units", "inverted"),
    ({"space": {"params": {"units": {"min": 16, "max": 16}}}}, "space.params.units", "empty"),
    ({"space": {"params": {"learning_rate": {"min": 0.0, "max": 0.1}}}}, "space.params.learning_rate", "log"),
    ({"space": {"params": {"unitz": {"min": 1, "max": 3}}}}, "space.params.unitz", "did you mean 'units'"),
    ({"objective": {"metric": "test_accuracy"}}, "objective.metric", "select"),
    ({"objective": {"metric": "auc"}}, "objective.metric", "not reported"),
    ({"objective": {"direction": "up"}}, "objective.direction", "not one of"),
    ({"training": {"epochs": 1.5}}, "training.epochs", "integer"),
    ({"training": {"deterministic": "yes"}}, "training.deterministic", "true or false"),
    ({"driver": {"name": "hyperopt", "sampler": "tpe", "pruner": "median"}}, "driver.pruner", "optuna"),
    ({"ensemble": {"combine": "max"}}, "ensemble.combine", "not one of"),
    ({"bogus": {}}, "bogus", "unknown key"),
]


def _raw(tmp: Path, patch: dict[str, Any]) -> dict[str, Any]:
    raw = small_config(tmp).to_dict()
    for section, fields in patch.items():
        raw[section] = {**raw.get(section, {}), **fields} if section in raw else fields
    return raw


@pytest.mark.parametrize("patch, field, words", BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_config_names_the_field_and_writes_nothing(tmp_path: Path, patch: dict[str, Any], field: str, words: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_raw(tmp_path, patch)))
    with pytest.raises(ConfigError) as err:
        cfg = load(path)
        run_study(cfg)
    assert err.value.field == field
    assert words in str(err.value)
    assert not (tmp_path / "run").exists(), "nothing may be written for a bad config"
    # the command line says the same in one line and exits 2
    assert main(["run", str(path)]) == 2
    out = capsys.readouterr().err.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(f"error: {field}:")
    assert not (tmp_path / "run").exists()


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load(p)


def test_bad_user_data_is_refused_before_any_trial(tmp_path: Path) -> None:
    import keras

    def build(hp: Any) -> keras.Model:
        m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(hp.Int("u", 2, 4)), keras.layers.Dense(3)])
        m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        return m

    x = np.random.default_rng(0).random((40, 4)).astype("float32")
    y = np.arange(40) % 3
    x_nan = x.copy()
    x_nan[3, 1] = np.nan
    with pytest.raises(ConfigError) as err:
        search(build, x_nan, y, validation_data=(x, y), run_dir=tmp_path / "r", n_trials=1, epochs=1)
    assert err.value.field == "data.train.x" and "NaN" in str(err.value)
    with pytest.raises(ConfigError) as err:
        search(build, x[:, :3], y, validation_data=(x[:, :3], y), run_dir=tmp_path / "r", n_trials=1, epochs=1)
    assert err.value.field == "data"
    with pytest.raises(ConfigError) as err:
        search(build, x, y, validation_data=(x, y), run_dir=tmp_path / "r", n_trials=1, epochs=1,
               heads=[__import__("hpo.data", fromlist=["Head"]).Head("output", "multiclass", 2)])
    assert err.value.field.startswith("data.") and "labels must lie in [0, 1]" in str(err.value)
    assert not (tmp_path / "r").exists()


def test_every_experiment_config_is_valid() -> None:
    from .conftest import ROOT

    paths = [p for p in sorted((ROOT / "experiments").glob("*.yaml")) if p.name != "mnist_validation_noise.yaml"]
    assert len(paths) >= 9
    for p in paths:
        cfg = load(p)
        from search_spaces import get_builder

        get_builder(cfg.space.builder)
