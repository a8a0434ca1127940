"""The four splits every study uses (train, select, audit and a locked test), the data spec and array trees.

The validation split is cut into two halves: ``select`` (the only one a driver,
a pruner or ensemble member selection ever sees) and ``audit`` (scored for every
trial, never optimised). ``test`` is only used to evaluate final models.
Every split is hashed so a run records exactly which data it saw.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence, Union

import numpy as np

from hpo.errors import ConfigError

Arrays = Union[np.ndarray, dict[str, np.ndarray], list[np.ndarray]]
HeadKind = Literal["multiclass", "binary", "regression", "embedding"]
SPLITS = ("train", "select", "audit", "test")


@dataclass(frozen=True)
class Head:
    """One model output: its kind and, for classification, its number of classes."""

    name: str
    kind: HeadKind
    n_classes: int = 1
    one_hot: bool = False


@dataclass(frozen=True)
class DataSpec:
    """What a builder needs to know about the data: input shapes and output heads."""

    inputs: dict[str, tuple[int, ...]]
    heads: tuple[Head, ...]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of the single input (builders with one input use this)."""
        return next(iter(self.inputs.values()))

    @property
    def head(self) -> Head:
        """The single output head (builders with one output use this)."""
        return self.heads[0]

    @property
    def n_classes(self) -> int:
        return self.heads[0].n_classes


@dataclass
class Splits:
    """Train / select / audit / test arrays, the data spec and a hash of every split."""

    x: dict[str, Arrays]
    y: dict[str, Arrays]
    spec: DataSpec
    name: str = "custom"
    hashes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.hashes:
            self.hashes = {s: hash_arrays(self.x[s], self.y[s]) for s in self.x}

    def size(self, split: str) -> int:
        return n_rows(self.y[split])


# -- array trees -----------------------------------------------------------------------
def leaves(tree: Arrays) -> list[np.ndarray]:
    if isinstance(tree, dict):
        return [np.asarray(tree[k]) for k in sorted(tree)]
    if isinstance(tree, (list, tuple)):
        return [np.asarray(t) for t in tree]
    return [np.asarray(tree)]


def n_rows(tree: Arrays) -> int:
    return int(leaves(tree)[0].shape[0])


def take(tree: Arrays, idx: np.ndarray) -> Arrays:
    if isinstance(tree, dict):
        return {k: np.asarray(v)[idx] for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [np.asarray(v)[idx] for v in tree]
    return np.asarray(tree)[idx]


def concat(parts: list[Arrays]) -> Arrays:
    """Row-wise concatenation of array trees of the same structure."""
    if isinstance(parts[0], dict):
        return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}
    if isinstance(parts[0], (list, tuple)):
        return [np.concatenate([np.asarray(p[i]) for p in parts]) for i in range(len(parts[0]))]
    return np.concatenate([np.asarray(p) for p in parts])


def hash_arrays(*trees: Arrays) -> str:
    """sha256 of the arrays' dtypes, shapes and bytes (first 16 hex digits)."""
    h = hashlib.sha256()
    for tree in trees:
        for a in leaves(tree):
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
    return h.hexdigest()[:16]


def check_finite(tree: Arrays, where: str) -> None:
    for i, a in enumerate(leaves(tree)):
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            bad = int((~np.isfinite(a)).sum())
            raise ConfigError(where, f"{bad} NaN or infinite values in array {i}; clean or impute them before searching")


# -- splitting -------------------------------------------------------------------------
def split(
    x: Arrays,
    y: Arrays,
    *,
    spec: DataSpec,
    x_test: Arrays | None = None,
    y_test: Arrays | None = None,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.2,
    seed: int = 0,
    name: str = "custom",
    stratify: np.ndarray | None = None,
) -> Splits:
    """Cut data into train/select/audit(/test) with a fixed seed, stratified when labels are given."""
    from sklearn.model_selection import train_test_split

    n = n_rows(x)
    idx = np.arange(n)
    x_parts: dict[str, Arrays] = {}
    y_parts: dict[str, Arrays] = {}
    if x_test is None:
        idx, test_idx = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=stratify)
        x_parts["test"], y_parts["test"] = take(x, test_idx), take(y, test_idx)
    else:
        assert y_test is not None
        x_parts["test"], y_parts["test"] = x_test, y_test
    strat = stratify[idx] if stratify is not None else None
    train_idx, val_idx = train_test_split(idx, test_size=validation_fraction, random_state=seed + 1, stratify=strat)
    strat_v = stratify[val_idx] if stratify is not None else None
    sel_idx, aud_idx = train_test_split(val_idx, test_size=0.5, random_state=seed + 2, stratify=strat_v)
    for s, ix in (("train", np.sort(train_idx)), ("select", np.sort(sel_idx)), ("audit", np.sort(aud_idx))):
        x_parts[s], y_parts[s] = take(x, ix), take(y, ix)
    order = list(SPLITS)
    return Splits(
        x={s: x_parts[s] for s in order}, y={s: y_parts[s] for s in order}, spec=spec, name=name
    )


# -- user data (script API) ----------------------------------------------------------------
def infer_heads(y: Arrays, output_names: Sequence[str] | None = None) -> tuple[Head, ...]:
    """Guess output heads from labels: integer → multiclass, 2-D one-hot → multiclass, float → regression."""
    if isinstance(y, dict):
        items = list(y.items())
    elif isinstance(y, (list, tuple)):
        names = list(output_names or [f"output_{i}" for i in range(len(y))])
        items = list(zip(names, y))
    else:
        items = [((output_names or ["output"])[0], y)]
    heads = []
    for name, arr in items:
        a = np.asarray(arr)
        if a.ndim == 2 and a.shape[1] > 1 and np.isin(a, (0, 1)).all() and np.allclose(a.sum(1), 1):
            heads.append(Head(name, "multiclass", int(a.shape[1]), one_hot=True))
        elif np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.bool_):
            k = int(a.max()) + 1
            heads.append(Head(name, "binary" if k <= 2 and a.ndim == 2 else "multiclass", max(k, 2)))
        else:
            heads.append(Head(name, "regression", int(a.shape[1]) if a.ndim == 2 else 1))
    return tuple(heads)


def check_rows(x: Arrays, y: Arrays, where: str) -> None:
    """Raise ConfigError unless every array of ``x`` and ``y`` has the same number of rows."""
    counts = [("x", i, int(np.shape(a)[0]) if np.ndim(a) else 0) for i, a in enumerate(leaves(x))]
    counts += [("y", i, int(np.shape(a)[0]) if np.ndim(a) else 0) for i, a in enumerate(leaves(y))]
    if len({n for _, _, n in counts}) > 1:
        shown = ", ".join(f"{k}[{i}]: {n}" for k, i, n in counts)
        raise ConfigError(where, f"inputs and labels must have the same number of rows, got {shown}")


def check_labels(splits: Splits) -> None:
    """Raise ConfigError for labels outside the classes, non-finite inputs or inputs and labels of other lengths."""
    for s in SPLITS:
        check_rows(splits.x[s], splits.y[s], f"data.{s}")
        check_finite(splits.x[s], f"data.{s}.x")
        check_finite(splits.y[s], f"data.{s}.y")
        ys = splits.y[s]
        by_head: Mapping[str, Any]
        if isinstance(ys, dict):
            by_head = ys
        elif isinstance(ys, (list, tuple)):
            by_head = {h.name: v for h, v in zip(splits.spec.heads, ys)}
        else:
            by_head = {splits.spec.heads[0].name: ys}
        for h in splits.spec.heads:
            a = np.asarray(by_head[h.name])
            if h.kind == "multiclass" and not h.one_hot:
                if a.min() < 0 or a.max() >= h.n_classes:
                    raise ConfigError(f"data.{s}.y.{h.name}",
                                      f"labels must lie in [0, {h.n_classes - 1}], found {a.min()}..{a.max()}")
            if h.kind == "embedding" and not (np.isfinite(a).all() and np.allclose(a.sum(-1), 1, atol=1e-4)):
                raise ConfigError(f"data.{s}.y.{h.name}", "triplet votes must be finite and sum to 1 per triplet")
            if h.kind == "binary" and not np.isin(a, (0, 1)).all():
                raise ConfigError(f"data.{s}.y.{h.name}", "binary labels must be 0 or 1")
