"""Optuna driver: define-by-run sampling of the shared space, RDB/journal storage, pruners."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import optuna

from hpo.drivers.base import Driver, Proposal
from hpo.errors import ConfigError
from hpo.space import SearchSpace
from hpo.trial import TrialResult, TrialState

log = logging.getLogger(__name__)
IDENTITY_ATTR = "hpo.identity"
ERROR_ATTR = "hpo.error"


def make_sampler(name: str, seed: int, space: SearchSpace, parallel: bool = False) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        # constant_liar: pending trials count as bad results, so parallel workers do not all
        # propose the same point (Optuna's advice for distributed TPE).
        return optuna.samplers.TPESampler(seed=seed, constant_liar=parallel)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        try:
            import torch  # noqa: F401
        except ImportError as exc:
            raise ConfigError("driver.sampler", "'gp' needs PyTorch (pip install torch); choose tpe, random or cmaes") from exc
        return optuna.samplers.GPSampler(seed=seed)
    if name == "grid":
        grid: dict[str, list[Any]] = {}
        for p in space.params:
            if p.kind == "fixed":
                continue
            values = p.grid
            if values is None:  # continuous: three points (ends and middle, geometric for log)
                lo, hi = float(p.low), float(p.high)
                mid = (lo * hi) ** 0.5 if p.log else (lo + hi) / 2
                values = tuple(p.cast(v) for v in (lo, mid, hi))
            grid[p.name] = list(dict.fromkeys(values))
        return optuna.samplers.GridSampler(grid, seed=seed)
    raise ConfigError("driver.sampler", f"unknown optuna sampler {name!r}")


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1))
    return optuna.pruners.NopPruner()


def resolve_storage(url: str) -> "str | optuna.storages.BaseStorage":
    """An Optuna storage from a URL; ``journal:///path/file.log`` is Optuna's journal file storage,
    made for several processes on one machine (Optuna advises against SQLite there)."""
    if url.startswith("journal://"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = url[len("journal://"):]
        if not path:
            raise ConfigError("driver.storage", "journal storage needs a file path: journal:///abs/path/study.log")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(path))
    return url


class OptunaDriver(Driver):
    name = "optuna"
    supports_pruning = True

    def __init__(
        self, space: SearchSpace, *, direction: str, seed: int, study_name: str, storage: str,
        sampler: str = "tpe", pruner: str = "none", epochs: int = 10, fail_stale: bool = True,
        parallel: bool = False,
    ) -> None:
        super().__init__(space, direction=direction, seed=seed)
        self.study_name = study_name
        self.storage = storage
        self.sampler = make_sampler(sampler, seed, space, parallel)
        self.pruner = make_pruner(pruner, epochs)
        self.pruning = pruner != "none"
        self.fail_stale = fail_stale
        self.study: optuna.Study | None = None

    def open(self, identity: dict[str, Any]) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(
            study_name=self.study_name, storage=resolve_storage(self.storage), sampler=self.sampler, pruner=self.pruner,
            direction=self.direction, load_if_exists=True,
        )
        recorded = self.study.user_attrs.get(IDENTITY_ATTR)
        mine = json.dumps(identity, sort_keys=True, default=str)
        if recorded is None:
            self.study.set_user_attr(IDENTITY_ATTR, mine)
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

    def n_finished(self) -> int:
        assert self.study is not None
        done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
        # A FAIL without our error attribute was interrupted (its process died), not finished.
        return sum(
            1 for t in self.study.get_trials(deepcopy=False, states=done)
            if t.state != optuna.trial.TrialState.FAIL or ERROR_ATTR in t.user_attrs
        )

    def ask(self) -> Proposal | None:
        assert self.study is not None
        if isinstance(self.sampler, optuna.samplers.GridSampler) and self.sampler.is_exhausted(self.study):
            return None
        trial = self.study.ask()
        params = self.space.suggest_optuna(trial)
        return Proposal(number=trial.number, params=params, handle=trial)

    def should_prune(self, proposal: Proposal, step: int, value: float) -> bool:
        if not self.pruning:
            return False
        trial: optuna.Trial = proposal.handle
        trial.report(value, step)
        return trial.should_prune()

    def tell(self, proposal: Proposal, result: TrialResult) -> None:
        assert self.study is not None
        trial: optuna.Trial = proposal.handle
        for k, v in result.metrics.items():
            if k.startswith("audit_"):
                trial.set_user_attr(k, v)
        if result.error:
            trial.set_user_attr(ERROR_ATTR, result.error[:1000])
        try:
            if result.state is TrialState.COMPLETE:
                self.study.tell(trial, result.value)
            elif result.state is TrialState.PRUNED:
                self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        except RuntimeError as exc:
            # GridSampler calls study.stop() once the grid is exhausted, which Optuna only
            # allows inside optimize(); the trial's state is stored before that (in a finally).
            if "Study.stop" not in str(exc):
                raise
