"""The objects one study works with, in one place (:class:`StudyRun`), instead of long argument lists."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from hpo.config import StudyConfig
from hpo.data import Splits
from hpo.drivers.base import Driver
from hpo.execution.trial import TrialSettings
from hpo.results import TrialResult
from hpo.space import Builder, SearchSpace

from hpo.study.listeners import EpochCallback, Listeners
from hpo.study.summary import StudyProgress

if TYPE_CHECKING:
    from hpo.tracking import Tracker

TrialCallback = Callable[[TrialResult, StudyProgress], None]
__all__ = ["EpochCallback", "StudyPlan", "StudyRun", "TrialCallback"]


@dataclass
class StudyPlan:
    """What a study will run, decided before anything is written: the builder, the data, the space, and where
    trials run (``slots`` None: in this process; ``packing``: batches of proposals trained as one model)."""

    build: Builder
    splits: Splits
    space: SearchSpace
    slots: list[Any] | None
    packing: bool
    enqueue: list[dict[str, Any]] = field(default_factory=list)  # study.enqueue, checked against the space
    warm: list[dict[str, Any]] = field(default_factory=list)  # the warm start's finished trial records


@dataclass
class StudyRun:
    """A study that is open: its config and plan, the engine, the tracking store and the trials so far."""

    cfg: StudyConfig
    plan: StudyPlan
    run_dir: Path
    driver: Driver
    tracker: "Tracker"
    uri: str  # the effective tracking URI (the embedded store's when the config names none)
    parent: str  # the study's MLflow parent run
    settings: TrialSettings
    listeners: Listeners
    role: str = "owner"
    results: dict[int, dict[str, Any]] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    on_trial_end: TrialCallback | None = None
    on_pool: Callable[[Any], None] | None = None
    stopped_early: str | None = None
    timed_out: bool = False  # study.timeout_s was spent: no trial started after it (hpo.study.budget)

    @property
    def build(self) -> Builder:
        return self.plan.build

    @property
    def space(self) -> SearchSpace:
        return self.plan.space

    @property
    def splits(self) -> Splits:
        return self.plan.splits

    @property
    def sign(self) -> int:
        """+1 when the objective is maximised, -1 when minimised."""
        return 1 if self.cfg.objective.direction == "maximize" else -1
