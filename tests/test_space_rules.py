"""The search space's rules on hand-made declarations: grids, casting and snapping, which values a parameter
takes, conditions, overrides a config gives, fit-time parameters, discovery and KerasTuner round trips. No
training: these run in milliseconds (and under mutation testing)."""

from __future__ import annotations

from typing import Any

import keras_tuner as kt
import pytest

from hpo.errors import ConfigError
from hpo.space import Param, SearchSpace, apply_overrides, discover
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
