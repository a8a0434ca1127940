"""KerasTuner driver: its own oracles (RandomSearch, BayesianOptimization, Hyperband) on the shared space.

This is the baseline we compare against. The oracle is driven through its
public trial protocol (``create_trial`` / ``update_trial`` / ``end_trial``).
Under Hyperband a trial promoted to a later round continues its parent trial
(``tuner/trial_id``): the study loads the parent's checkpoint (weights and
optimizer state) and trains only the epochs from ``tuner/initial_epoch`` to
``tuner/epochs``, as KerasTuner's own ``Hyperband`` tuner does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras_tuner as kt

from hpo.drivers.base import Driver, Proposal
from hpo.errors import ConfigError
from hpo.space import SearchSpace
from hpo.results import TrialResult, TrialState

OBJECTIVE = "select_score"


class KerasTunerDriver(Driver):
    name = "kerastuner"

    def __init__(self, space: SearchSpace, *, direction: str, seed: int, directory: Path, n_trials: int,
                 oracle: str = "random", epochs: int = 10) -> None:
        super().__init__(space, direction=direction, seed=seed)
        objective = kt.Objective(OBJECTIVE, "max" if direction == "maximize" else "min")
        # KerasTuner's oracles read seed 0 as "no seed" (``seed or random.randint(...)``): shift by one.
        common = dict(objective=objective, seed=seed + 1, hyperparameters=space.to_kerastuner(),
                      tune_new_entries=False, max_consecutive_failed_trials=n_trials + 1)
        self.max_epochs: int | None = None  # Hyperband's: a trial that trained fewer may be continued later
        if oracle == "random":
            self.oracle = kt.oracles.RandomSearchOracle(max_trials=n_trials, **common)
        elif oracle == "bayesian":
            self.oracle = kt.oracles.BayesianOptimizationOracle(max_trials=n_trials, **common)
        elif oracle == "hyperband":
            self.oracle = kt.oracles.HyperbandOracle(max_epochs=epochs, factor=3, **common)
            self.max_epochs = epochs
        else:
            raise ConfigError("driver.sampler", f"unknown kerastuner oracle {oracle!r}")
        self.oracle.verbose = 0
        self.directory = Path(directory)
        self._queue: list[dict[str, Any]] = []  # study.enqueue: evaluated before any sampled configuration

    def open(self, identity: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        meta = self.directory / "identity.json"
        mine = json.dumps(identity, sort_keys=True, default=str)
        if meta.exists() and meta.read_text() != mine:
            raise ConfigError("study.name", f"{self.directory} holds a study with a different configuration; "
                                            "use another study name or run_dir")
        self.oracle._set_project_dir(str(self.directory), "oracle")  # what Tuner.__init__ does
        if (self.directory / "oracle" / "oracle.json").exists():
            self.oracle.reload()
        meta.write_text(mine)

    _DONE = (kt.engine.trial.TrialStatus.COMPLETED, kt.engine.trial.TrialStatus.FAILED,
             kt.engine.trial.TrialStatus.INVALID)

    def n_finished(self) -> int:
        return sum(1 for t in self.oracle.trials.values() if t.status in self._DONE)

    def ask(self) -> Proposal | None:
        # One tuner id per ask: the oracle hands an ongoing trial back to the same id, and
        # trials run concurrently on a worker pool.
        self._asked = getattr(self, "_asked", 0) + 1
        trial = self.oracle.create_trial(f"hpo-{self._asked}")
        if trial.status != kt.engine.trial.TrialStatus.RUNNING:
            return None
        values = dict(trial.hyperparameters.values)
        if self._queue and "tuner/trial_id" not in values:  # a new configuration, not a Hyperband continuation
            values = self._enqueued(trial, values)
        epochs = int(values["tuner/epochs"]) if values.get("tuner/epochs") else None
        params = self.space.active({k: v for k, v in values.items() if not k.startswith("tuner/")})
        parent = values.get("tuner/trial_id")
        # The trial's own place in the start order: a trial the oracle retries (interrupted, then resumed) keeps
        # its number and directory.
        return Proposal(number=self.oracle.start_order.index(trial.trial_id), params=params, epochs=epochs,
                        handle=trial, parent=None if parent is None else self.oracle.start_order.index(parent),
                        initial_epoch=int(values.get("tuner/initial_epoch") or 0) if parent is not None else 0,
                        checkpoint=epochs is not None and self.max_epochs is not None and epochs < self.max_epochs)

    def enqueue(self, points: list[dict[str, Any]]) -> int:
        """KerasTuner's oracles have no call that queues a configuration: the trial the oracle creates next gets
        the enqueued values in place of the sampled ones, in its own record, so the oracle (Bayesian
        optimisation included) learns the values that were run. Complete points only (see hpo.study.seeding)."""
        from hpo.space.points import same_point

        done = [dict(t.hyperparameters.values) for t in self.oracle.trials.values()
                if t.status in self._DONE]
        self._queue = [p for p in points if not any(same_point(p, q) for q in done)]
        return len(self._queue)

    def _enqueued(self, trial: Any, values: dict[str, Any]) -> dict[str, Any]:
        point = self._queue.pop(0)
        values = {k: v for k, v in values.items() if k.startswith("tuner/")} | self.space.active(
            {**self.space.defaults(), **point})
        trial.hyperparameters.values = dict(values)
        return values

    def tell(self, proposal: Proposal, result: TrialResult) -> bool:
        trial = proposal.handle
        if result.state is TrialState.COMPLETE and result.value is not None:
            self.oracle.update_trial(trial.trial_id, {OBJECTIVE: result.value})
            trial.status = kt.engine.trial.TrialStatus.COMPLETED
        else:
            trial.status = kt.engine.trial.TrialStatus.FAILED
            trial.message = result.error
        self.oracle.end_trial(trial)
        # end_trial saves the oracle's state before it drops the trial from its ongoing trials, so the saved state
        # still lists it as running and a resumed study retried the last trial: save once it is dropped.
        self.oracle.save()
        return True
