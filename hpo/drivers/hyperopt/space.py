"""The search space as Hyperopt's declarative expression, in which conditional parameters are nested
``hp.choice`` branches, and a sample of it mapped back to flat values."""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from hyperopt import hp

from hpo.errors import ConfigError
from hpo.space import Param, SearchSpace


def to_hyperopt(space: SearchSpace) -> dict[str, Any]:
    """Hyperopt's declarative space; conditional parameters sit in nested ``hp.choice`` branches."""
    children: dict[str, list[Param]] = {}
    top: list[Param] = []
    for p in space.params:
        if p.conditions:
            children.setdefault(p.conditions[-1].parent, []).append(p)
        else:
            top.append(p)
    labels: set[str] = set()

    def label(name: str, path: str) -> str:
        lab = name if not path else f"{name}@{path}"
        if lab in labels:  # pragma: no cover - guarded by unique names
            raise ConfigError(f"space.{name}", "duplicate hyperopt label")
        labels.add(lab)
        return lab

    def node(params: Iterable[Param], path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for p in params:
            kids = children.get(p.name, [])
            if not kids:
                out[p.name] = _leaf(p, label(p.name, path))
                continue
            grid = p.grid
            if grid is None or len(grid) > 256:
                raise ConfigError(
                    f"space.{p.name}",
                    "hyperopt driver: a conditional parent must be a Choice, Boolean or a stepped range "
                    "of at most 256 values",
                )
            branches = []
            for v in grid:
                sub = [k for k in kids if v in k.conditions[-1].values]
                branch = {p.name: v}
                branch.update(node(sub, f"{path}/{p.name}={v}" if path else f"{p.name}={v}"))
                branches.append(branch)
            out[f"__branch__{p.name}"] = hp.choice(label(p.name, path), branches)
        return out

    return node(top, "")


def from_hyperopt(space: SearchSpace, sample: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten a sample of :func:`to_hyperopt` into ``{name: value}`` for the builder."""
    flat: dict[str, Any] = {}

    def walk(d: Mapping[str, Any]) -> None:
        for k, v in d.items():
            if k.startswith("__branch__"):
                walk(v)
            else:
                flat[k] = v

    walk(sample)
    return space.active({p.name: p.snap(flat[p.name]) for p in space.params if p.name in flat})


def _leaf(p: Param, lab: str) -> Any:
    if p.kind == "fixed":
        return p.default
    grid = p.grid
    if p.kind in ("choice", "boolean"):
        return hp.choice(lab, list(grid or ()))
    assert p.low is not None and p.high is not None
    if p.log_grid:  # no multiplicative step in Hyperopt either: the geometric grid is a choice
        return hp.choice(lab, list(grid or ()))
    if p.log:
        if p.kind == "int":
            return hp.qloguniform(lab, math.log(p.low), math.log(p.high), 1)
        return hp.loguniform(lab, math.log(p.low), math.log(p.high))
    if p.step is not None:
        # Offset grid: low + k*step, k uniform over the grid's indices (snap() clips the edges).
        n = len(grid or ())
        return p.low + hp.quniform(lab, -0.5 * p.step, (n - 0.5) * p.step - 1e-9, p.step)
    return hp.uniform(lab, p.low, p.high)
