"""What watches trials: MLflow, TensorBoard, the caller's progress display, the pruner.

Each is a :class:`TrialListener`, one small interface in the spirit of Keras callbacks; the study calls
:class:`Listeners` at each point of a trial's life, and the listeners are called in the order given
(tracking first: a trial's MLflow run exists before anything else reports on it; pruning last: every
listener has seen an epoch before the pruner may stop the trial)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from hpo.drivers.base import Driver, Proposal
from hpo.errors import TrialPruned
from hpo.execution.folds import FOLD_KEYS
from hpo.metric_names import split_name
from hpo.repro import device_description
from hpo.results import TrialResult, TrialState
from hpo.study.signals import deferred, raise_if_signalled

if TYPE_CHECKING:
    from hpo.tracking import Tracker

EpochCallback = Callable[[int, int, int, Mapping[str, float]], None]  # (trial number, epoch, of epochs, logs)


@dataclass
class RunningTrial:
    """A trial between its start and its end."""

    proposal: Proposal
    seed: int
    trial_dir: Path
    total_epochs: int
    device: str | None = None  # where it runs, when not in this process ("gpu:0", "cpu")
    histograms_here: bool = True  # weight histograms are written by this process (not by a worker)
    run_id: str = ""  # its MLflow run, set by the tracking listener
    extra_callbacks: list[Any] = field(default_factory=list)  # Keras callbacks listeners add to its fit
    superseded: bool = False  # a shared storage had failed it as stale; its result is not the study's

    @property
    def number(self) -> int:
        return self.proposal.number


class TrialListener:
    """Hooks called along a trial's life; each does nothing unless overridden."""

    def on_trial_begin(self, trial: RunningTrial) -> None:
        """Before the trial trains."""

    def on_epoch_end(self, trial: RunningTrial, epoch: int, logs: Mapping[str, float]) -> None:
        """After each epoch (0-based), with the epoch's logs; may raise :class:`TrialPruned`."""

    def on_trial_recorded(self, trial: RunningTrial, result: TrialResult) -> None:
        """After ``result.json`` is written, before the engine is told."""

    def on_trial_end(self, trial: RunningTrial, result: TrialResult) -> None:
        """After the engine was told: ``result`` is final."""

    def on_trial_interrupted(self, trial: RunningTrial, message: str | None) -> None:
        """The trial stopped without a result (a signal, an unwritable run directory)."""


class Listeners:
    """The study's listeners, called in order."""

    def __init__(self, items: Sequence[TrialListener]) -> None:
        self.items = list(items)

    def begin(self, trial: RunningTrial) -> None:
        for listener in self.items:
            listener.on_trial_begin(trial)

    def epoch_listener(self, trial: RunningTrial) -> Any:
        """The ``listener(epoch, logs)`` the trial runner calls after each epoch."""
        def on_epoch(epoch: int, logs: Mapping[str, float]) -> None:
            raise_if_signalled()
            with deferred():  # the pruner's report writes to the engine's storage: never cut halfway
                for listener in self.items:
                    listener.on_epoch_end(trial, epoch, logs)
            raise_if_signalled()

        return on_epoch

    def recorded(self, trial: RunningTrial, result: TrialResult) -> None:
        for listener in self.items:
            listener.on_trial_recorded(trial, result)

    def end(self, trial: RunningTrial, result: TrialResult) -> None:
        for listener in self.items:
            listener.on_trial_end(trial, result)

    def interrupted(self, trial: RunningTrial, message: str | None = None) -> None:
        for listener in self.items:
            listener.on_trial_interrupted(trial, message)


class TrackingListener(TrialListener):
    """One MLflow child run per trial: params and tags at the start, epochs as metric steps, metrics at the end.

    A worker of a shared study closes the run (with the trial's files) before the engine is told: the owner
    reads the runs of the trials the engine says are done. Otherwise the run is closed after the tell."""

    def __init__(self, tracker: "Tracker", driver: Driver) -> None:
        self.tracker = tracker
        self.driver = driver
        self.shared = driver.shared

    def on_trial_begin(self, trial: RunningTrial) -> None:
        tags = {"hpo.seed": trial.seed, "hpo.driver": self.driver.name,
                "hpo.device": trial.device or device_description()}
        if self.shared:  # each process of a shared study samples from its own stream
            tags["hpo.sampler_seed"] = self.driver.sampler_seed
        trial.run_id = self.tracker.start_trial(trial.number, trial.proposal.params, tags=tags)

    def on_epoch_end(self, trial: RunningTrial, epoch: int, logs: Mapping[str, float]) -> None:
        if "fold" in logs:  # a cross-validated trial: each fold's curve under its own name, from step 0
            rest = {k: v for k, v in logs.items() if k not in FOLD_KEYS}
            self.tracker.log_epoch(trial.run_id, int(logs["fold_epoch"]), rest, prefix=f"fold_{int(logs['fold'])}/")
        else:
            self.tracker.log_epoch(trial.run_id, epoch, logs)

    def on_trial_recorded(self, trial: RunningTrial, result: TrialResult) -> None:
        if not self.shared:
            return
        # Workers on other machines: the owner fetches these to summarise and ensemble.
        for name in ("result.json", "predictions.npz"):
            if (trial.trial_dir / name).exists():
                self.tracker.log_artifact(trial.run_id, trial.trial_dir / name, "trial")
        self._end(trial, result)
        # Delivered (or in the outbox) before the engine says the trial is done, so the owner finds the closed
        # run, and a worker killed a moment later does not take them with it in the background thread's queue.
        self.tracker.wait()

    def on_trial_end(self, trial: RunningTrial, result: TrialResult) -> None:
        if not self.shared:
            self._end(trial, result)
        elif trial.superseded:
            self.tracker.tag_run(trial.run_id, {"hpo.state": "SUPERSEDED", "hpo.error": result.error})

    def on_trial_interrupted(self, trial: RunningTrial, message: str | None) -> None:
        tags = {"hpo.state": "INTERRUPTED"} | ({"hpo.error": message} if message else {})
        self.tracker.end_trial(trial.run_id, {}, tags, failed=True)

    def _end(self, trial: RunningTrial, result: TrialResult) -> None:
        metrics = dict(result.metrics)
        if result.value is not None:
            metrics["select_objective"] = result.value
        metrics.update(duration_s=result.duration_s, epochs=result.epochs)
        metrics.update(result.measures)  # params, latency_ms_per_1k, epoch_seconds (hpo.objectives.MEASURES)
        tags = {"hpo.state": result.state.value}
        if result.constraints is not None:  # `constraints`: each bound's value (<= 0 holds) and the verdict
            metrics.update({f"constraint_{i}": v for i, v in enumerate(result.constraints)})
            tags["hpo.feasible"] = str(bool(result.feasible)).lower()
        if result.cv:  # each fold's final scores; the folds' mean curve as the trial's own epoch_* metrics
            tags["hpo.folds"] = result.cv["k"]
            tags["hpo.fold_seeds"] = ",".join(str(f["seed"]) for f in result.cv["folds"])
            for f in result.cv["folds"]:
                metrics.update({f"fold_{f['fold']}/{k}": v for k, v in f["metrics"].items()})
            for e in range(max((len(v) for v in result.history.values()), default=0)):
                self.tracker.log_epoch(trial.run_id, e, {k: v[e] for k, v in result.history.items() if len(v) > e})
        if result.resumed_from is not None:  # its epoch steps go on from the parent's (initial_epoch)
            tags["hpo.resumed_from"], tags["hpo.initial_epoch"] = result.resumed_from, result.initial_epoch
        if result.pack:
            tags["hpo.pack"] = ",".join(str(n) for n in result.pack)
        if result.error:
            tags["hpo.error"] = result.error[:5000]
        self.tracker.end_trial(trial.run_id, metrics, tags, failed=result.state is TrialState.FAILED)


class ProgressListener(TrialListener):
    """Passes each epoch to the caller's ``on_epoch_end(number, epoch, total_epochs, logs)`` (``hpo run``'s
    live display)."""

    def __init__(self, callback: EpochCallback) -> None:
        self.callback = callback

    def on_epoch_end(self, trial: RunningTrial, epoch: int, logs: Mapping[str, float]) -> None:
        self.callback(trial.number, epoch + 1, trial.total_epochs, logs)


class TensorBoardListener(TrialListener):
    """Per-trial TensorBoard scalars and HParams (and weight histograms, where the trial trains here)."""

    def __init__(self, run_dir: Path, histograms: bool) -> None:
        self.run_dir = run_dir
        self.histograms = histograms
        self._boards: dict[int, Any] = {}

    def on_trial_begin(self, trial: RunningTrial) -> None:
        from hpo.tracking.tensorboard import TrialBoard, histogram_callback

        board = self._boards[trial.number] = TrialBoard(self.run_dir, trial.number, trial.proposal.params)
        if self.histograms and trial.histograms_here:
            trial.extra_callbacks.append(histogram_callback(board))

    def on_epoch_end(self, trial: RunningTrial, epoch: int, logs: Mapping[str, float]) -> None:
        self._boards[trial.number].scalars(epoch, {f"epoch_{split_name(k)}": v for k, v in logs.items()
                                                   if k not in FOLD_KEYS})

    def on_trial_end(self, trial: RunningTrial, result: TrialResult) -> None:
        board = self._boards.pop(trial.number)
        board.finish({k: v for k, v in result.metrics.items()}, failed=result.state is not TrialState.COMPLETE)

    def on_trial_interrupted(self, trial: RunningTrial, message: str | None) -> None:
        self._boards.pop(trial.number, None)


class PruningListener(TrialListener):
    """Asks the engine's pruner after each epoch, with the objective on select (``val_<metric>``)."""

    def __init__(self, driver: Driver, metric: str) -> None:
        self.driver = driver
        self.monitor = f"val_{metric}"

    def on_epoch_end(self, trial: RunningTrial, epoch: int, logs: Mapping[str, float]) -> None:
        value = logs.get(self.monitor)
        if value is not None and math.isfinite(value) and self.driver.should_prune(trial.proposal, epoch, float(value)):
            raise TrialPruned(f"pruned at epoch {epoch + 1} ({self.monitor}={value:.4g})")
