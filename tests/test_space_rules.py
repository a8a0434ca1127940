"""The search space's rules on hand-made declarations: grids, casting and snapping, which values a parameter
takes, conditions, overrides a config gives, fit-time parameters, discovery and KerasTuner round trips. No
training: these run in milliseconds (and under mutation testing)."""

from __future__ import annotations

from typing import Any

import keras_tuner as kt
import pytest

from hpo.errors import ConfigError
from hpo.space import Condition, Param, SearchSpace, apply_overrides, discover
from hpo.space.points import same_point


def test_a_point_matches_the_trials_that_evaluated_it() -> None:
    params = {"units": 64, "lr": 0.01, "act": "relu", "bn": True}
    assert same_point({}, params)
    assert same_point({"units": 64, "lr": 0.01}, params)
    assert same_point({"lr": 0.01 + 1e-12}, params)  # floats compare with tolerance
    assert same_point({"units": 64.0}, params)  # a whole float is the integer
    assert not same_point({"lr": 0.011}, params)
    assert not same_point({"units": 65}, params)
    assert not same_point({"dropout": 0.1}, params)  # a parameter the trial did not have
    assert not same_point({"bn": 1}, params)  # 1 is not True
    assert not same_point({"bn": 1.0}, params)
    assert not same_point({"act": 1.0}, params)
    assert not same_point({"units": "64"}, params)


def test_a_point_never_matches_a_non_number_or_a_bool_for_a_float() -> None:
    assert not same_point({"lr": 0.01}, {"lr": "0.01"})
    assert not same_point({"lr": 1.0}, {"lr": True})
    assert same_point({"lr": 1}, {"lr": 1.0})  # a whole number stands for the float
    assert not same_point({"lr": 0.01}, {"lr": None})


# -- Param: grids, casting, snapping, membership -----------------------------------------------------------------
def test_grids_of_each_kind() -> None:
    assert Param("a", "choice", values=("x", "y"), default="x").grid == ("x", "y")
    assert Param("b", "boolean", default=False).grid == (False, True)
    assert Param("f", "fixed", values=(7,), default=7).grid == (7,)
    assert Param("u", "int", low=8, high=32, step=8, default=8).grid == (8, 16, 24, 32)
    assert Param("u", "int", low=8, high=30, step=8, default=8).grid == (8, 16, 24)  # the last step that fits
    assert Param("r", "float", low=0.0, high=0.5, step=0.25, default=0.0).grid == (0.0, 0.25, 0.5)
    assert Param("r", "float", low=0.0, high=0.5, default=0.0).grid is None
    assert Param("w", "int", low=2, high=32, step=2, log=True, default=2).grid == (2, 4, 8, 16, 32)
    assert Param("w", "int", low=3, high=100, step=3, log=True, default=3).grid == (3, 9, 27, 81)
    assert Param("w", "float", low=0.001, high=1.0, step=10.0, log=True, default=0.001).grid == \
        pytest.approx((0.001, 0.01, 0.1, 1.0))
    assert Param("u", "int", low=8, high=12, step=1, log=True, default=8).grid == (8, 9, 10, 11, 12)


def test_log_grid_is_a_multiplicative_step_only() -> None:
    assert Param("w", "int", low=2, high=32, step=2, log=True, default=2).log_grid
    assert Param("w", "float", low=0.1, high=1.0, step=2.0, log=True, default=0.1).log_grid
    assert not Param("w", "int", low=2, high=32, step=1, log=True, default=2).log_grid
    assert Param("w", "float", low=0.5, high=4.0, step=1.0, log=True, default=0.5).log_grid is True  # only int's 1
    assert not Param("w", "int", low=2, high=32, log=True, default=2).log_grid
    assert not Param("w", "int", low=2, high=32, step=2, default=2).log_grid


def test_cast_coerces_an_engines_raw_value() -> None:
    assert Param("u", "int", low=1, high=9, default=1).cast(3.6) == 4
    assert type(Param("u", "int", low=1, high=9, default=1).cast("3")) is int
    assert Param("u", "int", low=1, high=9, default=1).cast(2.5) == 2  # round half to even, as round()
    assert type(Param("r", "float", low=0, high=1, default=0).cast(1)) is float
    assert Param("b", "boolean", default=False).cast(1) is True
    assert Param("b", "boolean", default=False).cast(0) is False
    assert Param("a", "choice", values=("1", "2"), default="1").cast("2") == "2"


def test_snap_rounds_onto_the_grid_and_clips_into_range() -> None:
    units = Param("u", "int", low=8, high=32, step=8, default=8)
    assert units.snap(13.0) == 16 and units.snap(11) == 8 and units.snap(100) == 32 and units.snap(-5) == 8
    rate = Param("r", "float", low=0.1, high=0.5, default=0.1)
    assert rate.snap(0.7) == 0.5 and rate.snap(0.0) == 0.1 and rate.snap(0.3) == 0.3
    assert type(rate.snap(1)) is float
    assert Param("b", "boolean", default=False).snap(1) is True
    assert Param("a", "choice", values=("x", "y"), default="x").snap("y") == "y"


def test_contains_is_what_the_parameter_can_take() -> None:
    units = Param("u", "int", low=8, high=32, step=8, default=8)
    assert units.contains(16) and units.contains(8) and units.contains(32)
    assert not units.contains(12) and not units.contains(40) and not units.contains(0)
    assert not units.contains(16.0) and not units.contains(True)
    rate = Param("r", "float", low=0.1, high=0.5, default=0.1)
    assert rate.contains(0.1) and rate.contains(0.5) and rate.contains(0.5 + 1e-13) and rate.contains(0.1 - 1e-13)
    assert not rate.contains(0.5 + 1e-9) and not rate.contains(0.1 - 1e-9) and not rate.contains(1)
    grid = Param("r", "float", low=0.0, high=0.5, step=0.25, default=0.0)
    assert grid.contains(0.25) and grid.contains(0.25 + 1e-14) and not grid.contains(0.3)
    assert grid.contains(1e-13)  # next to the grid value 0.0: an absolute tolerance
    assert not grid.contains(0)  # an int is not a float parameter's value
    choice = Param("a", "choice", values=("x", 1), default="x")
    assert choice.contains("x") and choice.contains(1) and not choice.contains(True) and not choice.contains(1.0)
    assert not choice.contains("z")
    assert Param("b", "boolean", default=False).contains(True) and not Param("b", "boolean", default=False).contains(1)
    fixed = Param("f", "fixed", values=(7,), default=7)
    assert fixed.contains(7) and not fixed.contains(8) and not fixed.contains(7.0)


def test_conditions_hold_only_for_their_parents_values() -> None:
    c = Condition("model", ("a", "b"))
    assert c.holds({"model": "a"}) and c.holds({"model": "b"})
    assert not c.holds({"model": "c"}) and not c.holds({})
    p = Param("x", "int", low=1, high=4, default=1, conditions=(c, Condition("deep", (True,))))
    assert p.is_active({"model": "a", "deep": True})
    assert not p.is_active({"model": "a", "deep": False}) and not p.is_active({"deep": True})
    assert Param("y", "int", low=1, high=4, default=1).is_active({})


def test_describe_records_what_each_kind_declares() -> None:
    assert Param("u", "int", low=8, high=32, step=8, default=16).describe() == {
        "name": "u", "kind": "int", "low": 8, "high": 32, "step": 8, "log": False, "default": 16}
    assert Param("lr", "float", low=1e-4, high=1e-1, log=True, default=1e-3).describe() == {
        "name": "lr", "kind": "float", "low": 1e-4, "high": 1e-1, "step": None, "log": True, "default": 1e-3}
    assert Param("a", "choice", values=("x", "y"), default="y",
                 conditions=(Condition("m", ("p", "q")),)).describe() == {
        "name": "a", "kind": "choice", "values": ["x", "y"], "default": "y",
        "conditions": [{"parent": "m", "values": ["p", "q"]}]}
    assert Param("b", "boolean", default=True).describe() == {"name": "b", "kind": "boolean", "default": True}
    assert Param("f", "fixed", values=(7,), default=7).describe() == {"name": "f", "kind": "fixed", "default": 7}


# -- from KerasTuner and back ------------------------------------------------------------------------------------
def _declare_all(hp: Any) -> None:
    hp.Int("units", 8, 128, step=8, default=32)
    hp.Int("depth", 1, 4)
    hp.Float("lr", 1e-4, 1e-1, sampling="log")
    hp.Float("decay", 1e-4, 1e-1, sampling="reverse_log", default=1e-2)
    hp.Float("drop", 0.0, 0.5, step=0.1)
    hp.Choice("act", ["relu", "tanh"], default="tanh")
    hp.Boolean("bn", default=True)
    hp.Fixed("seed", 7)
    hp.Int("width", 2, 32, step=2, sampling="log")
    with hp.conditional_scope("act", ["relu"]):
        hp.Int("slope", 1, 3)


def test_every_kerastuner_kind_becomes_a_param() -> None:
    s = discover(_declare_all)
    assert s["units"] == Param("units", "int", low=8, high=128, step=8, default=32)
    assert s["depth"] == Param("depth", "int", low=1, high=4, step=1, default=1)  # linear ints step by 1
    assert s["lr"] == Param("lr", "float", low=1e-4, high=1e-1, log=True, default=1e-4)  # default: the minimum
    assert s["decay"].log and s["decay"].default == 1e-2
    assert s["drop"].step == 0.1 and not s["drop"].log
    assert s["act"] == Param("act", "choice", values=("relu", "tanh"), default="tanh")
    assert s["bn"] == Param("bn", "boolean", default=True)
    assert s["seed"] == Param("seed", "fixed", values=(7,), default=7)
    assert s["width"].log and s["width"].step == 2
    assert s["slope"].conditions == (Condition("act", ("relu",)),)


def test_a_space_declares_itself_back_on_kerastuner() -> None:
    s = discover(_declare_all)
    hp = s.to_kerastuner()
    assert [h.name for h in hp.space] == s.names
    assert discover(lambda h: [p.declare_on(h) for p in s.params]).describe() == s.describe()
    configs = {h.name: h.get_config() for h in hp.space}
    assert configs["lr"]["sampling"] == "log" and configs["units"]["sampling"] == "linear"
    assert configs["units"]["default"] == 32 and configs["act"]["default"] == "tanh"
    assert configs["bn"]["default"] is True and configs["seed"]["value"] == 7
    slope = next(h for h in hp.space if h.name == "slope")
    assert [(c.name, list(c.values)) for c in slope.conditions] == [("act", ["relu"])]


def test_an_unsupported_kerastuner_type_is_refused() -> None:
    class Odd(kt.engine.hyperparameters.HyperParameter):
        pass

    with pytest.raises(ConfigError, match="space.odd: unsupported hyperparameter type Odd"):
        Param.from_kerastuner(Odd("odd"))


# -- validation ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p, field, words", [
    (Param("u", "int", low=None, high=4, default=1), "space.u", "needs both min and max"),
    (Param("u", "int", low=1, high=None, default=1), "space.u", "needs both min and max"),
    (Param("u", "int", low=True, high=4, default=1), "space.u.min", "finite number, got True"),
    (Param("u", "float", low=0.0, high=float("inf"), default=0.0), "space.u.max", "finite number"),
    (Param("u", "float", low=0.0, high=1.0, step="a", default=0.0), "space.u.step", "finite number"),
    (Param("u", "float", low="0", high=1.0, default=0.0), "space.u.min", "finite number"),
    (Param("u", "int", low=5, high=4, default=5), "space.u", "inverted: min=5 > max=4; swap them"),
    (Param("u", "int", low=4, high=4, default=4), "space.u", "empty: min == max == 4"),
    (Param("u", "float", low=0.0, high=1.0, log=True, default=0.5), "space.u", "log sampling needs min > 0"),
    (Param("u", "float", low=-1.0, high=1.0, log=True, default=0.5), "space.u", "log sampling needs min > 0"),
    (Param("u", "float", low=0.0, high=1.0, step=0.0, default=0.0), "space.u", "step must be > 0, got 0.0"),
    (Param("u", "float", low=0.0, high=1.0, step=-0.5, default=0.0), "space.u", "step must be > 0"),
    (Param("u", "float", low=0.1, high=1.0, step=0.5, log=True, default=0.1), "space.u", "factor and must be > 1"),
    (Param("u", "float", low=0.1, high=1.0, step=1.0, log=True, default=0.1), "space.u", "factor and must be > 1"),
    (Param("a", "choice", values=(), default=None), "space.a", "at least one value"),
    (Param("a", "choice", values=("x", "y", "x"), default="x"), "space.a", "choice values repeat: ['x', 'y', 'x']"),
])
def test_bad_declarations_name_the_parameter(p: Param, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        SearchSpace([p])
    assert err.value.field == field and words in err.value.message, str(err.value)


@pytest.mark.parametrize("p, message", [
    (Param("u", "int", low=None, high=4, default=1), "a numeric range needs both min and max"),
    (Param("a", "choice", values=(), default=None), "a choice needs at least one value"),
])
def test_the_whole_declaration_message(p: Param, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        SearchSpace([p])
    assert err.value.message == message


def test_edge_declarations_are_valid() -> None:
    SearchSpace([Param("u", "float", low=1e-9, high=1.0, log=True, default=0.5),
                 Param("v", "float", low=0.1, high=1.0, step=1.5, log=True, default=0.1),
                 Param("w", "float", low=-1.0, high=1.0, step=0.5, default=0.0),
                 Param("a", "choice", values=(1, "1"), default=1)])


def test_a_space_refuses_duplicate_names_and_unknown_parents() -> None:
    with pytest.raises(ConfigError, match="space.u: duplicate hyperparameter name"):
        SearchSpace([Param("u", "int", low=1, high=4, default=1), Param("u", "int", low=1, high=8, default=1)])
    with pytest.raises(ConfigError, match="space.x: condition names unknown parent 'model'"):
        SearchSpace([Param("x", "int", low=1, high=4, default=1, conditions=(Condition("model", ("a",)),))])
    SearchSpace([Param("model", "choice", values=("a",), default="a"),
                 Param("x", "int", low=1, high=4, default=1, conditions=(Condition("model", ("a",)),))])


# -- SearchSpace ---------------------------------------------------------------------------------------------------
def _conditional() -> SearchSpace:
    return SearchSpace([
        Param("model", "choice", values=("a", "b"), default="a"),
        Param("depth", "int", low=1, high=4, step=1, default=2, conditions=(Condition("model", ("a",)),)),
        Param("rate", "float", low=0.0, high=0.5, default=0.1, conditions=(Condition("model", ("b",)),)),
        Param("extra", "int", low=1, high=3, step=1, default=1, conditions=(Condition("depth", (4,)),)),
        Param("lr", "float", low=1e-4, high=1e-1, log=True, default=1e-3),
    ])


def test_lookup_names_and_description() -> None:
    s = _conditional()
    assert s.names == ["model", "depth", "rate", "extra", "lr"]
    assert s["rate"].high == 0.5
    with pytest.raises(KeyError, match="nope"):
        s["nope"]
    assert [d["name"] for d in s.describe()] == s.names and s.describe()[1]["conditions"][0]["parent"] == "model"


def test_active_keeps_the_values_whose_conditions_hold_in_order() -> None:
    s = _conditional()
    full = {"lr": 0.01, "extra": 2, "rate": 0.2, "depth": 4, "model": "a"}
    assert list(s.active(full).items()) == [("model", "a"), ("depth", 4), ("extra", 2), ("lr", 0.01)]
    assert s.active({"model": "b", "depth": 4, "extra": 2, "rate": 0.2}) == {"model": "b", "rate": 0.2}
    assert s.active({"model": "a", "depth": 3, "extra": 2}) == {"model": "a", "depth": 3}


def test_defaults_follow_the_conditions() -> None:
    assert _conditional().defaults() == {"model": "a", "depth": 2, "lr": 1e-3}


def test_check_refuses_missing_extra_and_out_of_range_values() -> None:
    s = _conditional()
    s.check({"model": "a", "depth": 4, "extra": 1, "lr": 0.01})
    s.check({"model": "b", "rate": 0.0, "lr": 0.1})
    with pytest.raises(ConfigError, match="params.depth: active hyperparameter has no value"):
        s.check({"model": "a", "lr": 0.01})
    with pytest.raises(ConfigError, match="params.rate: value given for an inactive or unknown hyperparameter"):
        s.check({"model": "a", "depth": 1, "rate": 0.2, "lr": 0.01})
    with pytest.raises(ConfigError, match="params.zzz: value given for an inactive"):
        s.check({"model": "b", "rate": 0.2, "lr": 0.01, "zzz": 1})
    with pytest.raises(ConfigError, match=r"params.lr: value 0.5 outside \{'name': 'lr'"):
        s.check({"model": "b", "rate": 0.2, "lr": 0.5})


def test_the_builder_receives_exactly_the_sampled_values() -> None:
    s = _conditional()
    hp = s.hyperparameters_for({"model": "b", "rate": 0.3, "lr": 0.05})
    assert isinstance(hp, kt.HyperParameters)
    assert hp.values == {"model": "b", "rate": 0.3, "lr": 0.05}
    assert hp.Float("rate", 0.0, 0.5) == 0.3 and hp.Choice("model", ["a", "b"]) == "b"


# -- overrides a config gives ----------------------------------------------------------------------------------------
def _declared() -> SearchSpace:
    return SearchSpace([
        Param("units", "int", low=8, high=128, step=8, default=32),
        Param("lr", "float", low=1e-4, high=1e-1, log=True, default=1e-3),
        Param("act", "choice", values=("relu", "tanh", "gelu"), default="relu"),
        Param("bn", "boolean", default=False),
        Param("seed", "fixed", values=(7,), default=7),
        Param("flag", "fixed", values=(True,), default=True),
        Param("rate", "float", low=0.0, high=0.5, default=0.1),
    ])


def test_ranges_are_narrowed_or_widened_keeping_the_builders_default_when_it_fits() -> None:
    s = apply_overrides(_declared(), {"units": {"min": 16, "max": 256}, "rate": {"max": 0.9, "log": False}})
    assert (s["units"].low, s["units"].high, s["units"].step, s["units"].default) == (16, 256, 8, 32)
    assert (s["rate"].low, s["rate"].high, s["rate"].default) == (0.0, 0.9, 0.1)
    s = apply_overrides(_declared(), {"units": {"min": 64, "max": 128}})
    assert s["units"].default == 64  # 32 is outside the new range: the new minimum
    s = apply_overrides(_declared(), {"units": {"min": 16, "max": 64, "step": 16, "default": 48}})
    assert (s["units"].step, s["units"].default) == (16, 48) and type(s["units"].default) is int
    s = apply_overrides(_declared(), {"lr": {"min": 1e-3, "max": 1.0, "default": 0.01}, "rate": {"default": 0}})
    assert s["lr"].log and s["lr"].default == 0.01 and s["rate"].default == 0.0 and type(s["rate"].default) is float
    s = apply_overrides(_declared(), {"lr": {"log": False}})
    assert not s["lr"].log and s["lr"].default == 1e-3
    assert apply_overrides(_declared(), {}) == _declared()


def test_values_and_fixed_replace_the_declaration() -> None:
    s = apply_overrides(_declared(), {"act": {"values": ["tanh", "gelu"]}, "units": {"values": [16, 64]},
                                      "rate": {"values": [0, 0.25], "default": 0.25}, "bn": {"fixed": True},
                                      "lr": {"fixed": 1e-3}, "seed": {"fixed": 11}})
    assert s["act"] == Param("act", "choice", values=("tanh", "gelu"), default="tanh")
    assert s["units"] == Param("units", "choice", values=(16, 64), default=16)
    assert s["rate"].values == (0.0, 0.25) and s["rate"].default == 0.25 and s["rate"].kind == "choice"
    assert (s["rate"].low, s["rate"].high, s["rate"].step, s["rate"].log) == (None, None, None, False)
    assert s["bn"] == Param("bn", "fixed", values=(True,), default=True)
    assert s["lr"] == Param("lr", "fixed", values=(1e-3,), default=1e-3)
    assert s["seed"].default == 11 and s["seed"].values == (11,)
    assert s.names == _declared().names  # declaration order kept
    assert apply_overrides(_declared(), {"seed": {"fixed": 7.5}})["seed"].default == 7.5  # another number
    s = apply_overrides(_declared(), {"units": {"fixed": 16}, "lr": {"values": [1e-3, 1e-2]}, "flag": {"fixed": False}})
    assert s["units"] == Param("units", "fixed", values=(16,), default=16)  # no range, step or log left over
    assert s["lr"] == Param("lr", "choice", values=(1e-3, 1e-2), default=1e-3)
    assert s["flag"].default is False  # a fixed boolean may be fixed to the other boolean
    odd = SearchSpace([Param("n", "int", low=8, high=30, step=8, default=8), Param("s", "fixed", values=("a",),
                                                                                   default="a")])
    assert apply_overrides(odd, {"s": {"fixed": "b"}})["s"].default == "b"
    with pytest.raises(ConfigError) as err:
        apply_overrides(odd, {"n": {"fixed": 30}})  # inside the range, past the last step
    assert err.value.message == "30 is not on the declared step grid (step 8); the nearest value is 24"


@pytest.mark.parametrize("override, field, words", [
    ({"unitz": {"min": 1}}, "space.params.unitz", "did you mean 'units'?"),
    ({"act": {"values": ["relu"], "default": "swish"}}, "space.params.act.default", "'swish' is not one of the builder"),
    ({"units": 5}, "space.params.units", "expected a mapping such as {min: 1, max: 4}, got int"),
    ({"units": {"mni": 3}}, "space.params.units.mni", "unknown key; allowed: ['default', 'fixed', 'log', 'max',"),
    ({"units": {"fixed": 16, "values": [16]}}, "space.params.units", "not fixed and values"),
    ({"units": {"values": [16], "max": 64}}, "space.params.units", "not values and min/max/step/log"),
    ({"units": {"fixed": 16, "default": 16}}, "space.params.units.default", "a fixed parameter has no default"),
    ({"act": {"values": "relu"}}, "space.params.act.values", "must be a non-empty list"),
    ({"act": {"values": []}}, "space.params.act.values", "must be a non-empty list"),
    ({"act": {"values": ["relu", "swish"]}}, "space.params.act.values",
     "'swish' is not one of the builder's choices ['relu', 'tanh', 'gelu']"),
    ({"act": {"values": ["relu"], "default": "tanh"}}, "space.params.act.default",
     "'tanh' is not one of the values ['relu']"),
    ({"act": {"values": ["relu", "relu"]}}, "space.params.act", "choice values repeat"),
    ({"act": {"min": 1}}, "space.params.act", "min/max/step/log apply to numeric parameters; 'act' is a choice"),
    ({"units": {"min": "a"}}, "space.params.units.min", "must be a finite number, got 'a'"),
    ({"units": {"max": True}}, "space.params.units.max", "must be a finite number, got True"),
    ({"units": {"step": float("nan")}}, "space.params.units.step", "must be a finite number"),
    ({"units": {"default": float("inf")}}, "space.params.units.default", "must be a finite number"),
    ({"units": {"log": "yes"}}, "space.params.units.log", "must be true or false, got 'yes'"),
    ({"units": {"min": 8.5}}, "space.params.units.min", "'units' is an integer parameter, got 8.5"),
    ({"units": {"default": 16.5}}, "space.params.units.default", "integer parameter"),
    ({"units": {"step": 0.5}}, "space.params.units.step", "integer parameter"),
    ({"units": {"max": 64.5}}, "space.params.units.max", "integer parameter"),
    ({"units": {"min": 64, "max": 8}}, "space.params.units", "inverted"),
    ({"units": {"min": 8, "max": 64, "default": 100}}, "space.params.units.default",
     "100 is outside the declared range [8, 64]; widen it with min/max"),
    ({"units": {"min": 8, "max": 64, "default": 12}}, "space.params.units.default",
     "12 is not on the declared step grid (step 8); the nearest value is 8"),
    ({"units": {"fixed": 16.5}}, "space.params.units.fixed", "is not a whole number ('units' is an integer parameter)"),
    ({"units": {"fixed": "16"}}, "space.params.units.fixed", "is not a number ('units' is a int parameter)"),
    ({"units": {"fixed": True}}, "space.params.units.fixed", "is not a number"),
    ({"bn": {"fixed": "yes"}}, "space.params.bn.fixed", "'yes' is not true or false (a boolean parameter)"),
    ({"seed": {"fixed": "seven"}}, "space.params.seed.fixed",
     "'seven' is a str; the builder fixes 'seed' to a int (7)"),
    ({"seed": {"fixed": True}}, "space.params.seed.fixed", "True is a bool; the builder fixes 'seed' to a int (7)"),
    ({"flag": {"fixed": 1}}, "space.params.flag.fixed", "the builder fixes 'flag' to a bool (True)"),
    ({"lr": {"values": [0.5]}}, "space.params.lr.values", "outside the declared range"),
])
def test_a_bad_override_names_the_field_and_the_fix(override: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        apply_overrides(_declared(), override)
    assert err.value.field == field, str(err.value)
    assert words in err.value.message, err.value.message


@pytest.mark.parametrize("override, field, message", [
    ({"qqq": {"min": 1}}, "space.params.qqq",
     "not a hyperparameter of this space (known: units, lr, act, bn, seed, flag, rate)"),
    ({"units": {"fixed": 16, "default": 16}}, "space.params.units.default",
     "a fixed parameter has no default: its value is `fixed`"),
    ({"act": {"values": []}}, "space.params.act.values", "must be a non-empty list"),
])
def test_the_whole_override_message(override: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        apply_overrides(_declared(), override)
    assert (err.value.field, err.value.message) == (field, message)


def test_errors_name_the_section_given() -> None:
    with pytest.raises(ConfigError) as err:
        apply_overrides(_declared(), {"units": {"min": 64, "max": 8}}, where="training")
    assert err.value.field == "training.units"


# -- fit-time parameters -------------------------------------------------------------------------------------------
def test_fit_parameters_are_integer_ranges_or_values_from_one_up() -> None:
    from hpo.space.fit_params import fit_param

    assert fit_param("batch_size", {"min": 16, "max": 256, "log": True}) == \
        Param("batch_size", "int", low=16, high=256, step=None, log=True, default=16)
    assert fit_param("epochs", {"min": 2, "max": 8}) == Param("epochs", "int", low=2, high=8, step=1, default=2)
    assert fit_param("batch_size", {"values": [32, 64]}).grid == (32, 64)
    assert fit_param("batch_size", {"min": 16, "max": 256, "step": 2, "log": True}).step == 2
    assert fit_param("epochs", {"min": 1, "max": 100_000}).high == 100_000
    assert fit_param("epochs", {"min": 1, "max": 8}).default == 1
    assert fit_param("batch_size", {"values": [1, 2]}).grid == (1, 2)
    with pytest.raises(ConfigError) as err:
        fit_param("epochs", {"fixed": 3})
    assert err.value.field == "training.epochs" and "give a plain number for a fixed epochs (epochs: 3)" in str(err.value)
    for bad in ({"min": 0, "max": 8}, {"values": [0, 8]}, {"values": [1.5]}):
        with pytest.raises(ConfigError) as err:
            fit_param("epochs", bad)
        assert err.value.field.startswith("training.epochs"), err.value
    with pytest.raises(ConfigError, match="training.batch_size: every value must be at least 1, got 0"):
        fit_param("batch_size", {"min": 0, "max": 8})
    with pytest.raises(ConfigError, match="training.batch_size: every value must be at least 1, got 0"):
        fit_param("batch_size", {"min": 0, "max": 8, "step": 4})  # on a grid too
    with pytest.raises(ConfigError) as err:
        fit_param("batch_size", {"min": -4, "max": 8}, where="here")
    assert err.value.field.startswith("here.batch_size")


def test_only_mappings_are_searched_and_a_name_is_searched_in_one_place() -> None:
    from types import SimpleNamespace

    from hpo.space.fit_params import searched_fit_params, with_fit_params

    training = SimpleNamespace(batch_size={"values": [32, 64]}, epochs=5)
    fit = searched_fit_params(training)
    assert list(fit) == ["batch_size"] and fit["batch_size"].grid == (32, 64)
    assert searched_fit_params(SimpleNamespace(batch_size=32, epochs=5)) == {}
    both = searched_fit_params(SimpleNamespace(batch_size={"values": [32]}, epochs={"min": 1, "max": 3}))
    assert list(both) == ["batch_size", "epochs"]
    space = _declared()
    assert with_fit_params(space, {}) is space
    assert with_fit_params(space, fit).names == [*space.names, "batch_size"]
    clash = SearchSpace([Param("batch_size", "int", low=1, high=8, default=1)])
    with pytest.raises(ConfigError) as err:
        with_fit_params(clash, fit)
    assert err.value.field == "training.batch_size" and "declares a hyperparameter 'batch_size' too" in str(err.value)


class _Fitting(kt.HyperModel):
    def build(self, hp: Any) -> Any:
        return hp.Int("units", 1, 4)

    def fit(self, hp: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
        hp.Choice("batch", [16, 32])
        model.fit(epochs=hp.Int("epochs", 1, 3))
        hp.Boolean("after_fit")  # still declared: the stand-in's fit trains nothing and returns
        return model.missing_attribute  # fails without data: the declarations so far count


class _Plain(kt.HyperModel):
    def build(self, hp: Any) -> Any:
        return hp.Int("units", 1, 4)


def test_a_hypermodels_fit_declares_its_parameters_without_training() -> None:
    from hpo.space.fit_params import declare_fit, is_hypermodel, overrides_fit

    assert is_hypermodel(_Fitting()) and is_hypermodel(_Plain()) and not is_hypermodel(lambda hp: None)
    assert overrides_fit(_Fitting()) and not overrides_fit(_Plain()) and not overrides_fit(lambda hp: None)

    class Model:
        trained = False

        def fit(self, **kwargs: Any) -> None:
            Model.trained = True

        def summary(self) -> str:
            return "real"

    hp = kt.HyperParameters()
    declare_fit(_Fitting(), hp, Model())
    assert [h.name for h in hp.space] == ["batch", "epochs", "after_fit"] and not Model.trained
    hp = kt.HyperParameters()
    declare_fit(_Plain(), hp, Model())
    assert hp.space == []

    class Refusing(_Fitting):
        def fit(self, hp: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
            assert model.summary() == "real"  # other attributes are the real model's
            assert args == (None, None) and kwargs["validation_data"] is None  # KerasTuner's fit(hp, model, x, y)
            assert kwargs["epochs"] == 1 and kwargs["callbacks"] == [] and kwargs["verbose"] == 0
            raise ConfigError("space.x", "bad")

    with pytest.raises(ConfigError, match="space.x: bad"):
        declare_fit(Refusing(), kt.HyperParameters(), Model())


# -- discovery -----------------------------------------------------------------------------------------------------
def test_builders_are_called_with_the_context_when_they_take_it() -> None:
    from hpo.space import call_builder

    hp = kt.HyperParameters()
    assert call_builder(lambda h: "one", hp, "ctx") == "one"
    assert call_builder(lambda h, c: (h, c), hp, "ctx") == (hp, "ctx")
    assert call_builder(lambda h, c, extra=1: (c, extra), hp, "ctx") == ("ctx", 1)
    assert call_builder(_Plain(), hp, "ctx") == 1

    class Opaque:  # a callable whose signature cannot be read is called with hp alone
        __signature__ = "not a signature"

        def __call__(self, *args: Any) -> int:
            return len(args)

    assert call_builder(Opaque(), hp, "ctx") == 1


def test_discovery_probes_choices_and_loop_bounds_for_more_parameters() -> None:
    def build(hp: Any) -> None:
        for i in range(hp.Int("layers", 1, 3)):
            hp.Int(f"units_{i}", 8, 64, step=8)
        if hp.Choice("opt", ["sgd", "adam"]) == "adam":
            hp.Float("beta", 0.8, 0.99)
        if hp.Boolean("reg"):
            hp.Float("l2", 1e-5, 1e-2, sampling="log")

    s = discover(build)
    assert s.names == ["layers", "units_0", "opt", "reg", "units_1", "units_2", "beta", "l2"]


def test_discovery_keeps_the_first_declaration_order_and_refuses_redefinitions() -> None:
    def twice(hp: Any) -> None:
        hp.Int("units", 8, 64)
        hp.Int("units", 8, 128)

    with pytest.raises(ConfigError) as err:
        discover(twice)
    assert err.value.field == "space.units" and err.value.message.startswith("declared twice with different definitions")
    assert err.value.message.endswith("); give each hyperparameter its own name")

    def two_kinds(hp: Any) -> None:
        hp.Int("units", 8, 64)
        hp.Float("units", 8.0, 64.0)

    with pytest.raises(ConfigError) as err:
        discover(two_kinds)
    assert (err.value.field, err.value.message) == ("space.units", "declared twice, as Int and Float; give each "
                                                                   "hyperparameter its own name")

    def same_again(hp: Any) -> int:
        return hp.Int("units", 8, 64) + hp.Int("units", 8, 64)  # the same declaration twice is one parameter

    assert discover(same_again).names == ["units"]

    def per_branch(hp: Any) -> None:
        m = hp.Choice("m", ["a", "b"])
        with hp.conditional_scope("m", ["a"]):
            hp.Int("k", 1, 4)
        with hp.conditional_scope("m", ["b"]):
            hp.Int("k", 1, 8)  # a different declaration under another condition is KerasTuner's own business

    discover(per_branch)


def test_a_builder_failing_with_its_defaults_is_a_config_error_but_a_failing_probe_is_not() -> None:
    def broken(hp: Any) -> None:
        hp.Int("units", 8, 64)
        raise RuntimeError("boom")

    with pytest.raises(ConfigError) as err:
        discover(broken, what="space.builder")
    assert err.value.field == "space.builder"
    assert "the builder fails with its default hyperparameters: RuntimeError('boom')" in err.value.message
    with pytest.raises(ConfigError) as err:
        discover(broken)
    assert err.value.field == "builder"  # the default name of what failed

    def picky(hp: Any) -> None:
        if hp.Choice("act", ["relu", "bad"]) == "bad":
            raise ValueError("invalid combination")
        hp.Int("units", 8, 64)

    assert discover(picky).names == ["act", "units"]

    def config_error(hp: Any) -> None:
        if hp.Boolean("x"):
            raise ConfigError("space.x", "refused")

    with pytest.raises(ConfigError, match="space.x: refused"):
        discover(config_error)


def test_discovery_stops_after_its_build_budget() -> None:
    from hpo.space import MAX_DISCOVERY_BUILDS

    calls = []

    def many(hp: Any) -> None:
        calls.append(1)
        for i in range(10):
            hp.Choice(f"c{i}", list(range(10)))

    s = discover(many)
    assert len(calls) == MAX_DISCOVERY_BUILDS == 64
    assert s.names == [f"c{i}" for i in range(10)]


def test_discovery_validates_each_parameter_before_probing_it() -> None:
    def bad(hp: Any) -> None:
        hp.Choice("act", ["relu", "relu"])

    with pytest.raises(ConfigError, match="space.act: choice values repeat"):
        discover(bad)


def test_discovery_probes_the_maximum_of_a_log_sampled_integer() -> None:
    def build(hp: Any) -> None:
        for i in range(hp.Int("layers", 1, 4, sampling="log")):  # no step: no grid, the maximum is probed
            hp.Int(f"units_{i}", 8, 64, step=8)

    s = discover(build)
    assert s["layers"].grid is None
    assert s.names == ["layers", "units_0", "units_1", "units_2", "units_3"]



def test_discovery_passes_the_context_and_probes_the_last_value_on_the_grid() -> None:
    def build(hp: Any, ctx: dict[str, int]) -> None:
        for i in range(hp.Int("layers", 1, ctx["max_layers"], step=2)):  # grid 1, 3: 4 itself is never taken
            hp.Int(f"units_{i}", 8, 64, step=8)

    s = discover(build, {"max_layers": 4})
    assert s["layers"].high == 4 and s.names == ["layers", "units_0", "units_1", "units_2"]


def test_conditions_of_every_kind_survive_discovery() -> None:
    def build(hp: Any) -> None:
        hp.Choice("model", ["a", "b"])
        with hp.conditional_scope("model", ["b"]):
            hp.Choice("act", ["relu", "tanh"])
            hp.Boolean("bn")
            hp.Fixed("seed", 3)
            hp.Float("rate", 0.0, 0.5)

    s = discover(build)
    for name in ("act", "bn", "seed", "rate"):
        assert s[name].conditions == (Condition("model", ("b",)),), name
    assert s.defaults() == {"model": "a"}
