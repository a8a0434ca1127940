"""One search space, declared with KerasTuner's ``HyperParameters``, for every engine.

A builder declares its hyperparameters the way KerasTuner users already do
(``hp.Int``, ``hp.Float(sampling="log")``, ``hp.Choice``, ``hp.Boolean``,
``hp.Fixed``, ``hp.conditional_scope``). :func:`discover` runs the builder a few
times to collect the declaration into a :class:`SearchSpace`, a plain ordered list
of :class:`Param` with their conditions. From it:

* :meth:`SearchSpace.suggest_optuna` samples define-by-run with ``trial.suggest_*``;
* :meth:`SearchSpace.to_hyperopt` builds Hyperopt's declarative expression, in
  which conditional parameters are nested ``hp.choice`` branches, and
  :meth:`SearchSpace.from_hyperopt` maps a sample back to flat values;
* :meth:`SearchSpace.to_kerastuner` gives KerasTuner's own oracles the space;
* :meth:`SearchSpace.hyperparameters_for` hands the builder a ``HyperParameters``
  holding exactly the sampled values.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Literal, Mapping

import keras_tuner as kt

from hpo.errors import ConfigError

ParamKind = Literal["int", "float", "choice", "boolean", "fixed"]
Builder = Callable[..., Any]

# Discovery stops after this many builder calls; spaces that need more are
# declared with conditional scopes, which discovery sees in one call.
MAX_DISCOVERY_BUILDS = 64


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
        if self.log:
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
        if p.log and p.step is not None and p.step <= 1 and not (p.kind == "int" and p.step == 1):
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

    # -- Optuna ------------------------------------------------------------------------
    def suggest_optuna(self, trial: Any) -> dict[str, Any]:
        """Sample define-by-run: each active parameter becomes one ``trial.suggest_*`` call."""
        out: dict[str, Any] = {}
        for p in self.params:
            if not p.is_active(out):
                continue
            if p.kind == "fixed":
                out[p.name] = p.default
            elif p.kind in ("choice", "boolean"):
                out[p.name] = trial.suggest_categorical(p.name, list(p.grid or ()))
            elif p.log and p.step is not None and not (p.kind == "int" and p.step == 1):
                # Optuna has no multiplicative step: the geometric grid is a categorical.
                out[p.name] = trial.suggest_categorical(p.name, list(p.grid or ()))
            elif p.kind == "int":
                out[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
            else:
                out[p.name] = trial.suggest_float(
                    p.name, float(p.low), float(p.high), step=None if p.log else p.step, log=p.log
                )
        return out

    def optuna_distributions(self) -> dict[str, Any]:
        """Optuna distributions of every parameter (for enqueueing and grid samplers)."""
        import optuna.distributions as d

        out: dict[str, Any] = {}
        for p in self.params:
            if p.kind == "fixed":
                continue
            if p.kind in ("choice", "boolean") or (p.log and p.step is not None and not (p.kind == "int" and p.step == 1)):
                out[p.name] = d.CategoricalDistribution(list(p.grid or ()))
            elif p.kind == "int":
                out[p.name] = d.IntDistribution(int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
            else:
                out[p.name] = d.FloatDistribution(float(p.low), float(p.high), step=None if p.log else p.step, log=p.log)
        return out

    # -- Hyperopt ----------------------------------------------------------------------
    def to_hyperopt(self) -> dict[str, Any]:
        """Hyperopt's declarative space; conditional parameters sit in nested ``hp.choice`` branches."""
        children: dict[str, list[Param]] = {}
        top: list[Param] = []
        for p in self.params:
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
                    out[p.name] = _hyperopt_leaf(p, label(p.name, path))
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
                out[f"__branch__{p.name}"] = _hp().choice(label(p.name, path), branches)
            return out

        return node(top, "")

    def from_hyperopt(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        """Flatten a sample of :meth:`to_hyperopt` into ``{name: value}`` for the builder."""
        flat: dict[str, Any] = {}

        def walk(d: Mapping[str, Any]) -> None:
            for k, v in d.items():
                if k.startswith("__branch__"):
                    walk(v)
                else:
                    flat[k] = v

        walk(sample)
        return self.active({p.name: p.snap(flat[p.name]) for p in self.params if p.name in flat})


def _hp() -> Any:
    from hyperopt import hp

    return hp


def _hyperopt_leaf(p: Param, lab: str) -> Any:
    hp = _hp()
    if p.kind == "fixed":
        return p.default
    grid = p.grid
    if p.kind in ("choice", "boolean"):
        return hp.choice(lab, list(grid or ()))
    assert p.low is not None and p.high is not None
    if p.log and p.step is not None and not (p.kind == "int" and p.step == 1):
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


# -- discovery ----------------------------------------------------------------------------
def call_builder(build: Builder, hp: kt.HyperParameters, context: Any) -> Any:
    """Call ``build(hp)`` (a plain KerasTuner builder) or ``build(hp, context)``."""
    try:
        n_args = len(inspect.signature(build).parameters)
    except (TypeError, ValueError):
        n_args = 1
    return build(hp, context) if n_args >= 2 else build(hp)


class _DiscoveryHP(kt.HyperParameters):
    """KerasTuner's container, refusing one name declared twice with different definitions.

    KerasTuner silently returns the first declaration's value for the second one, so two
    parameters that share a name by mistake would be searched as one."""

    def _retrieve(self, hp: Any) -> Any:
        if self._exists(hp.name, hp.conditions):
            before = next((h for h in self._hps[hp.name] if h.conditions == hp.conditions), None)
            if before is not None and type(before) is type(hp):
                a = {k: v for k, v in before.get_config().items() if k != "conditions"}
                b = {k: v for k, v in hp.get_config().items() if k != "conditions"}
                if a != b:
                    raise ConfigError(f"space.{hp.name}", f"declared twice with different definitions ({a} and {b}); "
                                                          "give each hyperparameter its own name")
            elif before is not None:
                raise ConfigError(f"space.{hp.name}", f"declared twice, as {type(before).__name__} and "
                                                      f"{type(hp).__name__}; give each hyperparameter its own name")
        return super()._retrieve(hp)


def discover(build: Builder, context: Any = None, *, what: str = "builder") -> SearchSpace:
    """Collect the hyperparameters ``build`` declares, including conditional ones.

    The builder runs with default values, then once more for each value of every
    Choice/Boolean and for the maximum of every Int (loops such as
    ``for i in range(hp.Int("layers", ...))`` declare more parameters), until no
    new parameter appears. Parameters inside ``hp.conditional_scope`` keep their
    conditions; code paths that only run under a Python ``if`` are found but not
    marked conditional, as with KerasTuner's own oracles.
    """
    import keras

    found: dict[str, Any] = {}
    order: list[str] = []
    queue: list[dict[str, Any]] = [{}]
    tried: set[str] = set()
    builds = 0
    while queue and builds < MAX_DISCOVERY_BUILDS:
        preset = queue.pop(0)
        key = repr(sorted(preset.items(), key=lambda kv: kv[0]))
        if key in tried:
            continue
        tried.add(key)
        hp = _DiscoveryHP()
        hp.values = dict(preset)
        try:
            call_builder(build, hp, context)
        except ConfigError:
            raise
        except Exception as exc:
            if builds == 0:
                raise ConfigError(what, f"the builder fails with its default hyperparameters: {exc!r}") from exc
            # A probe of a non-default value may be an invalid combination; discovery goes on.
        finally:
            builds += 1
            keras.backend.clear_session(free_memory=False)  # a short loop: skip gc.collect()
        for h in hp.space:
            if h.name in found:
                continue
            found[h.name] = h
            order.append(h.name)
            p = Param.from_kerastuner(h)
            validate_param(p, f"space.{h.name}")  # what SearchSpace checks at the end, before probing its grid
            probes: list[Any] = []
            if p.kind in ("choice", "boolean"):
                probes = [v for v in (p.grid or ()) if v != p.default]
            elif p.kind == "int":
                probes = [p.grid[-1] if p.grid else p.high]
            for v in probes:
                queue.append({**hp.values, h.name: v})
    return SearchSpace([Param.from_kerastuner(found[n]) for n in order])


def apply_overrides(space: SearchSpace, overrides: Mapping[str, Mapping[str, Any]], where: str = "space.params") -> SearchSpace:
    """Narrow, widen or fix parameters by name (``{units: {min: 32, max: 256}}``, ``{act: {values: [relu]}}``, ``{dropout: {fixed: 0.1}}``)."""
    allowed = {"min", "max", "step", "log", "values", "fixed", "default"}
    params = list(space.params)
    for name, spec in overrides.items():
        field_ = f"{where}.{name}"
        idx = next((i for i, p in enumerate(params) if p.name == name), None)
        if idx is None:
            import difflib

            close = difflib.get_close_matches(name, space.names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(field_, f"not a hyperparameter of this space (known: {', '.join(space.names)}){hint}")
        if not isinstance(spec, Mapping):
            raise ConfigError(field_, f"expected a mapping such as {{min: 1, max: 4}}, got {type(spec).__name__}")
        unknown = set(spec) - allowed
        if unknown:
            raise ConfigError(f"{field_}.{sorted(unknown)[0]}", f"unknown key; allowed: {sorted(allowed)}")
        p = params[idx]
        if "fixed" in spec:
            p = replace(p, kind="fixed", default=spec["fixed"], values=(spec["fixed"],), low=None, high=None, step=None, log=False)
        elif "values" in spec:
            vals = spec["values"]
            if not isinstance(vals, (list, tuple)) or not vals:
                raise ConfigError(f"{field_}.values", "must be a non-empty list")
            p = replace(p, kind="choice", values=tuple(vals), default=vals[0], low=None, high=None, step=None, log=False)
        else:
            if p.kind not in ("int", "float"):
                raise ConfigError(field_, f"min/max/step/log apply to numeric parameters; {name!r} is a {p.kind}")
            for k in ("min", "max", "step", "default"):
                if k in spec and (not isinstance(spec[k], (int, float)) or isinstance(spec[k], bool)
                                  or not math.isfinite(spec[k])):
                    raise ConfigError(f"{field_}.{k}", f"must be a finite number, got {spec[k]!r}")
            if "log" in spec and not isinstance(spec["log"], bool):
                raise ConfigError(f"{field_}.log", f"must be true or false, got {spec['log']!r}")
            low = spec.get("min", p.low)
            high = spec.get("max", p.high)
            if p.kind == "int":
                for k in ("min", "max", "step"):
                    if k in spec and int(spec[k]) != spec[k]:
                        raise ConfigError(f"{field_}.{k}", f"{name!r} is an integer parameter, got {spec[k]!r}")
            p = replace(p, low=low, high=high, step=spec.get("step", p.step), log=spec.get("log", p.log))
            validate_param(p, field_)
            default = spec.get("default", p.default)
            if not (p.low <= default <= p.high):
                default = p.low
            p = replace(p, default=p.cast(default))
        validate_param(p, field_)
        params[idx] = p
    return SearchSpace(params)
