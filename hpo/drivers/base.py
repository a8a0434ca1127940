"""The one interface every search engine is driven through: ask for a configuration, tell its result."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from hpo.errors import ConfigError
from hpo.space import SearchSpace
from hpo.results import TrialResult


@dataclass
class Proposal:
    """A configuration the engine wants evaluated."""

    number: int
    params: dict[str, Any]
    epochs: int | None = None  # set by engines that allot budgets (KerasTuner's Hyperband): the last epoch to reach
    handle: Any = field(default=None, repr=False)  # the engine's own trial object
    # Engines that promote trials (KerasTuner's Hyperband): the trial whose checkpoint this one continues, and the
    # epochs that trial had trained (fit's ``initial_epoch``); ``checkpoint``: the engine may continue this trial
    # later, so its weights and optimizer state are kept.
    parent: int | None = None
    initial_epoch: int = 0
    checkpoint: bool = False


@dataclass(frozen=True)
class Wait:
    """Returned by ``ask`` on a shared study whose remaining budget is held by other workers' running trials."""

    seconds: float = 2.0


class Driver(abc.ABC):
    """Ask/tell over one engine. The study loop owns training; the driver owns sampling and its storage.

    Everything the study calls on a driver is declared here. The defaults are those of a driver whose
    study is not shared: one process owns it, so it created it, and only that process reads it."""

    name: str = "driver"
    supports_pruning: bool = False
    shared: bool = False  # several processes (machines) share this study's storage
    created: bool = True  # this process created the study (and so its MLflow parent run)

    def __init__(self, space: SearchSpace, *, direction: str, seed: int) -> None:
        self.space = space
        self.direction = direction
        self.seed = seed
        self.sampler_seed = seed  # the seed of the stream this process samples from (see OptunaDriver.open)
        self._parent_run_id: str | None = None
        self._tracking_uri: str | None = None

    @abc.abstractmethod
    def open(self, identity: dict[str, Any]) -> None:
        """Create the engine's study, or resume it; refuse one recorded with a different ``identity``."""

    @abc.abstractmethod
    def n_finished(self) -> int:
        """Trials already finished (complete, pruned or failed; not interrupted ones)."""

    @abc.abstractmethod
    def ask(self) -> "Proposal | Wait | None":
        """The next configuration; None when the engine (or a shared study's budget) is done; Wait on a shared
        study whose last trials are running elsewhere."""

    @abc.abstractmethod
    def tell(self, proposal: Proposal, result: TrialResult) -> bool:
        """Record a finished trial; False when the engine had settled it already (another worker of a shared
        study failed it as stale), so this result is not the one it keeps."""
        return True

    def finished_numbers(self) -> list[int]:
        """Numbers of the trials that count as finished (every worker's, for a shared study)."""
        return []

    def parent_run_id(self) -> str | None:
        """The MLflow parent run recorded with the study (read by the workers of a shared study); kept in
        memory by a driver whose study is not shared."""
        return self._parent_run_id

    def set_parent_run_id(self, run_id: str) -> None:
        """Record the study's MLflow parent run where every worker of a shared study can read it."""
        self._parent_run_id = run_id

    def tracking_uri(self) -> str | None:
        """The study's effective MLflow tracking URI as its creator recorded it (password redacted)."""
        return self._tracking_uri

    def set_tracking_uri(self, uri: str) -> None:
        """Record the study's effective tracking URI where every worker of a shared study can read it."""
        self._tracking_uri = uri

    def prefer(self, params: dict[str, Any]) -> bool:
        """Ask the engine to give its next proposal these parameter values, sampling the others itself
        (packed trials share an architecture). False when the engine cannot; the next ask is then free."""
        return False

    def enqueue(self, points: list[dict[str, Any]]) -> int:
        """Evaluate these configurations (``study.enqueue``, checked against the space) before any sampled one,
        in order, leaving out those the study already evaluated; how many were enqueued."""
        raise ConfigError("study.enqueue", f"the {self.name} driver cannot enqueue configurations")

    def warm_start(self, records: list[dict[str, Any]], source: str) -> int:
        """Give the sampler an earlier study's finished trials (``result.json`` records of the same space) as
        history: they are not run again and do not count against ``n_trials``; how many were added."""
        raise ConfigError("study.warm_start", f"the {self.name} driver cannot start from earlier trials")

    def should_prune(self, proposal: Proposal, step: int, value: float) -> bool:
        """Report an intermediate select value; True when the trial should stop."""
        return False

    def pareto_front(self) -> list[int] | None:
        """Numbers of the trials on the engine's Pareto front (several objectives, constraints); None when the
        engine keeps none."""
        return None

    def close(self) -> None:
        """Release the engine's resources."""

    def wait_until_idle(self) -> None:
        """Shared studies: return once no trial is running anywhere (stale ones are failed on the way)."""

    def loss(self, value: float) -> float:
        """The value to minimise for engines that only minimise."""
        return -value if self.direction == "maximize" else value
