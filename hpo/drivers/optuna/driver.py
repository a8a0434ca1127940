"""Optuna driver: define-by-run sampling of the shared space, RDB/journal storage, pruners."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import optuna

from hpo.drivers.base import Driver, Proposal, Wait
from hpo.drivers.optuna.samplers import make_pruner, make_sampler
from hpo.drivers.optuna.seeding import WARM_ATTR, add_earlier_trials, enqueue_points
from hpo.drivers.optuna.space import suggest_optuna
from hpo.drivers.optuna.storage import (
    CONFIG_ATTR, ERROR_ATTR, GHOST_ATTR, IDENTITY_ATTR, PARENT_RUN_ATTR, SAMPLER_SEED_ATTR, SURPLUS_ATTR,
    TRACKING_ATTR, WORKER_ATTR,
    resolve_storage, retrying,
)
from hpo.errors import ConfigError
from hpo.space import SearchSpace
from hpo.results import TrialResult, TrialState

log = logging.getLogger(__name__)
T = TypeVar("T")


class OptunaDriver(Driver):
    name = "optuna"
    supports_pruning = True
    sqlite_wal = True  # the embedded (unshared) SQLite storage commits in WAL mode; see hpo.sqlite_wal

    def __init__(
        self, space: SearchSpace, *, direction: str, seed: int, study_name: str, storage: str,
        sampler: str = "tpe", pruner: str = "none", epochs: int = 10, fail_stale: bool = True,
        parallel: bool = False, shared: bool = False, n_trials: int | None = None, heartbeat_s: float = 10.0,
        grace_s: float = 60.0, stale_trials: str = "fail", retry_s: float = 300.0, config: dict[str, Any] | None = None,
        directions: list[str] | None = None,
    ) -> None:
        super().__init__(space, direction=direction, seed=seed)
        self.study_name = study_name
        self.storage = storage
        self.directions = directions or [direction]  # several objectives: one value per objective is told
        self.sampler = make_sampler(sampler, seed, space, parallel)
        self._sampler_name, self._parallel = sampler, parallel
        self.pruner = make_pruner(pruner, epochs)
        self.pruning = pruner != "none"
        self.fail_stale = fail_stale
        self.shared = shared
        self.n_trials = n_trials
        self.heartbeat_s = heartbeat_s
        self.grace_s = grace_s
        self.stale_trials = stale_trials
        self.retry_s = retry_s
        self.config = config
        self.created = False  # this process created the study (and so its MLflow parent run)
        self.study: optuna.Study | None = None
        self._beats: dict[int, threading.Event] = {}  # trial id -> stop flag of its heartbeat thread
        self._wal_engine: Any = None  # the embedded SQLite store's engine, in WAL mode

    def _call(self, fn: Callable[[], T], what: str) -> T:
        return retrying(fn, budget_s=self.retry_s, what=what) if self.shared else fn()

    def open(self, identity: dict[str, Any]) -> None:
        import warnings

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # Heartbeats are experimental in Optuna and meant for optimize(); we run them from our own loop.
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        heartbeat = self.shared and not self.storage.startswith("journal://")
        storage = resolve_storage(self.storage, heartbeat_s=self.heartbeat_s if heartbeat else None,
                                  grace_s=self.grace_s, retry_stale=self.stale_trials == "retry")
        if self.sqlite_wal and not self.shared and isinstance(storage, str) and storage.startswith("sqlite:///"):
            # The embedded store: WAL commits without an fsync each (hpo.sqlite_wal); ~10 commits per trial.
            from hpo.sqlite_wal import use_wal

            storage = optuna.storages.RDBStorage(storage)
            use_wal(storage.engine)
            self._wal_engine = storage.engine
        if self.shared and self.storage.startswith("journal://"):
            log.warning("journal storage records no heartbeats: a dead worker's trial stays RUNNING; "
                        "use a database URL for workers that may die")

        def create() -> optuna.Study:
            # Exactly one process creates a study (the database's unique study name): it is the one
            # that creates the MLflow parent run every other worker's trials nest under.
            try:
                study = optuna.create_study(study_name=self.study_name, storage=storage, sampler=self.sampler,
                                            pruner=self.pruner, directions=self.directions)
                self.created = True
                return study
            except optuna.exceptions.DuplicatedStudyError:
                if self.shared:
                    self._own_stream()
                return optuna.load_study(study_name=self.study_name, storage=storage, sampler=self.sampler,
                                         pruner=self.pruner)

        self.study = self._call(create, "opening the study")
        stored = [d.name.lower() for d in self.study.directions]
        if stored != self.directions:
            raise ConfigError("objective.direction" if len(stored) == len(self.directions) == 1 else "objective",
                              f"study {self.study_name!r} was created to {' and '.join(stored)}, not "
                              f"{' and '.join(self.directions)}")
        recorded = self.study.user_attrs.get(IDENTITY_ATTR)
        mine = json.dumps(identity, sort_keys=True, default=str)
        if recorded is None:
            self.study.set_user_attr(IDENTITY_ATTR, mine)
            if self.config is not None:
                self.study.set_user_attr(CONFIG_ATTR, self.config)
        elif recorded != mine:
            old, new = json.loads(recorded), json.loads(mine)
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ConfigError(
                "study.name",
                f"study {self.study_name!r} already exists in {Path(self.storage).name if '://' not in self.storage else 'the storage'} "
                f"with a different configuration (differs in: {', '.join(diff)}); use another study name or run_dir",
            )
        if self.fail_stale:
            # Single-machine storage: a RUNNING trial here belongs to a process that died.
            for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                self.study.tell(t.number, state=optuna.trial.TrialState.FAIL)
                log.warning("trial %d was interrupted by a previous run; marked FAIL and replaced", t.number)

    def _own_stream(self) -> None:
        """A process joining a shared study samples from a stream of its own.

        Every process seeding its sampler with the study's seed drew the same random start-up proposals: in a
        4-process study half of the completed trials repeated another process's configuration (Optuna's docs
        warn against one fixed seed in every process of a distributed study). The process that created the
        study keeps the study's seed (one process alone reproduces a single-process study); every other one
        derives a seed from it and an id unique to the process, recorded with each trial it proposes."""
        import uuid

        from hpo.repro import process_seed

        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.sampler_seed = process_seed(self.seed, self.process_id)
        self.sampler = make_sampler(self._sampler_name, self.sampler_seed, self.space, self._parallel)
        log.info("this process samples with seed %d (study seed %d, process %s)", self.sampler_seed, self.seed,
                 self.process_id)

    # -- counting ---------------------------------------------------------------------------------
    @staticmethod
    def _counts(t: optuna.trial.FrozenTrial) -> bool:
        """Finished for the budget: complete, pruned, or failed with our recorded error. A FAIL without it
        was interrupted (its process died or lost a race for the last slot) and is replaced. A trial copied from
        an earlier study (``study.warm_start``) is the sampler's history, not one of this study's trials."""
        if WARM_ATTR in t.user_attrs:
            return False
        if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
            return True
        return t.state == optuna.trial.TrialState.FAIL and ERROR_ATTR in t.user_attrs

    def n_finished(self) -> int:
        assert self.study is not None
        study = self.study
        return self._call(lambda: sum(1 for t in study.get_trials(deepcopy=False) if self._counts(t)), "counting trials")

    def finished_numbers(self) -> list[int]:
        assert self.study is not None
        study = self.study
        return self._call(lambda: [t.number for t in study.get_trials(deepcopy=False) if self._counts(t)],
                          "listing finished trials")

    def parent_run_id(self) -> str | None:
        return self._study_attr(PARENT_RUN_ATTR)

    def set_parent_run_id(self, run_id: str) -> None:
        self._set_study_attr(PARENT_RUN_ATTR, run_id)

    def tracking_uri(self) -> str | None:
        return self._study_attr(TRACKING_ATTR)

    def set_tracking_uri(self, uri: str) -> None:
        self._set_study_attr(TRACKING_ATTR, uri)

    def _study_attr(self, key: str) -> Any:
        """A user attribute of the study as the storage has it now (other processes may have set it)."""
        assert self.study is not None
        study = self.study
        return self._call(lambda: study.user_attrs.get(key), "reading the study")

    def _set_study_attr(self, key: str, value: Any) -> None:
        assert self.study is not None
        study = self.study
        self._call(lambda: study.set_user_attr(key, value), "writing the study")

    def _budget(self) -> tuple[int, int]:
        """(finished, running) over every worker of a shared study; stale trials are failed first."""
        assert self.study is not None
        study = self.study

        def read() -> tuple[int, int]:
            optuna.storages.fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False)
            if self._fail_ghosts(study, trials):
                trials = study.get_trials(deepcopy=False)
            running = sum(1 for t in trials if t.state == optuna.trial.TrialState.RUNNING)
            return sum(1 for t in trials if self._counts(t)), running

        return self._call(read, "counting trials")

    def _fail_ghosts(self, study: optuna.Study, trials: list[optuna.trial.FrozenTrial]) -> int:
        """Fail RUNNING trials that never recorded a heartbeat and started over two grace periods ago.

        An ask whose reply is lost in a database outage has created its trial; the retried ask creates
        another, and the first stays RUNNING with no process behind it and no heartbeat. Optuna's stale
        check only reads trials that have a heartbeat, so without this the study would wait for them
        forever. They fail without our error attribute, so they do not count against the budget."""
        from datetime import datetime, timedelta

        storage = study._storage
        engine = getattr(getattr(storage, "_backend", storage), "engine", None)  # RDBStorage under Optuna's cache
        cutoff = datetime.now() - timedelta(seconds=2 * self.grace_s)
        old = {t._trial_id: t for t in trials if t.state == optuna.trial.TrialState.RUNNING
               and t.datetime_start is not None and t.datetime_start < cutoff}
        if engine is None or not old:
            return 0
        import sqlalchemy

        # Optuna's own table of heartbeats (optuna.storages._rdb.models.TrialHeartbeatModel); no public reader.
        query = sqlalchemy.text("SELECT trial_id FROM trial_heartbeats WHERE trial_id IN :ids").bindparams(
            sqlalchemy.bindparam("ids", expanding=True))
        with engine.connect() as conn:
            beating = {row[0] for row in conn.execute(query, {"ids": list(old)})}
        ghosts = [tid for tid in old if tid not in beating]
        for tid in ghosts:
            try:
                storage.set_trial_user_attr(tid, GHOST_ATTR, "created by an ask whose reply was lost in a storage "
                                                             "outage; never ran")
                storage.set_trial_state_values(tid, optuna.trial.TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:  # another worker settled it first
                continue
            log.warning("trial %d: RUNNING without a heartbeat since %s (an ask lost in an outage); failed",
                        old[tid].number, old[tid].datetime_start)
        return len(ghosts)

    # -- ask / tell ---------------------------------------------------------------------------
    def ask(self) -> Proposal | Wait | None:
        assert self.study is not None
        study = self.study
        if isinstance(self.sampler, optuna.samplers.GridSampler) and self.sampler.is_exhausted(study):
            return None
        if self.shared and self.n_trials is not None:
            finished, running = self._budget()
            if finished >= self.n_trials:
                return None
            if finished + running >= self.n_trials:
                return Wait(min(2.0, self.heartbeat_s))
        trial = self._call(study.ask, "asking for a trial")
        if self.shared:
            self._start_heartbeat(trial)
            if self.n_trials is not None and self._surplus(trial):
                self._stop_heartbeat(trial)
                self._call(lambda: trial.set_user_attr(SURPLUS_ATTR, True), "releasing a trial")
                self._call(lambda: study.tell(trial, state=optuna.trial.TrialState.FAIL), "releasing a trial")
                return Wait(0.5)
        params = self._call(lambda: suggest_optuna(self.space, trial), "sampling a trial")
        if self.shared:  # which process runs it (for operators and the worker-kill test) and its sampling stream
            self._call(lambda: trial.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}"), "asking")
            self._call(lambda: trial.set_user_attr(SAMPLER_SEED_ATTR, self.sampler_seed), "asking")
        return Proposal(number=trial.number, params=params, handle=trial)

    def _surplus(self, trial: optuna.Trial) -> bool:
        """Another worker asked for the last slot first: trials numbered before this one fill the budget."""
        assert self.study is not None
        study = self.study

        def claimed_before() -> int:
            return sum(1 for t in study.get_trials(deepcopy=False) if t.number < trial.number and (
                self._counts(t) or (t.state == optuna.trial.TrialState.RUNNING and SURPLUS_ATTR not in t.user_attrs)))

        return self._call(claimed_before, "claiming a trial") >= (self.n_trials or 0)

    def _start_heartbeat(self, trial: optuna.Trial) -> None:
        """Record the trial's heartbeat every ``heartbeat_s`` until it is told. Optuna runs such a thread only
        inside ``optimize()``; our ask/tell loop (and its worker pool) has to run its own."""
        storage = self.study._storage if self.study is not None else None
        if storage is None or not hasattr(storage, "record_heartbeat"):
            return
        trial_id = trial._trial_id
        stop = threading.Event()
        self._beats[trial_id] = stop

        def beat() -> None:
            while True:
                try:
                    storage.record_heartbeat(trial_id)
                except Exception as exc:  # the next beat retries; the grace period absorbs short outages
                    log.debug("heartbeat for trial id %d failed: %s", trial_id, exc)
                if stop.wait(self.heartbeat_s):
                    return

        threading.Thread(target=beat, name=f"hpo-heartbeat-{trial.number}", daemon=True).start()

    def _stop_heartbeat(self, trial: optuna.Trial) -> None:
        stop = self._beats.pop(trial._trial_id, None)
        if stop is not None:
            stop.set()

    def prefer(self, params: dict[str, Any]) -> bool:
        """Optuna's partial ``enqueue_trial``: the next trial gets ``params`` fixed and samples the rest."""
        assert self.study is not None
        study = self.study
        self._call(lambda: study.enqueue_trial(dict(params), skip_if_exists=False), "enqueueing a trial")
        return True

    def enqueue(self, points: list[dict[str, Any]]) -> int:
        assert self.study is not None
        study = self.study
        return self._call(lambda: enqueue_points(study, points, self._counts), "enqueueing configurations")

    def warm_start(self, records: list[dict[str, Any]], source: str) -> int:
        assert self.study is not None
        study = self.study
        return self._call(lambda: add_earlier_trials(study, self.space, records, source), "adding earlier trials")

    def should_prune(self, proposal: Proposal, step: int, value: float) -> bool:
        if not self.pruning:
            return False
        trial: optuna.Trial = proposal.handle
        self._call(lambda: trial.report(value, step), "reporting an epoch")
        return self._call(trial.should_prune, "asking the pruner")

    def tell(self, proposal: Proposal, result: TrialResult) -> bool:
        assert self.study is not None
        trial: optuna.Trial = proposal.handle
        study = self.study

        def record() -> bool:
            try:
                _record()
                return True
            except optuna.exceptions.UpdateFinishedTrialError:
                # A retried tell whose first attempt was stored before the connection dropped, or a trial
                # failed as stale while its worker was cut off from the database: the stored state stands.
                stored = self._call(lambda: study._storage.get_trial(trial._trial_id), "reading a trial")
                want = {"COMPLETE": "COMPLETE", "PRUNED": "PRUNED", "FAILED": "FAIL"}[result.state.value]
                kept = stored.state.name == want and (result.state is not TrialState.COMPLETE
                                                      or stored.values == (result.values or [result.value]))
                log.warning("trial %d was already finished in the storage (%s); keeping the stored state",
                            trial.number, stored.state.name)
                return kept

        def _record() -> None:
            for k, v in result.metrics.items():
                if k.startswith("audit_"):
                    trial.set_user_attr(k, v)
            if result.error:
                trial.set_user_attr(ERROR_ATTR, result.error[:1000])
            if result.constraints is not None:
                # Optuna 5's record of a trial's constraints (its constraints_func is deprecated): samplers
                # (TPE, NSGA-II, GP) steer away from infeasible trials and best_trials leaves them out.
                for key, v in zip(result.constraint_names or [], result.constraints):
                    trial.set_constraint(key, v)
            try:
                if result.state is TrialState.COMPLETE:
                    study.tell(trial, result.values if len(self.directions) > 1 else result.value)
                elif result.state is TrialState.PRUNED:
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                else:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
            except RuntimeError as exc:
                # GridSampler calls study.stop() once the grid is exhausted, which Optuna only
                # allows inside optimize(); the trial's state is stored before that (in a finally).
                if "Study.stop" not in str(exc):
                    raise

        try:
            return self._call(record, "recording a trial")
        finally:
            self._stop_heartbeat(trial)

    def pareto_front(self) -> list[int]:
        """Numbers of the trials on the study's Pareto front (Optuna's ``best_trials``: non-dominated among the
        feasible ones when the study has constraints); an earlier study's trials given as history are left out."""
        assert self.study is not None
        study = self.study
        front = self._call(lambda: study.best_trials, "reading the Pareto front")
        return sorted(t.number for t in front if WARM_ATTR not in t.user_attrs)

    def close(self) -> None:
        """Shared studies: this process's unfinished trials are failed now (and replaced), not after the grace.
        The embedded SQLite store's connections are closed (its write-ahead log is folded into optuna.db)."""
        if self._wal_engine is not None:
            self._wal_engine.dispose()
        if self.study is None or not self._beats:
            return
        study = self.study
        for trial_id, stop in list(self._beats.items()):
            stop.set()
            try:
                study._storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL)
            except Exception as exc:
                log.warning("could not mark an interrupted trial failed (%s); it fails after the grace period", exc)
        self._beats.clear()

    def wait_until_idle(self, poll_s: float = 2.0) -> None:
        if not self.shared:
            return
        while self._budget()[1] > 0:
            time.sleep(poll_s)
