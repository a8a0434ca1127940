"""Study budgets and seeding on digits: study.timeout_s, study.enqueue, study.warm_start."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest

from hpo.cli import main
from hpo.config import from_dict
from hpo.errors import ConfigError
from hpo.study import run_study

from .conftest import small_config


def _sleep_past(timeout_s: float) -> Any:
    """An on_trial_end callback that makes the first trial end after the study's budget is spent."""
    def on_trial_end(result: Any, progress: Any) -> None:
        if progress.done == 1:
            time.sleep(max(0.0, timeout_s - progress.elapsed_s) + 0.3)
    return on_trial_end


@pytest.mark.parametrize("mode", ["inprocess", pytest.param("processes", marks=pytest.mark.slow)])
def test_timeout_stops_between_trials_and_a_rerun_resumes(tmp_path: Path, mode: str) -> None:
    timeout = 15.0 if mode == "inprocess" else 45.0
    cfg = small_config(tmp_path, study={"n_trials": 3, "timeout_s": timeout}, ensemble={"enabled": False},
                       executor={"mode": mode, "cpu_workers": 1}, report={"enabled": False},
                       plots={"enabled": False})
    summary = run_study(cfg, on_trial_end=_sleep_past(timeout))
    assert summary.n_complete == 1  # the trial running when the budget ran out finished; none started after
    assert summary.stopped_early.startswith("study.timeout_s") and "2 of 3 trials remain" in summary.stopped_early
    saved = json.loads((cfg.run_dir / "summary.json").read_text())
    assert saved["stopped_early"] == summary.stopped_early
    first = (cfg.run_dir / "trials" / "00000" / "result.json").read_text()

    cfg.study.timeout_s = None
    again = run_study(cfg)
    assert again.n_complete == 3 and again.stopped_early is None
    assert sorted(t["number"] for t in again.trials) == [0, 1, 2]
    assert (cfg.run_dir / "trials" / "00000" / "result.json").read_text() == first  # not redone


@pytest.mark.parametrize("bad", [0, -5, "ten", True, math.nan, math.inf])
def test_a_timeout_that_is_not_a_positive_number_is_refused_naming_the_field(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(ConfigError, match=r"study\.timeout_s"):
        small_config(tmp_path, study={"timeout_s": bad})


def test_search_and_the_cli_refuse_a_bad_timeout_before_anything_is_written(tmp_path: Path, capsys: Any) -> None:
    import numpy as np
    import keras

    from hpo.study import search

    def build(hp: Any) -> Any:
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(hp.Int("u", 2, 8)), keras.layers.Dense(2)])

    x, y = np.zeros((20, 4), "float32"), np.zeros(20, "int64")
    with pytest.raises(ConfigError, match=r"study\.timeout_s"):
        search(build, x, y, validation_data=(x, y), n_trials=1, timeout_s=-1, run_dir=tmp_path / "s")
    assert not (tmp_path / "s").exists()
    path = tmp_path / "c.yaml"
    path.write_text(f"study: {{name: c, run_dir: {tmp_path / 'c'}}}\n")
    assert main(["run", str(path), "--quiet", "--timeout", "soon"]) == 2
    assert "study.timeout_s" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


FULL = [{"layers": 1, "units": 32, "activation": "tanh", "dropout": 0.1, "batchnorm": False, "use_l2": False,
         "learning_rate": 0.003, "optimizer": "adam"},
        {"layers": 2, "units": 16, "activation": "relu", "dropout": 0.0, "batchnorm": True, "use_l2": True,
         "l2": 0.001, "learning_rate": 0.001, "optimizer": "rmsprop"}]


def _matches(point: dict[str, Any], params: dict[str, Any]) -> bool:
    return all(math.isclose(params[k], v) if isinstance(v, float) else params.get(k) == v for k, v in point.items())


@pytest.mark.parametrize("driver", [("optuna", "tpe"), ("hyperopt", "tpe"), ("kerastuner", "bayesian")])
def test_enqueued_configurations_are_the_first_trials_and_are_not_run_twice(tmp_path: Path, driver: Any) -> None:
    cfg = small_config(tmp_path, study={"n_trials": 2, "enqueue": FULL}, driver={"name": driver[0], "sampler": driver[1]},
                       training={"epochs": 1}, ensemble={"enabled": False}, report={"enabled": False},
                       plots={"enabled": False}, guards={"enabled": False})
    summary = run_study(cfg)
    first = sorted(summary.trials, key=lambda t: t["number"])
    assert [_matches(p, t["params"]) for p, t in zip(FULL, first)] == [True, True], [t["params"] for t in first]
    assert first[1]["params"]["l2"] == pytest.approx(0.001)  # a conditional parameter's value reaches the trial

    cfg.study.n_trials = 3  # the rerun resumes: the enqueued configurations already ran
    again = run_study(cfg)
    assert again.n_complete == 3
    for p in FULL:
        assert sum(_matches(p, t["params"]) for t in again.trials) == 1


def test_a_partial_configuration_is_completed_by_optuna(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, study={"n_trials": 1, "enqueue": [{"units": 48, "activation": "gelu"}]},
                       training={"epochs": 1}, ensemble={"enabled": False}, report={"enabled": False},
                       plots={"enabled": False}, guards={"enabled": False})
    params = run_study(cfg).trials[0]["params"]
    assert params["units"] == 48 and params["activation"] == "gelu" and {"layers", "dropout"} <= set(params)


@pytest.mark.parametrize("point, field, words", [
    ({"units": 4096}, "study.enqueue[0].units", "outside the declared range"),
    ({"activation": "swish"}, "study.enqueue[0].activation", "not one of the builder's choices"),
    ({"unitz": 32}, "study.enqueue[0].unitz", "not a parameter"),
    ({"use_l2": False, "l2": 0.01}, "study.enqueue[0].l2", "used only when use_l2"),
])
def test_a_bad_enqueued_value_is_refused_naming_it_before_anything_is_written(tmp_path: Path, point: Any,
                                                                              field: str, words: str) -> None:
    cfg = small_config(tmp_path, study={"enqueue": [point]})
    with pytest.raises(ConfigError, match=words) as err:
        run_study(cfg)
    assert err.value.field == field
    assert not cfg.run_dir.exists()


def test_hyperopt_refuses_a_partial_configuration_naming_what_is_missing(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, study={"enqueue": [FULL[0], {"units": 32}]}, driver={"name": "hyperopt"})
    with pytest.raises(ConfigError, match="misses layers") as err:
        run_study(cfg)
    assert err.value.field == "study.enqueue[1]" and not cfg.run_dir.exists()


def _quick(tmp: Path, name: str, **study: Any) -> Any:
    return small_config(tmp, study={"name": name, "n_trials": 2, "run_dir": str(tmp / name), **study},
                        training={"epochs": 1}, ensemble={"enabled": False}, report={"enabled": False},
                        plots={"enabled": False}, guards={"enabled": False})


def test_a_warm_started_tpe_study_proposes_from_the_earlier_trials(tmp_path: Path, finished_study: Any) -> None:
    earlier, done = finished_study
    earlier_params = [t["params"] for t in done.trials]
    cold = run_study(_quick(tmp_path, "cold"))
    warm_cfg = _quick(tmp_path, "warm", warm_start=str(earlier.run_dir))
    warm = run_study(warm_cfg)
    assert warm.n_complete == 2  # the earlier 12 trials do not count against n_trials
    numbers = [t["number"] for t in warm.trials]
    assert numbers == [12, 13], numbers  # they are the sampler's history, numbered before this study's trials
    assert sorted(p.name for p in (warm_cfg.run_dir / "trials").iterdir()) == ["00012", "00013"]  # none re-run
    assert all(t["params"] not in earlier_params for t in warm.trials)
    # Same seed, same space: the cold start's first proposals are TPE's random start-up; the warm start's come
    # from a model of the 12 earlier trials.
    assert [t["params"] for t in warm.trials] != [t["params"] for t in cold.trials]
    assert warm.trials[0]["params"] != cold.trials[0]["params"]

    again = run_study(warm_cfg)  # a rerun adds the earlier trials once
    assert again.n_complete == 2 and [t["number"] for t in again.trials] == [12, 13]


def test_hyperopt_starts_from_an_earlier_study_and_kerastuner_refuses(tmp_path: Path, finished_study: Any) -> None:
    earlier, _ = finished_study
    cfg = _quick(tmp_path, "hyper", warm_start=str(earlier.run_dir), n_trials=1)
    cfg.driver.name = "hyperopt"
    summary = run_study(cfg)
    assert summary.n_complete == 1 and summary.trials[0]["number"] == 12
    saved = json.loads((cfg.run_dir / "hyperopt_trials.json").read_text())["docs"]
    assert sum("hpo_warm_start" in d["misc"] for d in saved) == 12
    kt = _quick(tmp_path, "kt", warm_start=str(earlier.run_dir))
    kt.driver.name, kt.driver.sampler = "kerastuner", "random"
    with pytest.raises(ConfigError, match="KerasTuner") as err:
        run_study(kt)
    assert err.value.field == "study.warm_start" and not kt.run_dir.exists()


def test_a_warm_start_from_another_space_is_refused_naming_the_parameters(tmp_path: Path, finished_study: Any) -> None:
    earlier, _ = finished_study
    cfg = _quick(tmp_path, "other", warm_start=str(earlier.run_dir))
    cfg.space.params = {**cfg.space.params, "units": {"min": 32, "max": 128}, "dropout": {"fixed": 0.2}}
    with pytest.raises(ConfigError, match=r"differs in: units, dropout|differs in: dropout, units") as err:
        run_study(cfg)
    assert err.value.field == "study.warm_start" and not cfg.run_dir.exists()
    missing = _quick(tmp_path, "missing", warm_start=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="not a study's run directory"):
        run_study(missing)
