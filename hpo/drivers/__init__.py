"""Search engines behind one ask/tell interface.

Each engine is a package or module of its own, with its translation of the search space:
:mod:`hpo.drivers.optuna`, :mod:`hpo.drivers.hyperopt`, :mod:`hpo.drivers.kerastuner`. They load
on first use (each imports its engine), so importing this package stays as cheap as the interface.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo.drivers.base import Driver, Proposal, Wait

if TYPE_CHECKING:
    from hpo.config import StudyConfig
    from hpo.space import SearchSpace


JOURNAL_FILE = "optuna.journal"
LEGACY_SQLITE_FILE = "optuna.db"


def default_storage(run_dir: Path) -> str:
    """The embedded Optuna storage of a run directory: Optuna's journal file (``optuna.journal``).

    One append (and fsync) per storage call instead of a SQLite transaction: about 10 ms of storage
    time per trial against 55 ms (experiments/storage_bench), and no schema to create for a new study.
    A run directory made before this default keeps its ``optuna.db``, so such a study resumes where it was."""
    legacy = run_dir / LEGACY_SQLITE_FILE
    if legacy.exists():
        return f"sqlite:///{legacy.resolve()}"
    return f"journal://{(run_dir / JOURNAL_FILE).resolve()}"


def make_driver(cfg: "StudyConfig", space: "SearchSpace", run_dir: Path, parallel: bool = False,
                config: dict | None = None) -> Driver:
    """The driver a config names, with its storage in the run directory unless told otherwise.

    ``parallel``: several trials will be pending at once (worker pool or shared storage)."""
    common = dict(direction=cfg.objective.direction, seed=cfg.study.seed)
    if cfg.driver.name == "optuna":
        from hpo.drivers.optuna import OptunaDriver

        storage = cfg.driver.storage or default_storage(run_dir)
        # A storage named in the config may be shared by workers on other machines: trials carry
        # heartbeats and the budget is counted over everyone's trials. The embedded default has one
        # owner, so a RUNNING trial found there at start belonged to a process that died.
        shared = cfg.driver.storage is not None
        d = cfg.driver
        return OptunaDriver(space, study_name=cfg.study.name, storage=storage, sampler=d.sampler, pruner=d.pruner,
                            epochs=cfg.max_epochs, fail_stale=not shared, parallel=parallel or shared,
                            shared=shared, n_trials=cfg.study.n_trials, heartbeat_s=d.heartbeat_s, grace_s=d.grace_s,
                            stale_trials=d.stale_trials, retry_s=d.storage_retry_s, config=config,
                            directions=[o.direction for o in cfg.objectives], **common)
    if cfg.driver.name == "hyperopt":
        from hpo.drivers.hyperopt import HyperoptDriver

        return HyperoptDriver(space, save_file=run_dir / "hyperopt_trials.json", algo=cfg.driver.sampler, **common)
    from hpo.drivers.kerastuner import KerasTunerDriver

    return KerasTunerDriver(space, directory=run_dir / "kerastuner", n_trials=cfg.study.n_trials,
                            oracle=cfg.driver.sampler, epochs=cfg.max_epochs, **common)


_LAZY = {"OptunaDriver": "hpo.drivers.optuna", "HyperoptDriver": "hpo.drivers.hyperopt",
         "KerasTunerDriver": "hpo.drivers.kerastuner"}


def __getattr__(name: str) -> Any:
    """The engines' drivers, imported on first use (each loads its engine)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Driver", "Proposal", "Wait", "make_driver", "default_storage", "JOURNAL_FILE",
           "OptunaDriver", "HyperoptDriver", "KerasTunerDriver"]
