"""Study configuration: typed dataclasses, read from YAML and validated before anything runs.

Every field is checked up front (unknown keys, wrong types, empty or inverted
ranges, unknown builder, driver, sampler or dataset, an objective naming the
test split) and a bad one raises :class:`hpo.errors.ConfigError` naming it.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Union, get_args, get_origin, get_type_hints

import yaml

from hpo.errors import ConfigError

SAMPLERS = {
    "optuna": ("tpe", "random", "grid", "cmaes", "gp"),
    "hyperopt": ("tpe", "anneal", "rand"),
    "kerastuner": ("random", "bayesian", "hyperband"),
}
PRUNERS = ("none", "median", "hyperband")
COMBINES = ("probs", "logits", "geometric", "vote")
METHODS = ("greedy", "top_k", "weights")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass
class StudySection:
    name: str = "study"
    seed: int = 0
    n_trials: int = 12
    run_dir: str | None = None  # default: runs/<name>


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
    epochs: int = 10
    batch_size: int = 64
    early_stopping_patience: int | None = None
    restore_best_weights: bool = False
    trial_timeout_s: float | None = None
    deterministic: bool = True
    save_models: bool = True
    callbacks: list[Any] = field(default_factory=list)  # [{name: ReduceLROnPlateau, args: {...}}, ...]
    keep_top_models: int | None = None  # only the best N trials keep model.keras (every trial keeps its logits)


@dataclass
class ExecutorSection:
    """Where trials run: in this process, or in worker processes pinned to devices."""

    mode: str = "auto"  # auto: worker processes when a GPU is visible or cpu_workers > 1; inprocess; processes
    gpus: list[int] | None = None  # GPU indices to use; default: every visible GPU; [] forces CPU workers
    workers_per_gpu: int = 1  # trials at once on each GPU, each worker limited to its share of the memory
    cpu_workers: int = 1  # worker processes when no GPU is used
    threads_per_worker: int | None = None  # CPU threads per worker; default: cores // workers
    recycle_after: int | None = 25  # replace a worker process after this many trials (TF grows ~4 MB per trial)
    memory_limit_mb: int | None = None  # cap each worker's address space; a trial that exceeds it fails
    start_timeout_s: float = 300.0
    pack: int = 1  # >1: up to this many trials sharing an architecture train as one packed model (mlp; hpo.execution.packed)


@dataclass
class ObjectiveSection:
    metric: str = "accuracy"
    direction: str = "maximize"


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
    snapshot_epochs: list[int] = field(default_factory=list)  # epochs of each trial kept as extra candidates
    snapshot_budget_mb: float = 200.0  # disk for snapshots; the worst trials' go first
    max_per_config: int = 3  # candidates (a trial, its snapshots, trials of the same configuration) per configuration
    seed_refit: int = 0  # retrain the best configuration with N seeds as one packed model (mlp) and report it


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
    objective: ObjectiveSection = field(default_factory=ObjectiveSection)
    tracking: TrackingSection = field(default_factory=TrackingSection)
    ensemble: EnsembleSection = field(default_factory=EnsembleSection)
    guards: GuardsSection = field(default_factory=GuardsSection)
    tensorboard: TensorBoardSection = field(default_factory=TensorBoardSection)
    plots: PlotsSection = field(default_factory=PlotsSection)
    report: ReportSection = field(default_factory=ReportSection)

    @property
    def run_dir(self) -> Path:
        return Path(self.study.run_dir or f"runs/{self.study.name}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def search_identity(self) -> dict[str, Any]:
        """The fields that define what is searched: a resumed study must match them."""
        d = self.to_dict()
        return {k: d[k] for k in ("data", "space", "objective")} | {
            "driver": {"name": self.driver.name, "sampler": self.driver.sampler},
            "training": {k: d["training"][k] for k in ("epochs", "batch_size")},
            "seed": self.study.seed,
        }


# -- parsing ------------------------------------------------------------------------------
def _check_type(value: Any, typ: Any, where: str) -> Any:
    origin = get_origin(typ)
    if origin is Union or str(origin) == "types.UnionType":
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


def _build(cls: type, raw: Any, where: str) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, Mapping):
        raise ConfigError(where, f"must be a mapping of fields, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(names)}"
            raise ConfigError(path, f"unknown key{hint}")
        typ = hints[key]
        if dataclasses.is_dataclass(typ):
            kwargs[key] = _build(typ, value, path)
        else:
            kwargs[key] = _check_type(value, typ, path)
    return cls(**kwargs)


def _one_of(value: str, allowed: tuple[str, ...], where: str) -> None:
    if value not in allowed:
        close = difflib.get_close_matches(value, allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(where, f"{value!r} is not one of {', '.join(allowed)}{hint}")


def validate(cfg: StudyConfig) -> StudyConfig:
    """Check values that types alone do not catch; returns ``cfg`` unchanged."""
    # The order of the checks decides which of several bad fields is named first: keep it.
    for check in (_check_study, _check_driver, _check_data, _check_training, _check_worker_liveness,
                  _check_executor, _check_objective, _check_ensemble, _check_extras, _check_guards):
        check(cfg)
    return cfg


def _check_study(cfg: StudyConfig) -> None:
    if not NAME_RE.match(cfg.study.name):
        raise ConfigError("study.name", f"{cfg.study.name!r} must be 1-100 letters, digits, '_', '-' or '.', starting with a letter or digit")
    if cfg.study.n_trials < 1:
        raise ConfigError("study.n_trials", f"must be at least 1, got {cfg.study.n_trials}")
    if cfg.study.seed < 0:
        raise ConfigError("study.seed", f"must be >= 0, got {cfg.study.seed}")


def _check_driver(cfg: StudyConfig) -> None:
    _one_of(cfg.driver.name, tuple(SAMPLERS), "driver.name")
    _one_of(cfg.driver.sampler, SAMPLERS[cfg.driver.name], "driver.sampler")
    _one_of(cfg.driver.pruner, PRUNERS, "driver.pruner")
    if cfg.driver.storage is not None and cfg.driver.name != "optuna":
        raise ConfigError("driver.storage", f"a shared storage needs the optuna driver; {cfg.driver.name} keeps its "
                                            "state in the run directory (remove driver.storage)")
    if cfg.driver.pruner != "none" and cfg.driver.name != "optuna":
        raise ConfigError("driver.pruner", f"pruning needs the optuna driver; set pruner: none for {cfg.driver.name}")


def _check_data(cfg: StudyConfig) -> None:
    from hpo.data import DATASETS

    _one_of(cfg.data.dataset, DATASETS, "data.dataset")
    if cfg.data.validation_size is not None:
        if cfg.data.dataset != "mnist":
            raise ConfigError("data.validation_size", f"applies to mnist only, not {cfg.data.dataset!r}; remove it")
        if not 2 <= cfg.data.validation_size <= 30_000:
            raise ConfigError("data.validation_size", f"must be between 2 and 30000 rows, got {cfg.data.validation_size}")
    if cfg.data.limit_train is not None and cfg.data.limit_train < 10:
        raise ConfigError("data.limit_train", f"must be at least 10, got {cfg.data.limit_train}")


def _check_training(cfg: StudyConfig) -> None:
    if cfg.training.epochs < 1:
        raise ConfigError("training.epochs", f"must be at least 1, got {cfg.training.epochs}")
    if cfg.training.batch_size < 1:
        raise ConfigError("training.batch_size", f"must be at least 1, got {cfg.training.batch_size}")
    if cfg.training.early_stopping_patience is not None and cfg.training.early_stopping_patience < 0:
        raise ConfigError("training.early_stopping_patience", "must be >= 0")
    if cfg.training.trial_timeout_s is not None and cfg.training.trial_timeout_s <= 0:
        raise ConfigError("training.trial_timeout_s", "must be > 0 seconds")
    if cfg.training.keep_top_models is not None and cfg.training.keep_top_models < 1:
        raise ConfigError("training.keep_top_models", f"must be at least 1 (or null to keep every model), got {cfg.training.keep_top_models}")
    k = cfg.training.keep_top_models
    if k is not None and cfg.ensemble.enabled and cfg.training.save_models and k < cfg.ensemble.size:
        raise ConfigError("training.keep_top_models", f"keeps {k} models but the ensemble may take {cfg.ensemble.size} "
                                                      "members: keep at least ensemble.size models")


def _check_worker_liveness(cfg: StudyConfig) -> None:
    """Heartbeats, stale trials and storage retries of workers on a shared storage."""
    d = cfg.driver
    if d.heartbeat_s <= 0 or d.grace_s <= d.heartbeat_s:
        raise ConfigError("driver.grace_s" if d.heartbeat_s > 0 else "driver.heartbeat_s",
                          f"need heartbeat_s > 0 and grace_s > heartbeat_s, got {d.heartbeat_s} and {d.grace_s}")
    _one_of(d.stale_trials, ("fail", "retry"), "driver.stale_trials")
    if d.storage_retry_s < 0:
        raise ConfigError("driver.storage_retry_s", f"must be >= 0 seconds, got {d.storage_retry_s}")


def _check_executor(cfg: StudyConfig) -> None:
    e = cfg.executor
    _one_of(e.mode, ("auto", "inprocess", "processes"), "executor.mode")
    if e.gpus is not None and any((not isinstance(g, int) or isinstance(g, bool) or g < 0) for g in e.gpus):
        raise ConfigError("executor.gpus", f"must be a list of GPU indices (integers >= 0), got {e.gpus!r}")
    for key in ("workers_per_gpu", "cpu_workers"):
        if not 1 <= getattr(e, key) <= 64:
            raise ConfigError(f"executor.{key}", f"must be between 1 and 64, got {getattr(e, key)}")
    for key in ("threads_per_worker", "recycle_after"):
        if getattr(e, key) is not None and getattr(e, key) < 1:
            raise ConfigError(f"executor.{key}", f"must be at least 1 (or null), got {getattr(e, key)}")
    if e.memory_limit_mb is not None and e.memory_limit_mb < 256:
        raise ConfigError("executor.memory_limit_mb", f"must be at least 256 MB (or null), got {e.memory_limit_mb}")
    if e.start_timeout_s <= 0:
        raise ConfigError("executor.start_timeout_s", "must be > 0 seconds")
    if not isinstance(e.pack, int) or isinstance(e.pack, bool) or not 1 <= e.pack <= 512:
        raise ConfigError("executor.pack", f"must be a whole number of trials per packed model, 1 (off) to 512; got {e.pack!r}")


def _check_objective(cfg: StudyConfig) -> None:
    _one_of(cfg.objective.direction, ("maximize", "minimize"), "objective.direction")
    metric = cfg.objective.metric
    if re.match(r"^(test|audit)[_:]", metric) or metric in ("test", "audit"):
        raise ConfigError(
            "objective.metric",
            f"{metric!r} names the {metric.split('_')[0].split(':')[0]} split; the driver may only optimise on the select half: "
            "give a plain metric name such as 'accuracy' or 'loss'",
        )
    if metric.startswith("val_"):
        raise ConfigError("objective.metric", f"{metric!r}: give the metric without 'val_'; it is always scored on select")


def _check_ensemble(cfg: StudyConfig) -> None:
    _one_of(cfg.ensemble.method, METHODS, "ensemble.method")
    _one_of(cfg.ensemble.combine, COMBINES, "ensemble.combine")
    _one_of(cfg.ensemble.metric, ("nll", "accuracy"), "ensemble.metric")
    bad = [e for e in cfg.ensemble.snapshot_epochs if not isinstance(e, int) or not 1 <= e < cfg.training.epochs]
    if bad:
        raise ConfigError("ensemble.snapshot_epochs", f"{bad} are not epochs before the last "
                                                      f"(1 to {cfg.training.epochs - 1}); the last epoch is the trial itself")
    if cfg.ensemble.snapshot_budget_mb <= 0 or cfg.ensemble.max_per_config < 1:
        raise ConfigError("ensemble.snapshot_budget_mb" if cfg.ensemble.snapshot_budget_mb <= 0 else "ensemble.max_per_config",
                          "must be positive (snapshot_budget_mb in MB, max_per_config at least 1)")
    if cfg.ensemble.method == "weights" and cfg.ensemble.combine == "vote":
        raise ConfigError("ensemble.combine", "weights are fitted for probs, logits or geometric, not vote: "
                                              "choose one of those or method: greedy")
    if not 0 <= cfg.ensemble.seed_refit <= 512:
        raise ConfigError("ensemble.seed_refit", f"must be between 0 and 512 members, got {cfg.ensemble.seed_refit}")
    if cfg.ensemble.size < 1:
        raise ConfigError("ensemble.size", f"must be at least 1, got {cfg.ensemble.size}")


def _check_extras(cfg: StudyConfig) -> None:
    """Training callbacks and TensorBoard: checked by building them."""
    from hpo.config.callbacks import from_config

    from_config(cfg.training.callbacks)  # builds each once: bad names or arguments fail here
    if cfg.tensorboard.enabled:
        from hpo.tracking.tensorboard import available

        if not available():
            raise ConfigError("tensorboard.enabled", "needs the tensorboard package: pip install tensorboard")


def _check_guards(cfg: StudyConfig) -> None:
    g = cfg.guards
    if g.gap_threshold is not None and g.gap_threshold < 0:
        raise ConfigError("guards.gap_threshold", f"must be >= 0, got {g.gap_threshold}")
    if g.n_bootstrap < 100:
        raise ConfigError("guards.n_bootstrap", f"must be at least 100 resamples, got {g.n_bootstrap}")
    if not 0.5 < g.confidence < 1:
        raise ConfigError("guards.confidence", f"must lie in (0.5, 1), got {g.confidence}")
    if g.reselect_top_k < 0 or g.reselect_seeds < 1:
        raise ConfigError("guards.reselect_top_k" if g.reselect_top_k < 0 else "guards.reselect_seeds",
                          "reselect_top_k must be >= 0 and reselect_seeds >= 1")
    if g.stop_min_trials < 3:
        raise ConfigError("guards.stop_min_trials", f"must be at least 3, got {g.stop_min_trials}")


def from_dict(raw: Mapping[str, Any]) -> StudyConfig:
    """A validated config from a plain mapping."""
    return validate(_build(StudyConfig, raw, ""))


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
