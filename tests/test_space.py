"""One search-space declaration drives Optuna, Hyperopt and KerasTuner's oracles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras_tuner as kt
import optuna
import pytest

from hpo.drivers.hyperopt import HyperoptDriver
from hpo.drivers.kerastuner import KerasTunerDriver
from hpo.drivers.optuna import OptunaDriver
from hpo.errors import ConfigError
from hpo.space import Param, SearchSpace, apply_overrides, discover
from hpo.results import TrialResult, TrialState


def declare(hp: Any) -> dict[str, Any]:
    """A KerasTuner-style declaration with every kind of parameter, returning what it received."""
    got = {
        "units": hp.Int("units", 8, 128, step=8),
        "lr": hp.Float("lr", 1e-4, 1e-1, sampling="log"),
        "act": hp.Choice("act", ["relu", "tanh", "gelu"]),
        "bn": hp.Boolean("bn"),
        "width": hp.Int("width", 2, 32, step=2, sampling="log"),  # multiplicative: 2, 4, 8, 16, 32
        "fixed": hp.Fixed("fixed", 7),
        "model": hp.Choice("model", ["a", "b"]),
    }
    with hp.conditional_scope("model", ["a"]):
        got["a_depth"] = hp.Int("a_depth", 1, 4)
    with hp.conditional_scope("model", ["b"]):
        got["b_rate"] = hp.Float("b_rate", 0.0, 0.5)
        got["b_deep"] = hp.Boolean("b_deep")
        with hp.conditional_scope("b_deep", [True]):
            got["b_extra"] = hp.Int("b_extra", 16, 64, sampling="log")
    return got


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return discover(declare)


def check_sample(space: SearchSpace, values: dict[str, Any]) -> None:
    space.check(values)  # every value in range, exactly the active parameters present
    assert ("a_depth" in values) == (values["model"] == "a")
    assert ("b_rate" in values) == (values["model"] == "b")
    assert ("b_extra" in values) == (values["model"] == "b" and values.get("b_deep") is True)
    assert values["width"] in (2, 4, 8, 16, 32)
    assert values["units"] % 8 == 0
    # the builder receives exactly what was sampled
    got = declare(space.hyperparameters_for(values))
    assert {k: v for k, v in got.items() if v is not None} == values


def test_discovery_records_kinds_and_conditions(space: SearchSpace) -> None:
    assert space.names == ["units", "lr", "act", "bn", "width", "fixed", "model", "a_depth", "b_rate", "b_deep", "b_extra"]
    assert space["lr"].log and space["lr"].kind == "float"
    assert space["b_extra"].conditions[-1].parent == "b_deep"
    assert [c.parent for c in space["b_extra"].conditions] == ["model", "b_deep"]


def test_discovery_finds_parameters_declared_in_loops() -> None:
    def build(hp: Any) -> None:
        for i in range(hp.Int("layers", 1, 3)):
            hp.Int(f"units_{i}", 4, 8)

    assert discover(build).names == ["layers", "units_0", "units_1", "units_2"]


def fake_result(number: int, params: dict[str, Any], value: float) -> TrialResult:
    return TrialResult(number=number, params=params, seed=0, state=TrialState.COMPLETE, value=value)


def drive(driver: Any, n: int) -> list[dict[str, Any]]:
    driver.open({"test": 1})
    seen = []
    for _ in range(n):
        prop = driver.ask()
        assert prop is not None
        seen.append(prop.params)
        driver.tell(prop, fake_result(prop.number, prop.params, float(len(prop.params))))
    return seen


@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes", "grid"])
def test_optuna_proposes_only_declared_values(space: SearchSpace, tmp_path: Path, sampler: str) -> None:
    drv = OptunaDriver(space, direction="maximize", seed=1, study_name="s", storage=f"sqlite:///{tmp_path}/o.db", sampler=sampler)
    samples = drive(drv, 25)
    for v in samples:
        check_sample(space, v)
    assert {v["model"] for v in samples} == {"a", "b"}


@pytest.mark.parametrize("algo", ["tpe", "anneal", "rand"])
def test_hyperopt_proposes_only_declared_values(space: SearchSpace, tmp_path: Path, algo: str) -> None:
    drv = HyperoptDriver(space, direction="maximize", seed=1, save_file=tmp_path / "h.json", algo=algo)
    samples = drive(drv, 30)
    for v in samples:
        check_sample(space, v)
    assert {v["model"] for v in samples} == {"a", "b"}
    assert any(v.get("b_deep") for v in samples)


@pytest.mark.parametrize("oracle", ["random", "bayesian"])
def test_kerastuner_oracles_propose_only_declared_values(space: SearchSpace, tmp_path: Path, oracle: str) -> None:
    drv = KerasTunerDriver(space, direction="maximize", seed=1, directory=tmp_path / "kt", n_trials=15, oracle=oracle)
    samples = drive(drv, 15)
    for v in samples:
        check_sample(space, v)


def test_kerastuner_hyperband_sets_epoch_budgets(space: SearchSpace, tmp_path: Path) -> None:
    drv = KerasTunerDriver(space, direction="maximize", seed=1, directory=tmp_path / "kt", n_trials=10,
                           oracle="hyperband", epochs=9)
    drv.open({})
    prop = drv.ask()
    assert prop is not None and prop.epochs is not None and 1 <= prop.epochs <= 9
    check_sample(space, prop.params)


def test_hyperopt_resumes_from_its_save_file(space: SearchSpace, tmp_path: Path) -> None:
    uninterrupted = drive(HyperoptDriver(space, direction="minimize", seed=3, save_file=tmp_path / "u.json"), 6)
    drive(HyperoptDriver(space, direction="minimize", seed=3, save_file=tmp_path / "h.json"), 5)
    again = HyperoptDriver(space, direction="minimize", seed=3, save_file=tmp_path / "h.json")
    again.open({"test": 1})
    assert again.n_finished() == 5
    nxt = again.ask()  # the resumed search goes on where it stopped: trial 5, as if never stopped
    assert nxt is not None and nxt.number == 5 and nxt.params == uninterrupted[5]


def test_seeded_engines_repeat_their_proposals(space: SearchSpace, tmp_path: Path) -> None:
    a = drive(HyperoptDriver(space, direction="maximize", seed=9, save_file=tmp_path / "a.json"), 8)
    b = drive(HyperoptDriver(space, direction="maximize", seed=9, save_file=tmp_path / "b.json"), 8)
    assert a == b
    mk = lambda p: OptunaDriver(space, direction="maximize", seed=9, study_name="s", storage=f"sqlite:///{tmp_path}/{p}.db")
    assert drive(mk("a"), 8) == drive(mk("b"), 8)


def test_overrides_narrow_fix_and_replace(space: SearchSpace) -> None:
    s = apply_overrides(space, {"units": {"min": 16, "max": 32}, "act": {"values": ["relu"]}, "bn": {"fixed": True}})
    assert (s["units"].low, s["units"].high) == (16, 32)
    assert s["act"].values == ("relu",)
    assert s["bn"].kind == "fixed" and s["bn"].default is True


@pytest.mark.parametrize(
    "override, field",
    [
        ({"unitz": {"min": 1}}, "space.params.unitz"),
        ({"units": {"min": 64, "max": 8}}, "space.params.units"),
        ({"units": {"min": 8, "max": 8}}, "space.params.units"),
        ({"lr": {"min": 0.0, "max": 0.1}}, "space.params.lr"),
        ({"units": {"min": "a"}}, "space.params.units.min"),
        ({"units": {"mni": 3}}, "space.params.units.mni"),
        ({"act": {"values": []}}, "space.params.act.values"),
        ({"act": {"min": 1}}, "space.params.act"),
    ],
)
def test_bad_overrides_name_the_field(space: SearchSpace, override: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        apply_overrides(space, override)
    assert err.value.field == field


def test_kerastuner_space_round_trip(space: SearchSpace) -> None:
    hp = space.to_kerastuner()
    assert isinstance(hp, kt.HyperParameters)
    assert [h.name for h in hp.space] == space.names
    assert discover(lambda h: [p.declare_on(h) for p in space.params]).describe() == space.describe()


def test_optuna_journal_storage(space: SearchSpace, tmp_path: Path) -> None:
    url = f"journal://{tmp_path}/j/study.log"
    drive(OptunaDriver(space, direction="maximize", seed=1, study_name="j", storage=url), 4)
    again = OptunaDriver(space, direction="maximize", seed=1, study_name="j", storage=url)
    again.open({"test": 1})
    assert again.n_finished() == 4 and (tmp_path / "j" / "study.log").exists()


@pytest.mark.parametrize(
    "override, field, words",
    [
        ({"units": {"fixed": 4096}}, "space.params.units.fixed", "outside the declared range [8, 128]"),
        ({"units": {"fixed": 12}}, "space.params.units.fixed", "step grid"),
        ({"units": {"fixed": 16.5}}, "space.params.units.fixed", "whole number"),
        ({"lr": {"fixed": "fast"}}, "space.params.lr.fixed", "not a number"),
        ({"act": {"fixed": "swish"}}, "space.params.act.fixed", "not one of the builder's choices"),
        ({"act": {"values": ["relu", "swish"]}}, "space.params.act.values", "'swish' is not one of"),
        ({"act": {"values": ["relu"], "default": "tanh"}}, "space.params.act.default", "not one of the values"),
        ({"bn": {"fixed": "yes"}}, "space.params.bn.fixed", "true or false"),
        ({"width": {"values": [2, 3]}}, "space.params.width.values", "step grid"),
        ({"fixed": {"fixed": "seven"}}, "space.params.fixed.fixed", "fixes 'fixed' to a int"),
        ({"units": {"min": 8.5, "max": 256}}, "space.params.units.min", "integer parameter"),
        ({"units": {"min": 8, "max": 64, "default": 100}}, "space.params.units.default", "outside the declared range"),
        ({"units": {"fixed": 16, "min": 8}}, "space.params.units", "give one of"),
    ],
)
def test_values_a_config_gives_meet_the_declared_parameter(space: SearchSpace, override: dict[str, Any],
                                                           field: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        apply_overrides(space, override)
    assert err.value.field == field, str(err.value)
    assert words in str(err.value)


def test_values_a_config_gives_inside_the_declaration_are_kept(space: SearchSpace) -> None:
    s = apply_overrides(space, {"units": {"fixed": 64}, "lr": {"fixed": 1e-3}, "b_rate": {"values": [0, 0.25]},
                                "width": {"values": [4, 8]}, "a_depth": {"min": 1, "max": 8},  # a widened range
                                "fixed": {"fixed": 9}})
    assert s["units"].default == 64 and s["lr"].default == 1e-3
    assert s["b_rate"].values == (0.0, 0.25) and isinstance(s["b_rate"].values[0], float)
    assert s["width"].values == (4, 8) and s["a_depth"].high == 8 and s["fixed"].default == 9


def test_a_log_sampled_integer_with_step_one_has_every_integer_as_its_grid() -> None:
    """step=1 is no multiplicative factor (it raised ZeroDivisionError in math.log(x, 1))."""
    p = Param("units", "int", 8, 12, step=1, log=True, default=8)
    assert p.grid == (8, 9, 10, 11, 12)
    assert Param("units", "int", 2, 32, step=2, log=True, default=2).grid == (2, 4, 8, 16, 32)
