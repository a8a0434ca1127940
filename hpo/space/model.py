"""One search space, declared with KerasTuner's ``HyperParameters``, for every engine.

A builder declares its hyperparameters the way KerasTuner users already do
(``hp.Int``, ``hp.Float(sampling="log")``, ``hp.Choice``, ``hp.Boolean``,
``hp.Fixed``, ``hp.conditional_scope``). :func:`hpo.space.discover` runs the builder
a few times to collect the declaration into a :class:`SearchSpace`, a plain ordered
list of :class:`Param` with their conditions. The space knows no engine: each
driver translates it (``hpo.drivers.optuna.space`` samples define-by-run,
``hpo.drivers.hyperopt.space`` builds Hyperopt's declarative expression). What
stays here is KerasTuner's, the space's own declaration language:

* :meth:`SearchSpace.to_kerastuner` gives KerasTuner's own oracles the space;
* :meth:`SearchSpace.hyperparameters_for` hands the builder a ``HyperParameters``
  holding exactly the sampled values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

import keras_tuner as kt

from hpo.errors import ConfigError

ParamKind = Literal["int", "float", "choice", "boolean", "fixed"]


@dataclass(frozen=True)
class Condition:
    """The parameter is active only when ``parent`` takes one of ``values``."""

    parent: str
    values: tuple[Any, ...]

    def holds(self, assignment: Mapping[str, Any]) -> bool:
        return self.parent in assignment and assignment[self.parent] in self.values


@dataclass(frozen=True)
class Param:
    """One hyperparameter of a search space."""

    name: str
    kind: ParamKind
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    values: tuple[Any, ...] = ()
    default: Any = None
    conditions: tuple[Condition, ...] = ()

    # -- structure -----------------------------------------------------------------
    def is_active(self, assignment: Mapping[str, Any]) -> bool:
        return all(c.holds(assignment) for c in self.conditions)

    @property
    def log_grid(self) -> bool:
        """Log sampling with a step: KerasTuner reads ``step`` as a multiplicative factor, which no engine
        samples natively, so every driver offers the geometric :attr:`grid` as a categorical. An integer
        step of 1 is no factor: the plain (log-sampled) integer range."""
        return self.log and self.step is not None and not (self.kind == "int" and self.step == 1)

    @property
    def grid(self) -> tuple[Any, ...] | None:
        """All values a discrete parameter can take, or None for a continuous range."""
        if self.kind == "choice":
            return self.values
        if self.kind == "boolean":
            return (False, True)
        if self.kind == "fixed":
            return (self.default,)
        if self.step is None:
            return None
        assert self.low is not None and self.high is not None
        if self.log_grid:
            # KerasTuner: with log sampling, ``step`` is a multiplicative factor.
            n = int(math.log(self.high / self.low, self.step) + 1e-8) + 1
            out = [self.low * self.step**i for i in range(n)]
        else:
            n = int((self.high - self.low) // self.step + 1)
            out = [self.low + i * self.step for i in range(n)]
        return tuple(self.cast(v) for v in out)

    def cast(self, value: Any) -> Any:
        """Coerce an engine's raw value to this parameter's type."""
        if self.kind == "int":
            return int(round(float(value)))
        if self.kind == "float":
            return float(value)
        if self.kind == "boolean":
            return bool(value)
        return value

    def snap(self, value: Any) -> Any:
        """Cast, clip into range and round onto the step grid (for engines that only approximate it)."""
        value = self.cast(value)
        if self.kind not in ("int", "float"):
            return value
        assert self.low is not None and self.high is not None
        grid = self.grid
        if grid is not None:
            return min(grid, key=lambda g: abs(g - value))
        return self.cast(min(max(value, self.low), self.high))

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one this parameter can take."""
        if self.kind in ("choice", "boolean", "fixed"):
            return any(value == v and type(value) is type(v) for v in self.grid or ())
        if self.kind == "int" and (not isinstance(value, int) or isinstance(value, bool)):
            return False
        if self.kind == "float" and not isinstance(value, float):
            return False
        assert self.low is not None and self.high is not None
        if not (self.low - 1e-12 <= value <= self.high + 1e-12):
            return False
        grid = self.grid
        return grid is None or any(math.isclose(value, g, rel_tol=1e-9, abs_tol=1e-12) for g in grid)

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly description (recorded with the study)."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind in ("int", "float"):
            out.update(low=self.low, high=self.high, step=self.step, log=self.log)
        if self.kind == "choice":
            out["values"] = list(self.values)
        out["default"] = self.default
        if self.conditions:
            out["conditions"] = [{"parent": c.parent, "values": list(c.values)} for c in self.conditions]
        return out

    # -- conversion from KerasTuner ------------------------------------------------
    @classmethod
    def from_kerastuner(cls, hp: Any) -> "Param":
        conds = tuple(Condition(c.name, tuple(c.values)) for c in getattr(hp, "conditions", []))
        if isinstance(hp, kt.engine.hyperparameters.Fixed):
            return cls(hp.name, "fixed", default=hp.value, values=(hp.value,), conditions=conds)
        if isinstance(hp, kt.engine.hyperparameters.Boolean):
            return cls(hp.name, "boolean", default=bool(hp.default), conditions=conds)
        if isinstance(hp, kt.engine.hyperparameters.Choice):
            return cls(hp.name, "choice", values=tuple(hp.values), default=hp.default, conditions=conds)
        if isinstance(hp, kt.engine.hyperparameters.Int):
            kind: ParamKind = "int"
        elif isinstance(hp, kt.engine.hyperparameters.Float):
            kind = "float"
        else:
            raise ConfigError(f"space.{hp.name}", f"unsupported hyperparameter type {type(hp).__name__}")
        log = hp.sampling in ("log", "reverse_log")
        step = hp.step
        if kind == "int" and not log and step is None:
            step = 1
        default = hp.default if hp.default is not None else hp.min_value
        return cls(
            hp.name, kind, low=hp.min_value, high=hp.max_value, step=step, log=log,
            default=default, conditions=conds,
        )

    def declare_on(self, hp: kt.HyperParameters) -> None:
        """Declare this parameter on ``hp`` with KerasTuner's public calls, inside its conditional scopes."""
        import contextlib

        with contextlib.ExitStack() as stack:
            for c in self.conditions:
                stack.enter_context(hp.conditional_scope(c.parent, list(c.values)))
            if self.kind == "fixed":
                hp.Fixed(self.name, self.default)
            elif self.kind == "boolean":
                hp.Boolean(self.name, default=self.default)
            elif self.kind == "choice":
                hp.Choice(self.name, list(self.values), default=self.default)
            else:
                fn = hp.Int if self.kind == "int" else hp.Float
                fn(self.name, self.low, self.high, step=self.step,
                   sampling="log" if self.log else "linear", default=self.default)


def validate_param(p: Param, where: str) -> None:
    """Raise ConfigError for an empty, inverted or log-incompatible range."""
    if p.kind in ("int", "float"):
        if p.low is None or p.high is None:
            raise ConfigError(where, "a numeric range needs both min and max")
        for k, v in (("min", p.low), ("max", p.high), ("step", p.step)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise ConfigError(f"{where}.{k}", f"must be a finite number, got {v!r}")
        if p.low > p.high:
            raise ConfigError(where, f"range is inverted: min={p.low} > max={p.high}; swap them")
        if p.low == p.high:
            raise ConfigError(where, f"range is empty: min == max == {p.low}; use a fixed value instead")
        if p.log and p.low <= 0:
            raise ConfigError(where, f"log sampling needs min > 0, got min={p.low}; raise min or use linear sampling")
        if p.step is not None and p.step <= 0:
            raise ConfigError(where, f"step must be > 0, got {p.step}")
        if p.log_grid and p.step is not None and p.step <= 1:
            raise ConfigError(where, f"with log sampling, step is a factor and must be > 1, got {p.step}")
    if p.kind == "choice":
        if not p.values:
            raise ConfigError(where, "a choice needs at least one value")
        if len(set(map(repr, p.values))) != len(p.values):
            raise ConfigError(where, f"choice values repeat: {list(p.values)}")


@dataclass
class SearchSpace:
    """An ordered list of hyperparameters with their conditions."""

    params: list[Param] = field(default_factory=list)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for p in self.params:
            if p.name in seen:
                raise ConfigError(f"space.{p.name}", "duplicate hyperparameter name")
            seen.add(p.name)
            validate_param(p, f"space.{p.name}")
        for p in self.params:
            for c in p.conditions:
                if c.parent not in seen:
                    raise ConfigError(f"space.{p.name}", f"condition names unknown parent {c.parent!r}")

    def __getitem__(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def describe(self) -> list[dict[str, Any]]:
        return [p.describe() for p in self.params]

    # -- sampling helpers ------------------------------------------------------------
    def active(self, assignment: Mapping[str, Any]) -> dict[str, Any]:
        """Keep only the values of parameters active under ``assignment``, in declaration order."""
        out: dict[str, Any] = {}
        for p in self.params:
            if p.name in assignment and p.is_active(out):
                out[p.name] = assignment[p.name]
        return out

    def check(self, assignment: Mapping[str, Any]) -> None:
        """Raise ConfigError unless ``assignment`` holds exactly the active parameters, each in range."""
        active = self.active(assignment)
        for p in self.params:
            if p.is_active(active) and p.name not in assignment:
                raise ConfigError(f"params.{p.name}", "active hyperparameter has no value")
        for name, value in assignment.items():
            if name not in active:
                raise ConfigError(f"params.{name}", "value given for an inactive or unknown hyperparameter")
            if not self[name].contains(value):
                raise ConfigError(f"params.{name}", f"value {value!r} outside {self[name].describe()}")

    def defaults(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for p in self.params:
            if p.is_active(out):
                out[p.name] = p.default
        return out

    def hyperparameters_for(self, values: Mapping[str, Any]) -> kt.HyperParameters:
        """A KerasTuner ``HyperParameters`` whose calls return exactly ``values``."""
        hp = kt.HyperParameters()
        hp.values = dict(values)
        return hp

    def to_kerastuner(self) -> kt.HyperParameters:
        hp = kt.HyperParameters()
        for p in self.params:
            p.declare_on(hp)
        return hp
