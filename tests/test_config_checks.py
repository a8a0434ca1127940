"""Every check a study config passes before anything runs, through ``from_dict`` and ``load``: each bad value is
refused with a ConfigError naming the field (and the accepted edge values pass). No training: these run in
milliseconds (and under mutation testing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hpo.config import StudyConfig, from_dict, load
from hpo.errors import ConfigError


def test_an_empty_config_is_the_default_study() -> None:
    assert from_dict({}) == StudyConfig()
