"""The one interface every search engine is driven through: ask for a configuration, tell its result."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from hpo.space import SearchSpace
from hpo.trial import TrialResult


@dataclass
class Proposal:
    """A configuration the engine wants evaluated."""

    number: int
    params: dict[str, Any]
    epochs: int | None = None  # set by engines that allot budgets (KerasTuner's Hyperband)
    handle: Any = field(default=None, repr=False)  # the engine's own trial object


class Driver(abc.ABC):
    """Ask/tell over one engine. The study loop owns training; the driver owns sampling and its storage."""

    name: str = "driver"
    supports_pruning: bool = False

    def __init__(self, space: SearchSpace, *, direction: str, seed: int) -> None:
        self.space = space
        self.direction = direction
        self.seed = seed

    @abc.abstractmethod
    def open(self, identity: dict[str, Any]) -> None:
        """Create the engine's study, or resume it; refuse one recorded with a different ``identity``."""

    @abc.abstractmethod
    def n_finished(self) -> int:
        """Trials already finished (complete, pruned or failed; not interrupted ones)."""

    @abc.abstractmethod
    def ask(self) -> Proposal | None:
        """The next configuration, or None when the engine has nothing more to propose."""

    @abc.abstractmethod
    def tell(self, proposal: Proposal, result: TrialResult) -> None:
        """Record a finished trial."""

    def should_prune(self, proposal: Proposal, step: int, value: float) -> bool:
        """Report an intermediate select value; True when the trial should stop."""
        return False

    def close(self) -> None:
        """Release the engine's resources."""

    def loss(self, value: float) -> float:
        """The value to minimise for engines that only minimise."""
        return -value if self.direction == "maximize" else value
