"""The search space: declared by a builder with KerasTuner's ``hp`` calls, engine-free.

:mod:`hpo.space.model` holds :class:`Param`, :class:`Condition` and :class:`SearchSpace`;
:mod:`hpo.space.discovery` collects a builder's declaration; :mod:`hpo.space.overrides` applies
a config's narrowing; :mod:`hpo.space.builders` resolves builder names; :mod:`hpo.space.compile`
is the default compilation for builders that do not compile. Each engine's translation of a
space lives with its driver (:mod:`hpo.drivers`).
"""

from hpo.space.builders import BUILTIN, Builder, get_builder
from hpo.space.discovery import MAX_DISCOVERY_BUILDS, call_builder, discover
from hpo.space.model import Condition, Param, ParamKind, SearchSpace, validate_param
from hpo.space.overrides import apply_overrides

__all__ = [
    "BUILTIN", "Builder", "Condition", "MAX_DISCOVERY_BUILDS", "Param", "ParamKind", "SearchSpace",
    "apply_overrides", "call_builder", "discover", "get_builder", "validate_param",
]
