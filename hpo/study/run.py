"""Running a study: plan it (nothing written), open it (run directory, engine, tracking store), run its trials,
then its end stages. Rerunning the same study resumes it."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from hpo import config as config_mod
from hpo.config import StudyConfig
from hpo.data import Splits
from hpo.drivers import make_driver
from hpo.drivers.base import Driver
from hpo.errors import ConfigError
from hpo.config import callbacks as cb_mod
from hpo.execution.memory import frozen_heap
from hpo.execution.trial import TrialSettings
from hpo.redaction import redact
from hpo.execution.xla import enable_compilation_cache
from hpo.repro import device_description, package_versions
from hpo.results import load_results
from hpo.space import Builder
from hpo.study.context import EpochCallback, StudyPlan, StudyRun, TrialCallback
from hpo.study.listeners import (Listeners, ProgressListener, PruningListener, TensorBoardListener, TrialListener,
                                 TrackingListener)
from hpo.study.loop import run_trials
from hpo.study.prepare import compile_ahead_of_trials, is_config_builder, prepare, redacted_config, save_study_files
from hpo.study.shared import collect_shared_results, shared_parent_run, study_tracking_uri
from hpo.study.signals import install_signals, raise_if_signalled, restore_signals
from hpo.study.stages import finish_study
from hpo.study.summary import StudySummary, worker_summary
from hpo.tracking.handover import shared_writer

if TYPE_CHECKING:
    from hpo.tracking import Tracker

log = logging.getLogger(__name__)


def run_study(
    cfg: StudyConfig,
    *,
    build: Builder | None = None,
    splits: Splits | None = None,
    callbacks: Any = None,
    on_trial_end: TrialCallback | None = None,
    on_epoch_end: EpochCallback | None = None,
    on_pool: Callable[[Any], None] | None = None,
    on_open: Callable[[Path], None] | None = None,
    role: str = "owner",
) -> StudySummary:
    """Run (or resume) the study ``cfg`` describes and, if enabled, ensemble its best trials.

    Trials run in this process or on worker processes (``cfg.executor``); ``on_pool`` receives
    the :class:`hpo.execution.pool.WorkerPool` once it has started (tests use it to kill workers);
    ``on_open`` the run directory once the study is open (the CLI starts its ``hpo.log`` there).

    ``role="worker"`` joins a study in a shared storage (``hpo worker``): it runs trials until the
    study's budget is used and returns; the owner (``hpo run``) waits for every worker's trials
    and then summarises and ensembles."""
    with frozen_heap():  # what exists before the study stays out of its garbage collections
        config_mod.validate(cfg)
        started = time.monotonic()
        shared_writer()  # the MLflow writer process starts importing MLflow while data and space are prepared
        plan = plan_study(cfg, build, splits, role=role)
        # under JAX the first trial's train step compiles in the background while the study opens
        compile_ahead_of_trials(cfg, plan.build, plan.splits, plan.space, callbacks=callbacks,
                                in_process=plan.slots is None and not plan.packing)
        run = open_study(cfg, plan, callbacks=callbacks, on_epoch_end=on_epoch_end, role=role)
        run.on_trial_end, run.on_pool, run.started = on_trial_end, on_pool, started
        if on_open is not None:
            on_open(run.run_dir)
        reselection = _run(run)
        if role == "worker":
            return worker_summary(cfg, run.run_dir, run.results, run.started, run.parent, run.uri)
        return finish_study(run, reselection)


def plan_study(cfg: StudyConfig, build: Builder | None, splits: Splits | None, role: str = "owner") -> StudyPlan:
    """Data, space, where trials run, and what the study starts from (enqueued configurations, a warm start's
    trials; a worker joining a shared study takes neither); bad input stops here, before anything is written."""
    from hpo.execution.pool import leave_card_to_workers, plan_slots
    from hpo.study.seeding import check_enqueue, load_warm_start

    packing = cfg.executor.pack > 1
    slots = plan_slots(cfg.executor)  # packs train where single trials would: here or in worker processes
    leave_card_to_workers(slots)
    build, splits, space = prepare(cfg, build, splits)
    if cfg.training.folds:  # train and select pooled, cut into folds by every trial; audit and test held out
        from hpo.execution.folds import check_folds, pool_splits

        splits = pool_splits(splits)
        check_folds(cfg.training.folds, splits)
    if packing:
        from hpo.execution.packed import check

        check(cfg, splits, space, builtin_builder=is_config_builder(cfg, build))
    enqueue = check_enqueue(cfg, space)
    warm = load_warm_start(cfg, space) if role == "owner" else []
    return StudyPlan(build, splits, space, slots, packing, enqueue=enqueue, warm=warm)


def open_study(cfg: StudyConfig, plan: StudyPlan, *, callbacks: Any, on_epoch_end: EpochCallback | None,
               role: str) -> StudyRun:
    """The run directory, the engine (a resumed study with another config is refused first), the study's files,
    the tracking store and its parent run. A study that cannot open (its storage or tracking store unreachable
    or refusing) leaves nothing behind that was not there before: directories this call made are removed."""
    run_dir = cfg.run_dir.resolve()
    made = _first_missing(run_dir)
    try:
        return _open_study(cfg, plan, run_dir, callbacks=callbacks, on_epoch_end=on_epoch_end, role=role)
    except BaseException:
        if made is not None and made.exists():
            shutil.rmtree(made, ignore_errors=True)
        raise


def _first_missing(path: Path) -> Path | None:
    """The outermost directory of ``path`` (itself included) that does not exist yet; None when it exists."""
    missing = None
    for p in (path, *path.parents):
        if p.exists():
            break
        missing = p
    return missing


def _open_study(cfg: StudyConfig, plan: StudyPlan, run_dir: Path, *, callbacks: Any,
                on_epoch_end: EpochCallback | None, role: str) -> StudyRun:
    from hpo.tracking import Tracker

    identity = cfg.search_identity() | {"space": plan.space.describe(), "data_hashes": plan.splits.hashes}
    parallel = (plan.slots is not None and len(plan.slots) > 1) or plan.packing
    driver = make_driver(cfg, plan.space, run_dir, parallel=parallel, config=redacted_config(cfg))
    if role == "worker" and not driver.shared:
        raise ConfigError("driver.storage", "a worker joins a study in a shared storage: give driver.storage "
                                            "(postgresql://..., mysql://... or a sqlite/journal file on this machine)")
    run_dir.mkdir(parents=True, exist_ok=True)
    driver.open(identity)  # refuses a resumed study with another config before anything else is written
    save_study_files(cfg, run_dir, plan.splits, plan.space)
    _seed_engine(cfg, plan, driver)
    uri = study_tracking_uri(cfg, driver, run_dir)
    params, tags = _parent_record(cfg, plan)
    tags["hpo.run_dir"] = str(run_dir)
    try:
        tracker = Tracker(uri, cfg.tracking.experiment or cfg.study.name, artifact_root=run_dir / "mlartifacts",
                          shared=driver.shared)
        if driver.shared:
            parent = shared_parent_run(driver, tracker, cfg.study.name, params, tags)
        else:
            parent = tracker.start_study(cfg.study.name, params=params, tags=tags)
    except Exception as exc:
        driver.close()
        raise refused_tracking(exc, uri) from None
    tracker.log_study_artifact(run_dir / "config.yaml")
    if cfg.tensorboard.enabled:
        from hpo.tracking.tensorboard import write_experiment

        m = cfg.objective.metric
        write_experiment(run_dir, plan.space, [f"select_{m}", f"audit_{m}", "select_loss", "audit_loss"],
                         description=f"study {cfg.study.name}: {cfg.space.builder} on {cfg.data.dataset}")
    listeners = _listeners(cfg, run_dir, driver, tracker, on_epoch_end)
    return StudyRun(cfg, plan, run_dir, driver, tracker, uri, parent, trial_settings(cfg, callbacks), listeners,
                    role=role, results={} if role == "worker" else load_results(run_dir))


def _seed_engine(cfg: StudyConfig, plan: StudyPlan, driver: Driver) -> None:
    """The warm start's trials, then the enqueued configurations, given to the engine. Of a shared study only
    its creator does it (once, in the storage); a rerun adds neither twice."""
    if driver.shared and not driver.created:
        return
    if plan.warm:
        added = driver.warm_start(plan.warm, str(cfg.study.warm_start))
        log.info("warm start: %d finished trials of %s given to the sampler", added, cfg.study.warm_start)
    if plan.enqueue:
        log.info("enqueued %d of %d configurations", driver.enqueue(plan.enqueue), len(plan.enqueue))


def refused_tracking(exc: Exception, uri: str) -> Exception:
    """A one-line ConfigError naming ``tracking.uri`` (password hidden) for a store that refused the study's
    first calls (the study cannot go on without its experiment and parent run); other errors as they are."""
    from mlflow.exceptions import MlflowException

    from hpo.tracking.handover import WriterUnavailable
    from hpo.tracking.ops import Refused, WriteFailed

    if isinstance(exc, WriterUnavailable) or not isinstance(exc, (MlflowException, Refused, WriteFailed, OSError)):
        return exc
    reason = str(getattr(exc, "message", None) or exc).strip().splitlines()
    first = reason[0][:300] if reason else type(exc).__name__
    return ConfigError("tracking.uri", f"the tracking store {redact(uri)} refused the study's experiment or parent "
                                       f"run: {redact(first)}; check the URI and your access to that server")


def _parent_record(cfg: StudyConfig, plan: StudyPlan) -> tuple[dict[str, Any], dict[str, Any]]:
    """Params and tags of the study's MLflow parent run: what reproduces it (config, data hashes, versions)."""
    params = {"driver": cfg.driver.name, "sampler": cfg.driver.sampler, "pruner": cfg.driver.pruner,
              "dataset": cfg.data.dataset, "builder": cfg.space.builder, "seed": cfg.study.seed,
              "n_trials": cfg.study.n_trials, "epochs": cfg.training.epochs, "batch_size": cfg.training.batch_size,
              "folds": cfg.training.folds or 1,
              "objective": f"select_{cfg.objective.metric}", "direction": cfg.objective.direction,
              "storage": redact(cfg.driver.storage or "embedded sqlite")}
    tags = {"hpo.data_hashes": plan.splits.hashes, "hpo.versions": package_versions(),
            "hpo.device": device_description(), "hpo.space": plan.space.describe(),
            "hpo.compilation_cache": enable_compilation_cache() or "off"}
    return params, tags


def trial_settings(cfg: StudyConfig, callbacks: Any = None) -> TrialSettings:
    """How every trial of the study trains and is scored."""
    from hpo.space.fit_params import searched_fit_params

    t = cfg.training
    fit = searched_fit_params(t)  # searched ones: each trial's own value is in its params; these are fallbacks
    return TrialSettings(
        epochs=fit["epochs"].default if "epochs" in fit else t.epochs,
        batch_size=fit["batch_size"].default if "batch_size" in fit else t.batch_size, fit_params=tuple(fit),
        objective=cfg.objective.metric,
        direction=cfg.objective.direction, early_stopping_patience=t.early_stopping_patience,
        restore_best_weights=t.restore_best_weights, timeout_s=t.trial_timeout_s,
        deterministic=t.deterministic, save_models=t.save_models,
        callbacks=cb_mod.combine(cb_mod.from_config(t.callbacks), cb_mod.as_factory(callbacks)),
        audit_per_epoch=cfg.guards.audit_per_epoch,
        snapshot_epochs=tuple(cfg.ensemble.snapshot_epochs),
        snapshot_budget_mb=cfg.ensemble.snapshot_budget_mb,
        folds=t.folds or 1, fold_seed=cfg.study.seed,
        measure_latency=any(m.metric == "latency_ms_per_1k" for m in [*cfg.objectives, *cfg.constraints]),
    )


def _listeners(cfg: StudyConfig, run_dir: Path, driver: Driver, tracker: "Tracker",
               on_epoch_end: EpochCallback | None) -> Listeners:
    items: list[TrialListener] = [TrackingListener(tracker, driver)]
    if on_epoch_end is not None:
        items.append(ProgressListener(on_epoch_end))
    if cfg.tensorboard.enabled:
        items.append(TensorBoardListener(run_dir, cfg.tensorboard.histograms))
    items.append(PruningListener(driver, cfg.objective.metric))
    return Listeners(items)


def _run(run: StudyRun) -> dict[str, Any] | None:
    """The trials, then (the owner) the shared study's other trials and the reselection; the engine and tracking
    store closed, and the parent run marked KILLED when the study is interrupted."""
    from hpo.study.reselect import reselect

    previous_handler = install_signals()
    try:
        run_trials(run)
        raise_if_signalled()  # a Ctrl-C while the last trial was being recorded
        if run.role == "worker":
            run.driver.close()
            run.tracker.close()
            return None
        if run.driver.shared:
            collect_shared_results(run)
        reselection = reselect(run) if run.cfg.guards.reselect_top_k > 0 else None
    except BaseException:
        try:  # what the tracker hit must not hide why the study stopped
            if run.role == "worker":
                run.tracker.close()
            else:
                run.tracker.end_study({}, {"hpo.status": "interrupted"}, status="KILLED")
        except Exception as exc:
            log.error("MLflow could not record the interrupted study: %s", exc)
        run.driver.close()
        raise
    finally:
        restore_signals(previous_handler)
    run.driver.close()
    return reselection
