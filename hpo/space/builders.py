"""Model builders by name: the built-in catalogue's names, or any ``package.module:function``.

A builder is ``build(hp)`` (any existing KerasTuner builder) or ``build(hp, spec)``
where ``spec`` (:class:`hpo.data.DataSpec`) gives input shapes and output heads.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any, Callable

from hpo.errors import ConfigError

Builder = Callable[..., Any]

# The built-in catalogue (the ``search_spaces`` package) is a plugin of the framework, not a dependency:
# its builders are named here as 'module:function' strings and imported like a user's own builder, so
# ``hpo`` never imports ``search_spaces`` (the catalogue imports ``hpo``, not the other way round).
BUILTIN = {
    "mlp": "search_spaces.mlp:build",
    "convnet": "search_spaces.convnet:build",
    "ticket": "search_spaces.ticket:build",
    "text_qa": "search_spaces.text_qa:build",
    "posts": "search_spaces.posts:build",
    "siamese": "search_spaces.siamese:build",
    "dual_view": "search_spaces.dual_view:build",
    "transfer": "search_spaces.transfer:build",
    "triplet_embedding": "search_spaces.triplet_embedding:build",
}


def get_builder(name: str) -> Builder:
    """A built-in builder by name, or any ``package.module:function``."""
    target = BUILTIN.get(name, name)
    if ":" not in target:
        close = difflib.get_close_matches(name, list(BUILTIN), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            "space.builder",
            f"unknown builder {name!r}; use one of {', '.join(BUILTIN)} or 'package.module:function'{hint}",
        )
    module, _, attr = target.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError("space.builder", f"cannot import {target!r}: {exc}") from exc
    import keras_tuner as kt

    if not callable(fn) and not isinstance(fn, kt.HyperModel):
        raise ConfigError("space.builder", f"{target!r} is not callable")
    return fn
