"""A study config from YAML or a mapping: built into the typed sections (:mod:`~hpo.config.schema`), then
checked (:mod:`~hpo.config.checks`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import yaml

from hpo.config.checks import validate
from hpo.config.schema import StudyConfig, build_section
from hpo.errors import ConfigError


def from_dict(raw: Mapping[str, Any]) -> StudyConfig:
    """A validated config from a plain mapping."""
    return validate(build_section(StudyConfig, raw, ""))


def load(path: str | Path) -> StudyConfig:
    """Read and validate a YAML study config (``yaml.safe_load``)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError("config", f"file not found: {str(p)!r}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError("config", f"{p} is not valid YAML: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError("config", f"{p} must hold a mapping of sections, got {type(raw).__name__}")
    return from_dict(raw)
