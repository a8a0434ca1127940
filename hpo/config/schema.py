"""Study configuration: typed dataclasses, read from YAML and validated before anything runs.

Every field is checked up front (unknown keys, wrong types, empty or inverted
ranges, unknown builder, driver, sampler or dataset, an objective naming the
test split) and a bad one raises :class:`hpo.errors.ConfigError` naming it.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Union, get_args, get_origin, get_type_hints

from hpo.errors import ConfigError

SAMPLERS = {
    "optuna": ("tpe", "random", "grid", "cmaes", "gp", "nsga2"),
    "hyperopt": ("tpe", "anneal", "rand"),
    "kerastuner": ("random", "bayesian", "hyperband"),
}
PRUNERS = ("none", "median", "successive_halving", "hyperband")
COMBINES = ("probs", "logits", "geometric", "vote")
METHODS = ("greedy", "top_k", "weights")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass
class StudySection:
    name: str = "study"
    seed: int = 0
    n_trials: int = 12
    run_dir: str | None = None  # default: runs/<name>
    # Wall-clock budget of one `hpo run` (seconds from its start): no trial starts after it; running ones finish.
    timeout_s: float | None = None
    enqueue: list[Any] = field(default_factory=list)  # [{param: value, ...}, ...] evaluated first, in order
    warm_start: str | None = None  # a run directory whose finished trials (same space) the sampler starts from


@dataclass
class DriverSection:
    name: str = "optuna"
    sampler: str = "tpe"
    pruner: str = "none"
    storage: str | None = None  # Optuna storage URL; default: SQLite file in the run dir
    # Shared storages (any URL given in `storage`): workers record a heartbeat while a trial runs; a RUNNING
    # trial whose heartbeat is older than `grace_s` belonged to a dead worker and is failed or retried.
    heartbeat_s: float = 10.0
    grace_s: float = 60.0
    stale_trials: str = "fail"  # fail | retry (retry: Optuna re-enqueues the same parameters once)
    storage_retry_s: float = 300.0  # how long a worker keeps retrying when the database is unreachable


@dataclass
class DataSection:
    dataset: str = "digits"
    path: str | None = None
    split_seed: int = 0
    limit_train: int | None = None
    validation_size: int | None = None  # mnist: rows cut from train for select + audit (default 10,000)


@dataclass
class SpaceSection:
    builder: str = "mlp"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainingSection:
    # A number, or searched per trial with the syntax of a space.params entry ({min, max, step, log} or {values}).
    epochs: Any = 10
    batch_size: Any = 64
    early_stopping_patience: int | None = None
    restore_best_weights: bool = False
    trial_timeout_s: float | None = None
    deterministic: bool = True
    save_models: bool = True
    callbacks: list[Any] = field(default_factory=list)  # [{name: ReduceLROnPlateau, args: {...}}, ...]
    keep_top_models: int | None = None  # only the best N trials keep model.keras (every trial keeps its logits)
    folds: int | None = None  # k-fold cross-validation on train+select (k >= 2); null: one train/select split


@dataclass
class ExecutorSection:
    """Where trials run: in this process, or in worker processes pinned to devices."""

    mode: str = "auto"  # auto: worker processes when a GPU is visible or cpu_workers > 1; inprocess; processes
    gpus: list[int] | None = None  # GPU indices to use; default: every visible GPU; [] forces CPU workers
    workers_per_gpu: int = 1  # trials at once on each GPU, each worker limited to its share of the memory
    cpu_workers: int = 1  # worker processes when no GPU is used
    threads_per_worker: int | None = None  # CPU threads per worker; default: cores // workers
    recycle_after: int | None = 25  # replace a worker process after this many trials (bounds what a library leaks)
    memory_limit_mb: int | None = None  # cap each worker's address space; a trial that exceeds it fails
    start_timeout_s: float = 300.0
    pack: int = 1  # >1: up to this many trials sharing an architecture train as one packed model (mlp; hpo.execution.packed)


@dataclass
class ObjectiveSection:
    """One objective: a metric the model reports (scored on select) or a built-in measure (hpo.objectives)."""

    metric: str = "accuracy"
    direction: str = "maximize"


@dataclass
class ConstraintSection:
    """``constraints[i]``: a trial is feasible when ``min <= metric <= max`` (either bound may be left out)."""

    metric: str = "params"
    max: float | None = None
    min: float | None = None


@dataclass
class TrackingSection:
    uri: str | None = None  # default: sqlite:///<run dir>/mlflow.db
    experiment: str | None = None  # default: the study name


@dataclass
class EnsembleSection:
    enabled: bool = True
    method: str = "greedy"
    combine: str = "probs"
    size: int = 5
    metric: str = "nll"
    calibrate: bool = True  # one temperature per member, fitted on select, applied before combining
    confidence: float = 0.95  # greedy: an addition must improve select in this share of bootstrap resamples; 0: any gain
    snapshot_epochs: list[int] = field(default_factory=list)  # epochs of each trial kept as extra candidates
    snapshot_budget_mb: float = 200.0  # disk for snapshots; the worst trials' go first
    max_per_config: int = 3  # candidates (a trial, its snapshots, trials of the same configuration) per configuration
    # retrain the best configuration with N seeds as one packed model (mlp): ensemble candidates. null (the default):
    # 2 seeds where that applies (hpo.execution.refit.auto_refit), else none; 0: never
    seed_refit: int | None = None


@dataclass
class TensorBoardSection:
    enabled: bool = False
    histograms: bool = False


@dataclass
class PlotsSection:
    enabled: bool = True


@dataclass
class ReportSection:
    enabled: bool = True  # write runs/<name>/report.html at the end of every run


@dataclass
class GuardsSection:
    enabled: bool = True
    gap_threshold: float | None = None  # default: twice the bootstrap standard error of the gap
    n_bootstrap: int = 2000
    confidence: float = 0.95
    audit_per_epoch: bool = True  # score audit after every epoch (for the epoch-selection report)
    reselect_top_k: int = 0  # retrain the top k configurations with new seeds and choose by their mean
    reselect_seeds: int = 2
    stop_when_converged: bool = False  # stop when the regret bound falls below the select metric's error
    stop_min_trials: int = 10


@dataclass
class StudyConfig:
    """Everything a study needs; ``hpo run`` reads it from YAML."""

    study: StudySection = field(default_factory=StudySection)
    driver: DriverSection = field(default_factory=DriverSection)
    data: DataSection = field(default_factory=DataSection)
    space: SpaceSection = field(default_factory=SpaceSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    executor: ExecutorSection = field(default_factory=ExecutorSection)
    objective: ObjectiveSection = field(default_factory=ObjectiveSection)  # the first (or only) objective
    # `objective` given as a list: its second and later entries (the config names no such key; see build_config)
    more_objectives: list[ObjectiveSection] = field(default_factory=list, metadata={"internal": True})
    constraints: list[ConstraintSection] = field(default_factory=list)
    tracking: TrackingSection = field(default_factory=TrackingSection)
    ensemble: EnsembleSection = field(default_factory=EnsembleSection)
    guards: GuardsSection = field(default_factory=GuardsSection)
    tensorboard: TensorBoardSection = field(default_factory=TensorBoardSection)
    plots: PlotsSection = field(default_factory=PlotsSection)
    report: ReportSection = field(default_factory=ReportSection)

    @property
    def max_epochs(self) -> int:
        """``training.epochs``, or the most a searched one can take (pruners' and progress bars' horizon)."""
        from hpo.space.fit_params import fit_param

        e = self.training.epochs
        return e if isinstance(e, int) else int(max(fit_param("epochs", e).grid or (fit_param("epochs", e).high,)))

    @property
    def objectives(self) -> list[ObjectiveSection]:
        """Every objective, the first one (``objective``) first."""
        return [self.objective, *self.more_objectives]

    @property
    def multi_objective(self) -> bool:
        return bool(self.more_objectives)

    @property
    def run_dir(self) -> Path:
        return Path(self.study.run_dir or f"runs/{self.study.name}")

    def to_dict(self) -> dict[str, Any]:
        """The config as YAML gives it: ``objective`` a list when there are several (``build_config`` reads it back)."""
        d = dataclasses.asdict(self)
        more = d.pop("more_objectives")
        if more:
            d["objective"] = [d["objective"], *more]
        if not d["constraints"]:
            del d["constraints"]  # a study from before constraints existed keeps its config.yaml and identity
        return d

    def search_identity(self) -> dict[str, Any]:
        """The fields that define what is searched: a resumed study must match them."""
        d = self.to_dict()
        return {k: d[k] for k in ("data", "space", "objective")} | {
            "driver": {"name": self.driver.name, "sampler": self.driver.sampler},
            # folds only when set: a study from before cross-validation existed resumes unchanged
            "training": {k: d["training"][k] for k in ("epochs", "batch_size")}
            | ({"folds": self.training.folds} if self.training.folds else {}),
            "seed": self.study.seed,
        } | ({"constraints": d["constraints"]} if self.constraints else {})


# -- parsing ------------------------------------------------------------------------------
def _check_type(value: Any, typ: Any, where: str) -> Any:
    origin = get_origin(typ)
    if origin is Union or origin is types.UnionType:  # Optional[X] and X | None
        args = get_args(typ)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_type(value, inner[0], where)
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(where, f"must be true or false, got {value!r}")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(where, f"must be an integer, got {value!r}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(where, f"must be a number, got {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(where, f"must be a string, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(where, f"must be a list, got {type(value).__name__}")
        return list(value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(where, f"must be a mapping, got {type(value).__name__}")
        return dict(value)
    return value


def build_section(cls: type, raw: Any, where: str) -> Any:
    """The section ``cls`` from a mapping: unknown keys named with a close match, values checked against types."""
    if raw is None:
        return cls()
    if not isinstance(raw, Mapping):
        raise ConfigError(where, f"must be a mapping of fields, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls) if not f.metadata.get("internal")]
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if cls is StudyConfig and key in ("objective", "constraints") and isinstance(value, (list, tuple)):
            kwargs.update(_section_list(key, value))
            continue
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(names)}"
            raise ConfigError(path, f"unknown key{hint}")
        typ = hints[key]
        if dataclasses.is_dataclass(typ):
            kwargs[key] = build_section(typ, value, path)
        else:
            kwargs[key] = _check_type(value, typ, path)
    return cls(**kwargs)


def _section_list(key: str, items: list[Any] | tuple[Any, ...]) -> dict[str, Any]:
    """``objective`` given as a list (the first entry becomes ``objective``, the rest ``more_objectives``), or
    ``constraints``: each entry built as its section, named ``objective[i]`` / ``constraints[i]`` when bad."""
    if key == "constraints":
        return {key: [build_section(ConstraintSection, c, f"constraints[{i}]") for i, c in enumerate(items)]}
    if not items:
        raise ConfigError("objective", "an empty list: give one {metric, direction} mapping, or a list of them")
    built = [build_section(ObjectiveSection, o, f"objective[{i}]") for i, o in enumerate(items)]
    return {"objective": built[0], "more_objectives": built[1:]}
