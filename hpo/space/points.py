"""Comparing configurations: whether a trial's parameters evaluated a (possibly partial) configuration."""

from __future__ import annotations

import math
from typing import Any, Mapping


def same_point(point: Mapping[str, Any], params: Mapping[str, Any]) -> bool:
    """Whether a trial with ``params`` evaluated the (possibly partial) configuration ``point``."""
    for name, value in point.items():
        if name not in params:
            return False
        other = params[name]
        if isinstance(value, float) or isinstance(other, float):
            if isinstance(other, bool) or not isinstance(other, (int, float)) or not math.isclose(value, other):
                return False
        elif value != other or type(value) is not type(other):
            return False
    return True
