"""A study from start to end: validate, sample, train, track, summarise, ensemble.

:func:`run_study` runs a :class:`~hpo.config.StudyConfig` (what ``hpo run`` does);
:func:`search` is the script API taking the user's own builder and data the way
``tuner.search(x, y, validation_data=...)`` does. Rerunning the same study
resumes it: finished trials are not redone.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from hpo import callbacks as cb_mod
from hpo import config as config_mod
from hpo.config import StudyConfig
from hpo.data import Splits, check_labels, concat, leaves, load_dataset
from hpo.drivers import Proposal, Wait, make_driver
from hpo.errors import ConfigError, StudyInterrupted, TrialPruned
from hpo.repro import device_description, package_versions, redact, trial_seed
from hpo.space import Builder, SearchSpace, apply_overrides, discover
from hpo.tracking import Tracker, default_tracking_uri
from hpo.trial import TrialResult, TrialSettings, TrialState, frozen_heap, make_model, run_trial

log = logging.getLogger(__name__)


@dataclass
class StudySummary:
    """How a study ended."""

    name: str
    run_dir: str
    n_complete: int
    n_pruned: int
    n_failed: int
    best_trial: int | None
    best_params: dict[str, Any]
    best_select: float | None
    best_audit: float | None
    best_test: dict[str, float]
    duration_s: float
    parent_run_id: str
    tracking_uri: str
    ensemble: dict[str, Any] | None = None
    guards: dict[str, Any] | None = None
    reselection: dict[str, Any] | None = None
    best_trial_by_select: int | None = None
    stopped_early: str | None = None
    plots: dict[str, Any] | None = None
    report: str | None = None
    seed_refit: dict[str, Any] | None = None
    trials: list[dict[str, Any]] = field(default_factory=list)
    tracking_undelivered: int = 0  # MLflow calls queued in mlflow_outbox.jsonl (`hpo sync RUN_DIR` delivers them)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


TrialCallback = Callable[[TrialResult, "StudyProgress"], None]


@dataclass
class StudyProgress:
    """Counts passed to progress callbacks after each trial."""

    done: int
    total: int
    failed: int
    pruned: int
    best_value: float | None
    elapsed_s: float


# -- preparation (everything here runs before anything is written) ---------------------------
def prepare(cfg: StudyConfig, build: Builder | None = None, splits: Splits | None = None) -> tuple[Builder, Splits, SearchSpace]:
    """Load data, discover and override the space, and build one model as a preflight check."""
    if build is None:
        from search_spaces import get_builder

        build = get_builder(cfg.space.builder)
    if splits is None:
        splits = load_dataset(cfg.data.dataset, path=cfg.data.path, seed=cfg.data.split_seed,
                              limit_train=cfg.data.limit_train, validation_size=cfg.data.validation_size)
    check_labels(splits)
    key = _prepared_key(build, splits, cfg)
    hit = _PREPARED.get(key) if key is not None else None
    if hit is not None and hit[0] is build:
        return build, splits, hit[1]
    # Discover through make_model so that the space's compile choices of a builder that does not
    # compile its own model are part of the space.
    space = discover(lambda hp, spec: make_model(build, hp, spec), splits.spec, what="space.builder")
    if cfg.space.params:
        space = apply_overrides(space, cfg.space.params)
    _preflight(build, space, splits, cfg.objective.metric)
    if key is not None:
        while len(_PREPARED) >= 8:
            _PREPARED.pop(next(iter(_PREPARED)))
        _PREPARED[key] = (build, space)
    return build, splits, space


# Spaces already discovered and checked in this process: a study that runs again with the same builder
# function, data and overrides (a notebook, a benchmark, `search` called in a loop) skips its discovery
# builds and preflight (0.3-0.4 s for the `mlp` builder on 2 cores). Only plain functions are keyed, by
# identity: a redefined function is a new key; a HyperModel or other object whose attributes may change
# between studies is discovered every time. clear_prepared() forgets them all.
_PREPARED: dict[tuple[Any, ...], tuple[Builder, SearchSpace]] = {}


def clear_prepared() -> None:
    """Forget the discovered spaces this process keeps (for a builder function whose declarations depend
    on state that changed since its last study)."""
    _PREPARED.clear()


def _prepared_key(build: Builder, splits: Splits, cfg: StudyConfig) -> tuple[Any, ...] | None:
    import types

    if not isinstance(build, types.FunctionType):
        return None
    try:
        cells = tuple(id(c.cell_contents) for c in build.__closure__ or ())
    except ValueError:  # a closure variable not assigned yet
        return None
    return (id(build), build.__code__, build.__defaults__, repr(build.__kwdefaults__), cells, repr(splits.spec),
            repr(sorted(splits.hashes.items())), json.dumps(cfg.space.params, sort_keys=True, default=str),
            cfg.objective.metric)


def _preflight(build: Builder, space: SearchSpace, splits: Splits, metric: str) -> None:
    """Build the default model and score two rows: wrong shapes or an unknown metric stop here."""
    import keras

    from hpo.data import take

    try:
        model = make_model(build, space.hyperparameters_for(space.defaults()), splits.spec)
        idx = np.arange(min(2, splits.size("select")))
        # test_on_batch: evaluate would also build a data pipeline and callbacks for two rows (~0.1 s)
        scores = model.test_on_batch(take(splits.x["select"], idx), take(splits.y["select"], idx), return_dict=True)
    except Exception as exc:
        raise ConfigError("data", f"the default model cannot be evaluated on this data ({type(exc).__name__}: "
                                  f"{str(exc)[:400]}); check input shapes, output names and label formats") from exc
    finally:
        keras.backend.clear_session(free_memory=False)
    if metric not in scores:
        raise ConfigError("objective.metric", f"{metric!r} is not reported by the model; it reports {sorted(scores)}")


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)


def _save_study_files(cfg: StudyConfig, run_dir: Path, splits: Splits, space: SearchSpace) -> None:
    import yaml

    run_dir.mkdir(parents=True, exist_ok=True)
    saved = cfg.to_dict()  # passwords in URLs never reach files, logs or MLflow
    saved["driver"]["storage"] = redact(saved["driver"]["storage"])
    saved["tracking"]["uri"] = redact(saved["tracking"]["uri"])
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    _write_json(run_dir / "space.json", space.describe())
    _write_json(run_dir / "study.json", {"name": cfg.study.name, "direction": cfg.objective.direction,
                                         "objective": cfg.objective.metric, "driver": cfg.driver.name})
    heads = [asdict(h) for h in splits.spec.heads]
    _write_json(run_dir / "data.json", {
        "dataset": splits.name, "inputs": {k: list(v) for k, v in splits.spec.inputs.items()}, "heads": heads,
        "hashes": splits.hashes, "sizes": {s: splits.size(s) for s in splits.y},
    })
    labels = {}
    for s in ("select", "audit", "test"):
        ys = splits.y[s]
        arrays = ys if isinstance(ys, dict) else dict(zip([h.name for h in splits.spec.heads], leaves(ys)))
        for h in splits.spec.heads:
            labels[f"{s}/{h.name}"] = np.asarray(arrays[h.name])
    np.savez_compressed(run_dir / "labels.npz", **labels)


# -- the loop ---------------------------------------------------------------------------------
def run_study(
    cfg: StudyConfig,
    *,
    build: Builder | None = None,
    splits: Splits | None = None,
    callbacks: Any = None,
    on_trial_end: TrialCallback | None = None,
    on_epoch_end: Callable[[int, int, int, Mapping[str, float]], None] | None = None,
    on_pool: Callable[[Any], None] | None = None,
    role: str = "owner",
) -> StudySummary:
    """Run (or resume) the study ``cfg`` describes and, if enabled, ensemble its best trials.

    Trials run in this process or on worker processes (``cfg.executor``); ``on_pool`` receives
    the :class:`hpo.executor.WorkerPool` once it has started (tests use it to kill workers).

    ``role="worker"`` joins a study in a shared storage (``hpo worker``): it runs trials until the
    study's budget is used and returns; the owner (``hpo run``) waits for every worker's trials
    and then summarises and ensembles."""
    with frozen_heap():  # what exists before the study stays out of its garbage collections
        return _run_study(cfg, build=build, splits=splits, callbacks=callbacks, on_trial_end=on_trial_end,
                          on_epoch_end=on_epoch_end, on_pool=on_pool, role=role)


def _run_study(cfg: StudyConfig, *, build: Builder | None, splits: Splits | None, callbacks: Any,
               on_trial_end: TrialCallback | None,
               on_epoch_end: Callable[[int, int, int, Mapping[str, float]], None] | None,
               on_pool: Callable[[Any], None] | None, role: str) -> StudySummary:
    config_mod.validate(cfg)
    started = time.monotonic()
    from hpo.executor import plan_slots

    packing = cfg.executor.pack > 1
    # Packs train in this process: "auto" stays here, an explicit "processes" is refused by packing.check.
    slots = None if packing and cfg.executor.mode == "auto" else plan_slots(cfg.executor)
    build, splits, space = prepare(cfg, build, splits)
    if packing:
        from hpo import packing as pack_mod

        pack_mod.check(cfg, splits, space, in_process=slots is None, builtin_builder=_is_config_builder(cfg, build))
    run_dir = cfg.run_dir.resolve()
    identity = cfg.search_identity() | {"space": space.describe(), "data_hashes": splits.hashes}
    driver = make_driver(cfg, space, run_dir, parallel=(slots is not None and len(slots) > 1) or packing,
                         config=_redacted_config(cfg))
    if role == "worker" and not driver.shared:
        raise ConfigError("driver.storage", "a worker joins a study in a shared storage: give driver.storage "
                                            "(postgresql://..., mysql://... or a sqlite/journal file on this machine)")
    run_dir.mkdir(parents=True, exist_ok=True)
    driver.open(identity)  # refuses a resumed study with another config before anything else is written
    _save_study_files(cfg, run_dir, splits, space)

    uri = cfg.tracking.uri or default_tracking_uri(run_dir)
    tracker = Tracker(uri, cfg.tracking.experiment or cfg.study.name, artifact_root=run_dir / "mlartifacts",
                      shared=driver.shared)
    versions = package_versions()
    parent_params = {"driver": cfg.driver.name, "sampler": cfg.driver.sampler, "pruner": cfg.driver.pruner,
                     "dataset": cfg.data.dataset, "builder": cfg.space.builder, "seed": cfg.study.seed,
                     "n_trials": cfg.study.n_trials, "epochs": cfg.training.epochs, "batch_size": cfg.training.batch_size,
                     "objective": f"select_{cfg.objective.metric}", "direction": cfg.objective.direction,
                     "storage": redact(cfg.driver.storage or "embedded sqlite")}
    parent_tags = {"hpo.run_dir": str(run_dir), "hpo.data_hashes": splits.hashes, "hpo.versions": versions,
                   "hpo.device": device_description(), "hpo.space": space.describe()}
    if driver.shared:
        parent = _shared_parent_run(driver, tracker, cfg, parent_params, parent_tags)
    else:
        parent = tracker.start_study(cfg.study.name, params=parent_params, tags=parent_tags)
    tracker.log_study_artifact(run_dir / "config.yaml")
    if cfg.tensorboard.enabled:
        from hpo.tensorboard import write_experiment

        m = cfg.objective.metric
        write_experiment(run_dir, space, [f"select_{m}", f"audit_{m}", "select_loss", "audit_loss"],
                         description=f"study {cfg.study.name}: {cfg.space.builder} on {cfg.data.dataset}")
    settings = TrialSettings(
        epochs=cfg.training.epochs, batch_size=cfg.training.batch_size, objective=cfg.objective.metric,
        direction=cfg.objective.direction, early_stopping_patience=cfg.training.early_stopping_patience,
        restore_best_weights=cfg.training.restore_best_weights, timeout_s=cfg.training.trial_timeout_s,
        deterministic=cfg.training.deterministic, save_models=cfg.training.save_models,
        callbacks=cb_mod.combine(cb_mod.from_config(cfg.training.callbacks), cb_mod.as_factory(callbacks)),
        audit_per_epoch=cfg.guards.audit_per_epoch,
    )
    results = {} if role == "worker" else _load_results(run_dir)
    status = "FINISHED"
    stopped_early = None
    previous_handler = _install_signals()
    try:
        remaining = cfg.study.n_trials - driver.n_finished()

        def on_done(result: TrialResult) -> bool:
            nonlocal stopped_early
            results[result.number] = _result_dict(result)
            if cfg.training.keep_top_models is not None:
                _retain_models(run_dir, results, cfg.training.keep_top_models, cfg.objective.direction)
            if on_trial_end is not None:
                on_trial_end(result, _progress(results, cfg, started))
            if cfg.guards.stop_when_converged and len(results) < cfg.study.n_trials:
                stopped_early = _converged(cfg, space, run_dir, results)
                if stopped_early:
                    log.warning("stopping early: %s", stopped_early)
                    return False
            return True

        if slots is None:
            # In this process: one proposal at a time, or batches that pack (executor.pack); a batch of one
            # runs as a plain trial.
            size = cfg.executor.pack if packing else 1
            while remaining > 0:
                _raise_if_signalled()
                batch = _ask_batch(driver, space, min(size, remaining))
                if batch is None:
                    break
                if isinstance(batch, Wait):
                    time.sleep(batch.seconds)
                    continue
                done = _run_batch(cfg, batch, build, space, splits, settings, driver, tracker, run_dir, on_epoch_end)
                # A shared study's budget is what the storage counts (a superseded trial does not count).
                remaining = cfg.study.n_trials - driver.n_finished() if driver.shared else remaining - len(done)
                if not all([on_done(r) for r in done]):  # a list: every result is recorded before stopping
                    break
        else:
            _run_in_pool(cfg, slots, build, space, splits, settings, driver, tracker, run_dir, remaining, on_done,
                         on_epoch_end, on_pool)
        if role == "worker":
            driver.close()
            tracker.close()
            return _worker_summary(cfg, run_dir, results, started, parent, uri)
        if driver.shared:
            driver.wait_until_idle()  # the other workers' last trials
            results = _load_results(run_dir)
            _await_remote_runs(driver, tracker, results, cfg.driver.grace_s)
            results.update(_fetch_remote_trials(tracker, run_dir, results, set(driver.finished_numbers())))
            tracker.kill_orphans()  # trial runs of workers that died
        reselection = _reselect(cfg, results, build, space, splits, settings, tracker, run_dir) \
            if cfg.guards.reselect_top_k > 0 else None
    except BaseException:
        try:  # what the tracker hit must not hide why the study stopped
            if role == "worker":
                tracker.close()
            else:
                tracker.end_study({}, {"hpo.status": "interrupted"}, status="KILLED")
        except Exception as exc:
            log.error("MLflow could not record the interrupted study: %s", exc)
        driver.close()
        raise
    finally:
        _restore_signals(previous_handler)
    driver.close()
    summary = _summarise(cfg, run_dir, results, splits, started, parent, uri, reselection)
    summary.stopped_early = stopped_early
    if cfg.ensemble.enabled and summary.n_complete > 0:
        # An unreachable tracking store: the ensemble is still built and saved, only not logged to MLflow.
        logged = tracker.healthy()
        try:
            summary.ensemble = _ensemble(cfg, run_dir, uri if logged else None, parent)
        except Exception as exc:
            from hpo.tracking import is_transient

            if not (logged and is_transient(exc)):
                raise
            logged = False
            summary.ensemble = _ensemble(cfg, run_dir, None, parent)
        if not logged and cfg.training.save_models:
            log.warning("the ensemble is saved in %s but not logged to MLflow (the tracking store is unreachable); "
                        "`hpo ensemble %s` logs one once it is back", summary.ensemble.get("artifact_dir"), run_dir)
    if cfg.ensemble.seed_refit > 0 and summary.best_trial is not None:
        from hpo.guards import record_test_use
        from hpo.refit import seed_refit

        summary.seed_refit = seed_refit(cfg.space.builder, summary.best_params, splits, members=cfg.ensemble.seed_refit,
                                        epochs=cfg.training.epochs, batch_size=cfg.training.batch_size,
                                        seed=cfg.study.seed, out_dir=run_dir / "refit")
        if "skipped" in summary.seed_refit:
            log.warning("seed refit skipped: %s", summary.seed_refit["skipped"])
        else:
            record_test_use(run_dir, f"seed refit of trial {summary.best_trial}")
    if cfg.plots.enabled and summary.best_trial is not None:
        from hpo.plots import plot_study

        best = results.get(summary.best_trial, {})
        summary.plots = plot_study(run_dir, best.get("model_path"),
                                   summary.ensemble.get("artifact_dir") if summary.ensemble else None)
        for key in ("best_trial", "ensemble"):
            if summary.plots.get(key):
                tracker.log_study_artifact(Path(summary.plots[key]), "plots")
    guard_metrics: dict[str, float | None] = {}
    guard_tags: dict[str, Any] = {}
    if cfg.guards.enabled and summary.best_trial is not None:
        from hpo.guards import check_study

        members = None
        if summary.ensemble:
            members = ([m[0] for m in summary.ensemble["members"]], [m[1] for m in summary.ensemble["members"]],
                       cfg.ensemble.combine)
        report = check_study(run_dir, list(results.values()), metric=cfg.objective.metric,
                             direction=cfg.objective.direction, incumbent=summary.best_trial,
                             threshold=cfg.guards.gap_threshold, n_resamples=cfg.guards.n_bootstrap,
                             confidence=cfg.guards.confidence, seed=cfg.study.seed, ensemble_counts=members)
        summary.guards = report.to_dict() | {"verdict": report.verdict()}
        _write_json(run_dir / "guards.json", summary.guards)
        tracker.log_study_artifact(run_dir / "guards.json")
        c = report.incumbent_check
        guard_metrics = {"guard_gap": c.gap if c else None, "guard_gap_threshold": c.threshold if c else None,
                         "guard_gap_se": c.gap_se if c else None,
                         "guard_select_audit_correlation": report.correlation, "guard_overtuning": report.overtuning,
                         "guard_tied_trials": float(len(report.tied)),
                         "guard_ensemble_gap": report.ensemble_check.gap if report.ensemble_check else None}
        guard_tags = {"hpo.guard.overfit": str(report.overfit).lower(), "hpo.guard.verdict": report.verdict()}
    from hpo.guards import test_uses

    guard_metrics["test_split_uses"] = float(test_uses(run_dir))
    summary.duration_s = time.monotonic() - started
    _write_json(run_dir / "summary.json", summary.to_dict())
    tracker.log_study_artifact(run_dir / "summary.json")
    if cfg.report.enabled:
        from hpo.report import build_report

        summary.report = str(build_report(run_dir))
        _write_json(run_dir / "summary.json", summary.to_dict())
        tracker.log_study_artifact(Path(summary.report))
    final_metrics = {
        "n_complete": summary.n_complete, "n_failed": summary.n_failed, "n_pruned": summary.n_pruned,
        "best_select": summary.best_select, "best_audit": summary.best_audit,
        **{f"best_test_{k}": v for k, v in summary.best_test.items()},
    }
    if summary.ensemble:
        final_metrics.update({f"ensemble_{k}": v for k, v in summary.ensemble["metrics"].items()})
    if summary.seed_refit and "test" in summary.seed_refit:
        final_metrics.update({f"seed_refit_test_{k}": v for k, v in summary.seed_refit["test"].items()})
        final_metrics["seed_refit_wall_s"] = summary.seed_refit["wall_s"]
    final_metrics.update(guard_metrics)
    tags = {"hpo.best_trial": summary.best_trial, "hpo.status": "finished", **guard_tags}
    if stopped_early:
        tags["hpo.stopped_early"] = stopped_early
    tracker.end_study(final_metrics, tags, status=status)
    undelivered = tracker.undelivered_message()
    if undelivered:
        summary.tracking_undelivered = tracker.pending
        _write_json(run_dir / "summary.json", summary.to_dict())
        log.warning(undelivered)
    return summary


_SIGNALLED: list[BaseException] = []  # the interrupt a signal raised during this study, kept until it ends


def _install_signals() -> Any:
    """SIGTERM becomes StudyInterrupted and SIGINT KeyboardInterrupt, as usual, and each is also recorded.

    Python drops an exception raised while it runs a finalizer or weakref callback ("Exception ignored
    in ..."), and the garbage collector runs those at arbitrary points of training: a Ctrl-C landing
    there was lost and the study ran on to the end. :func:`_raise_if_signalled` raises a recorded
    interrupt again at the next epoch or trial boundary."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    _SIGNALLED.clear()

    def on_term(signum: int, frame: Any) -> None:
        _SIGNALLED.append(StudyInterrupted(f"stopped by signal {signum}"))
        raise StudyInterrupted(f"stopped by signal {signum}")

    def on_int(signum: int, frame: Any) -> None:
        _SIGNALLED.append(KeyboardInterrupt())
        raise KeyboardInterrupt()

    return signal.signal(signal.SIGTERM, on_term), signal.signal(signal.SIGINT, on_int)


def _raise_if_signalled() -> None:
    """Raise the interrupt a signal raised earlier, if Python swallowed it (see :func:`_install_signals`)."""
    if _SIGNALLED:
        exc = _SIGNALLED[0]
        raise type(exc)(*exc.args)


def _restore_signals(previous: Any) -> None:
    import signal

    _SIGNALLED.clear()
    if previous is not None:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])


def _converged(cfg: StudyConfig, space: SearchSpace, run_dir: Path, results: Mapping[int, Mapping[str, Any]]) -> str | None:
    """The stopping rule: the regret bound has fallen below the incumbent's statistical error."""
    from hpo.guards import regret_bound, statistical_error

    complete = [r for r in results.values() if r["state"] == "COMPLETE"]
    if len(complete) < cfg.guards.stop_min_trials:
        return None
    sign = 1 if cfg.objective.direction == "maximize" else -1
    best = max(complete, key=lambda r: sign * r["value"])
    error = statistical_error(run_dir, best, cfg.objective.metric, seed=cfg.study.seed)
    if error is None:
        return None
    bound = regret_bound(space, [r["params"] for r in complete], [r["value"] for r in complete],
                         cfg.objective.direction, seed=cfg.study.seed)
    if bound < error:
        return (f"after {len(complete)} complete trials the regret bound {bound:.4g} is below the select "
                f"metric's bootstrap standard error {error:.4g}")
    return None


def _reselect(cfg: StudyConfig, results: Mapping[int, Mapping[str, Any]], build: Builder, space: SearchSpace,
              splits: Splits, settings: TrialSettings, tracker: Tracker, run_dir: Path) -> dict[str, Any] | None:
    """Retrain the top-k configurations with new seeds and choose by the mean select score (SMAC's intensification)."""
    from dataclasses import replace as dc_replace

    sign = 1 if cfg.objective.direction == "maximize" else -1
    complete = sorted((r for r in results.values() if r["state"] == "COMPLETE"), key=lambda r: -sign * r["value"])
    top = complete[: cfg.guards.reselect_top_k]
    if not top:
        return None
    quiet = dc_replace(settings, save_models=False)
    audit_key = f"audit_{cfg.objective.metric}"
    table: dict[int, dict[str, Any]] = {}
    for r in top:
        sel, aud = [r["value"]], [r["metrics"].get(audit_key)]
        for j in range(1, cfg.guards.reselect_seeds + 1):
            d = run_dir / "reselect" / f"{r['number']:05d}-{j}"
            if (d / "result.json").exists():  # resumed study: already retrained
                rr = json.loads((d / "result.json").read_text())
            else:
                seed = trial_seed(cfg.study.seed + 7919 * j, r["number"])
                run_id = tracker.start_trial(r["number"], r["params"], tags={
                    "hpo.kind": "reselect", "hpo.seed": seed, "hpo.reselect_of": r["number"]})
                res = run_trial(number=r["number"], params=r["params"], seed=seed, build=build, space=space,
                                splits=splits, settings=quiet, trial_dir=d,
                                listener=lambda e, logs, _id=run_id: tracker.log_epoch(_id, e, logs))
                d.mkdir(parents=True, exist_ok=True)
                rr = _result_dict(res)
                _write_json(d / "result.json", rr)
                tracker.end_trial(run_id, res.metrics, {"hpo.state": res.state.value},
                                  failed=res.state is TrialState.FAILED)
            if rr["state"] == "COMPLETE":
                sel.append(rr["value"])
                aud.append(rr["metrics"].get(audit_key))
        table[r["number"]] = {"select_values": sel, "audit_values": aud, "select_mean": float(np.mean(sel)),
                              "audit_mean": float(np.mean([a for a in aud if a is not None]))}
    chosen = max(table, key=lambda n: sign * table[n]["select_mean"])
    return {"chosen": chosen, "by_trial": table, "seeds_per_config": 1 + cfg.guards.reselect_seeds}


@dataclass
class _Running:
    """A trial between start and finish: its MLflow run, TensorBoard writer and epoch listener."""

    proposal: Proposal
    seed: int
    run_id: str
    trial_dir: Path
    listener: Callable[[int, Mapping[str, float]], None]
    board: Any = None
    extra_callbacks: list[Any] = field(default_factory=list)


def _begin(cfg: StudyConfig, proposal: Proposal, driver: Any, tracker: Tracker, run_dir: Path,
           on_epoch_end: Callable[[int, int, int, Mapping[str, float]], None] | None, *, histograms_here: bool,
           device: str | None = None) -> _Running:
    """Open the trial's MLflow run and TensorBoard writer; the listener logs epochs and asks the pruner."""
    seed = trial_seed(cfg.study.seed, proposal.number)
    run_id = tracker.start_trial(proposal.number, proposal.params,
                                 tags={"hpo.seed": seed, "hpo.driver": cfg.driver.name,
                                       "hpo.device": device or device_description()})
    monitor = f"val_{cfg.objective.metric}"
    board = None
    extra: list[Any] = []
    if cfg.tensorboard.enabled:
        from hpo.tensorboard import TrialBoard, histogram_callback

        board = TrialBoard(run_dir, proposal.number, proposal.params)
        if cfg.tensorboard.histograms and histograms_here:
            extra.append(histogram_callback(board))
    total_epochs = proposal.epochs or cfg.training.epochs

    def listener(epoch: int, logs: Mapping[str, float]) -> None:
        _raise_if_signalled()
        tracker.log_epoch(run_id, epoch, logs)
        if on_epoch_end is not None:
            on_epoch_end(proposal.number, epoch + 1, total_epochs, logs)
        if board is not None:
            board.scalars(epoch, {("epoch_select_" + k[4:]) if k.startswith("val_") else
                                  (f"epoch_{k}" if k.startswith("audit_") else f"epoch_train_{k}"): v
                                  for k, v in logs.items()})
        value = logs.get(monitor)
        if value is not None and math.isfinite(value) and driver.should_prune(proposal, epoch, float(value)):
            raise TrialPruned(f"pruned at epoch {epoch + 1} ({monitor}={value:.4g})")

    return _Running(proposal, seed, run_id, run_dir / "trials" / f"{proposal.number:05d}", listener, board, extra)


def _finish(running: _Running, result: TrialResult, driver: Any, tracker: Tracker) -> None:
    """Record a finished trial: result.json first (it survives a storage outage), then the engine, then MLflow.
    A worker of a shared study closes the MLflow run (with the trial's files) before telling the engine: the
    owner reads the runs of the trials the engine says are done.

    When result.json cannot be written (the disk is full or the run directory unwritable) the study stops
    cleanly: the trial is not told to the engine, so a rerun once the disk is writable runs it again."""
    try:
        running.trial_dir.mkdir(parents=True, exist_ok=True)
        _write_json(running.trial_dir / "result.json",
                    _result_dict(result) | {"mlflow_run_id": tracker.run_id(running.run_id)})
    except OSError as exc:
        from hpo.errors import HpoError

        where = exc.filename or running.trial_dir
        message = (f"trial {result.number}: its result cannot be written to {where} ({exc.strerror or exc}); the study "
                   "stops. Finished trials are saved; make the run directory writable and rerun to resume")
        tracker.end_trial(running.run_id, {}, {"hpo.state": "INTERRUPTED", "hpo.error": message}, failed=True)
        raise HpoError(message) from exc
    if not driver.shared:
        driver.tell(running.proposal, result)
    else:  # workers on other machines: the owner fetches these to summarise and ensemble
        for name in ("result.json", "predictions.npz"):
            if (running.trial_dir / name).exists():
                tracker.log_artifact(running.run_id, running.trial_dir / name, "trial")
    metrics = dict(result.metrics)
    if result.value is not None:
        metrics["select_objective"] = result.value
    metrics.update(duration_s=result.duration_s, epochs=result.epochs)
    tags = {"hpo.state": result.state.value}
    if result.pack:
        tags["hpo.pack"] = ",".join(str(n) for n in result.pack)
    if result.error:
        tags["hpo.error"] = result.error[:5000]
    tracker.end_trial(running.run_id, metrics, tags, failed=result.state is TrialState.FAILED)
    if driver.shared:
        # Delivered (or in the outbox) before the engine says the trial is done, so the owner finds the closed
        # run, and a worker killed a moment later does not take them with it in the background thread's queue.
        tracker.wait()
        if not driver.tell(running.proposal, result):
            # Another worker failed it as stale while this one was cut off from the database, and the study
            # runs a replacement: this result is not the study's, here (summary, ensemble) or in MLflow.
            result.state, result.value = TrialState.FAILED, None
            result.error = ("superseded: the storage had failed this trial as stale while its worker was cut off "
                            "from the database; a replacement runs in its place")
            _write_json(running.trial_dir / "result.json",
                        _result_dict(result) | {"mlflow_run_id": tracker.run_id(running.run_id)})
            tracker.tag_run(running.run_id, {"hpo.state": "SUPERSEDED", "hpo.error": result.error})
    if running.board is not None:
        running.board.finish({k: v for k, v in result.metrics.items()}, failed=result.state is not TrialState.COMPLETE)


def _run_one(cfg: StudyConfig, proposal: Proposal, build: Builder, space: SearchSpace, splits: Splits,
             settings: TrialSettings, driver: Any, tracker: Tracker, run_dir: Path,
             on_epoch_end: Callable[[int, int, int, Mapping[str, float]], None] | None = None) -> TrialResult:
    """One trial in this process."""
    running = _begin(cfg, proposal, driver, tracker, run_dir, on_epoch_end, histograms_here=True)
    try:
        result = run_trial(number=proposal.number, params=proposal.params, seed=running.seed, build=build, space=space,
                           splits=splits, settings=settings, trial_dir=running.trial_dir, listener=running.listener,
                           epochs=proposal.epochs, extra_callbacks=running.extra_callbacks)
        # A signal whose interrupt the trial's code caught and turned into an ordinary error (a library's
        # `except`) would otherwise be recorded as the trial's failure and count against the budget on resume.
        _raise_if_signalled()
    except BaseException:
        tracker.end_trial(running.run_id, {}, {"hpo.state": "INTERRUPTED"}, failed=True)
        raise
    _finish(running, result, driver, tracker)
    return result


def _ask_batch(driver: Any, space: SearchSpace, size: int) -> list[Proposal] | Wait | None:
    """Up to ``size`` proposals for packing; after the first, the engine is asked (where it can) to keep the
    first's shape parameters so the batch packs into one model."""
    from hpo.packing import shape_key, shape_params

    first = driver.ask()
    if first is None or isinstance(first, Wait):
        return first
    batch = [first]
    # The first packable proposal leads: later ones are asked to share its shape (one with batch
    # normalization, which cannot pack, runs alone).
    leader = first if shape_key(first.params, first.epochs) is not None else None
    while len(batch) < size:
        if leader is not None:
            driver.prefer(shape_params(space, leader.params))
        nxt = driver.ask()
        if nxt is None or isinstance(nxt, Wait):  # the engine has nothing more now: run what we have
            break
        batch.append(nxt)
        if leader is None and shape_key(nxt.params, nxt.epochs) is not None:
            leader = nxt
    return batch


def _run_batch(cfg: StudyConfig, batch: list[Proposal], build: Builder, space: SearchSpace, splits: Splits,
               settings: TrialSettings, driver: Any, tracker: Tracker, run_dir: Path,
               on_epoch_end: Callable[[int, int, int, Mapping[str, float]], None] | None) -> list[TrialResult]:
    """Run a batch of proposals: those sharing an architecture as packed models, the others one by one."""
    from hpo.packing import group, shape_key, train_pack

    out: list[TrialResult] = []
    for grp in group(batch, lambda p: shape_key(p.params, p.epochs)):
        if len(grp) == 1:
            out.append(_run_one(cfg, grp[0], build, space, splits, settings, driver, tracker, run_dir, on_epoch_end))
            continue
        runs = [_begin(cfg, p, driver, tracker, run_dir, on_epoch_end, histograms_here=False) for p in grp]
        try:
            results = train_pack(numbers=[p.number for p in grp], params=[p.params for p in grp],
                                 seeds=[r.seed for r in runs], listeners=[r.listener for r in runs],
                                 trial_dirs=[r.trial_dir for r in runs], splits=splits, settings=settings,
                                 epochs=grp[0].epochs)
            _raise_if_signalled()  # as in _run_one: the pack is interrupted, not failed
        except BaseException:
            for r in runs:
                tracker.end_trial(r.run_id, {}, {"hpo.state": "INTERRUPTED"}, failed=True)
            raise
        for r, res in zip(runs, results):
            res.pack = [p.number for p in grp]
            _finish(r, res, driver, tracker)
        out.extend(results)
    return out


def _run_in_pool(cfg: StudyConfig, slots: list[Any], build: Builder, space: SearchSpace, splits: Splits,
                 settings: TrialSettings, driver: Any, tracker: Tracker, run_dir: Path, remaining: int,
                 on_done: Callable[[TrialResult], bool],
                 on_epoch_end: Callable[[int, int, int, Mapping[str, float]], None] | None = None,
                 on_pool: Callable[[Any], None] | None = None) -> None:
    """Run up to ``remaining`` trials on worker processes; ``on_done`` returns False to stop asking."""
    from hpo.executor import DoneEvent, Task, WorkerPool

    ex = cfg.executor
    payload = {"build": cfg.space.builder if _is_config_builder(cfg, build) else build, "space": space,
               "splits": splits, "settings": settings, "run_dir": str(run_dir)}
    pool = WorkerPool(slots, payload, run_dir / ".executor", recycle_after=ex.recycle_after,
                      memory_limit_mb=ex.memory_limit_mb, start_timeout_s=ex.start_timeout_s)
    pool.start()
    if on_pool is not None:
        on_pool(pool)
    running: dict[int, _Running] = {}
    asking = True
    wait_for_engine = False  # the engine answered "nothing now" (Hyperband between rounds): ask after a trial ends
    try:
        while running or (asking and remaining > 0):
            _raise_if_signalled()
            while asking and not wait_for_engine and remaining - len(running) > 0 and pool.idle():
                proposal = driver.ask()
                if isinstance(proposal, Wait):  # a shared study's last slots are running elsewhere
                    if not running:
                        time.sleep(proposal.seconds)
                    break
                if proposal is None:
                    if running:
                        wait_for_engine = True
                    else:
                        asking = False
                    break
                slot = pool.idle()[0]
                r = _begin(cfg, proposal, driver, tracker, run_dir, on_epoch_end, histograms_here=False,
                           device=pool.slots[slot].describe())
                running[proposal.number] = r
                pool.submit(slot, Task(proposal.number, proposal.params, r.seed, str(r.trial_dir), proposal.epochs,
                                       histograms=cfg.tensorboard.enabled and cfg.tensorboard.histograms))
            for ev in pool.poll(timeout=0.5):
                r = running.get(ev.number)
                if r is None:
                    continue
                if isinstance(ev, DoneEvent):
                    del running[ev.number]
                    _finish(r, ev.result, driver, tracker)
                    remaining = cfg.study.n_trials - driver.n_finished() if driver.shared else remaining - 1
                    wait_for_engine = False
                    if not on_done(ev.result):
                        asking = False
                    continue
                try:
                    r.listener(ev.epoch, ev.logs)
                except TrialPruned as exc:
                    pool.reply(ev.number, True, str(exc))
                else:
                    pool.reply(ev.number, False)
    except BaseException:
        for r in running.values():
            tracker.end_trial(r.run_id, {}, {"hpo.state": "INTERRUPTED"}, failed=True)
        raise
    finally:
        pool.close()


def _is_config_builder(cfg: StudyConfig, build: Builder) -> bool:
    """True when ``build`` is the built-in builder the config names (workers import it by name)."""
    try:
        from search_spaces import get_builder

        return get_builder(cfg.space.builder) is build
    except Exception:
        return False


def _retain_models(run_dir: Path, results: dict[int, dict[str, Any]], keep: int, direction: str) -> None:
    """Delete model.keras of every trial outside the best ``keep``; logits and result.json stay."""
    sign = 1 if direction == "maximize" else -1
    complete = sorted((r for r in results.values() if r["state"] == "COMPLETE" and r.get("model_path")),
                      key=lambda r: (-sign * r["value"], r["number"]))
    for r in complete[keep:]:
        Path(r["model_path"]).unlink(missing_ok=True)
        r["model_path"] = None
        path = run_dir / "trials" / f"{r['number']:05d}" / "result.json"
        if path.exists():
            saved = json.loads(path.read_text())
            saved["model_path"] = None
            _write_json(path, saved)


def _redacted_config(cfg: StudyConfig) -> dict[str, Any]:
    saved = cfg.to_dict()
    saved["driver"]["storage"] = redact(saved["driver"]["storage"])
    saved["tracking"]["uri"] = redact(saved["tracking"]["uri"])
    return saved


def _shared_parent_run(driver: Any, tracker: Tracker, cfg: StudyConfig, params: dict[str, Any],
                       tags: dict[str, Any], timeout_s: float = 120.0) -> str:
    """The study's MLflow parent run: made by the process that created the study, found by the others."""
    if driver.created or (driver.parent_run_id() is None and _creator_gone(driver, timeout_s)):
        parent = tracker.start_study(cfg.study.name, params=params, tags=tags)
        driver.set_parent_run_id(parent)
        return parent
    parent = driver.parent_run_id()
    assert parent is not None
    tracker.parent_run_id = parent
    tracker.client.update_run(parent, status="RUNNING")
    return parent


def _creator_gone(driver: Any, timeout_s: float) -> bool:
    """Wait for the study's creator to record its parent run; True if it never does (it died first)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if driver.parent_run_id() is not None:
            return False
        time.sleep(0.5)
    return True


def _await_remote_runs(driver: Any, tracker: Tracker, have: Mapping[int, Any], timeout_s: float) -> None:
    """Wait (up to ``timeout_s``) until every finished trial another machine ran has its MLflow run closed.

    A worker closes its run before it tells the storage, but its MLflow calls may wait in its outbox while the
    tracking store is unreachable from its machine; fetching or marking orphans too early would miss or kill
    them. A run still open after ``timeout_s`` belongs to a worker that died, or one whose calls still wait."""
    expected = set(driver.finished_numbers()) - set(have)
    deadline = time.monotonic() + timeout_s
    while expected and time.monotonic() < deadline:
        expected -= set(tracker.trial_runs())
        if expected:
            time.sleep(0.5)


def _fetch_remote_trials(tracker: Tracker, run_dir: Path, have: Mapping[int, Any],
                         finished: set[int]) -> dict[int, dict[str, Any]]:
    """Trials other machines ran that the engine counts as finished: their result.json and logits, downloaded
    from their MLflow runs (a run of a trial the storage failed as stale, or of a worker that died before its
    tell, is left out)."""
    out: dict[int, dict[str, Any]] = {}
    for number, run_id in tracker.trial_runs().items():
        if number in have or number not in finished:
            continue
        d = run_dir / "trials" / f"{number:05d}"
        try:
            tracker.download_trial_files(run_id, d)
        except Exception as exc:
            log.warning("trial %d: its files could not be fetched from MLflow (%s)", number, exc)
            continue
        if (d / "result.json").exists():
            r = json.loads((d / "result.json").read_text())
            if r.get("predictions_path"):
                r["predictions_path"] = str(d / "predictions.npz")
            r["model_path"] = None  # the model stays on the machine that trained it
            _write_json(d / "result.json", r)
            out[number] = r
    return out


def _worker_summary(cfg: StudyConfig, run_dir: Path, results: Mapping[int, Mapping[str, Any]], started: float,
                    parent: str, uri: str) -> StudySummary:
    """What this worker ran (the owner's summary covers the whole study)."""
    done = list(results.values())
    return StudySummary(
        name=cfg.study.name, run_dir=str(run_dir), n_complete=sum(r["state"] == "COMPLETE" for r in done),
        n_pruned=sum(r["state"] == "PRUNED" for r in done), n_failed=sum(r["state"] == "FAILED" for r in done),
        best_trial=None, best_params={}, best_select=None, best_audit=None, best_test={},
        duration_s=time.monotonic() - started, parent_run_id=parent, tracking_uri=redact(uri),
        trials=[{"number": r["number"], "state": r["state"], "value": r["value"], "params": r["params"]}
                for r in sorted(done, key=lambda r: r["number"])])


def _result_dict(r: TrialResult) -> dict[str, Any]:
    d = asdict(r)
    d["state"] = r.state.value
    return d


def _load_results(run_dir: Path) -> dict[int, dict[str, Any]]:
    out = {}
    for p in (run_dir / "trials").glob("*/result.json"):
        r = json.loads(p.read_text())
        out[r["number"]] = r
    return out


def _progress(results: Mapping[int, Mapping[str, Any]], cfg: StudyConfig, started: float) -> StudyProgress:
    vals = [r["value"] for r in results.values() if r["state"] == "COMPLETE"]
    best = (max if cfg.objective.direction == "maximize" else min)(vals) if vals else None
    return StudyProgress(done=len(results), total=cfg.study.n_trials,
                         failed=sum(r["state"] == "FAILED" for r in results.values()),
                         pruned=sum(r["state"] == "PRUNED" for r in results.values()),
                         best_value=best, elapsed_s=time.monotonic() - started)


def _summarise(cfg: StudyConfig, run_dir: Path, results: Mapping[int, Mapping[str, Any]], splits: Splits,
               started: float, parent: str, uri: str, reselection: dict[str, Any] | None = None) -> StudySummary:
    complete = [r for r in results.values() if r["state"] == "COMPLETE"]
    sign = 1 if cfg.objective.direction == "maximize" else -1
    by_select = max(complete, key=lambda r: (sign * r["value"], -r["number"])) if complete else None
    best = results[reselection["chosen"]] if reselection else by_select
    best_test: dict[str, float] = {}
    if best is not None and best.get("predictions_path"):
        from ensembles.pool import load_pool

        pool = load_pool(run_dir)
        i = pool.numbers.index(best["number"])
        counts = np.zeros(len(pool))
        counts[i] = 1
        from ensembles.build import evaluate

        # The locked test split is only evaluated here, for the final incumbent (and counted).
        from hpo.guards import record_test_use

        best_test = {k[5:]: v for k, v in evaluate(pool, counts, "probs", {}, splits=("test",)).items()}
        record_test_use(run_dir, f"incumbent trial {best['number']}")
    trials = [{"number": r["number"], "state": r["state"], "value": r["value"], "params": r["params"],
               "audit": r["metrics"].get(f"audit_{cfg.objective.metric}"), "error": r.get("error")}
              for r in sorted(results.values(), key=lambda r: r["number"])]
    return StudySummary(
        name=cfg.study.name, run_dir=str(run_dir),
        n_complete=len(complete), n_pruned=sum(r["state"] == "PRUNED" for r in results.values()),
        n_failed=sum(r["state"] == "FAILED" for r in results.values()),
        best_trial=best["number"] if best else None, best_params=best["params"] if best else {},
        best_select=best["value"] if best else None,
        best_audit=best["metrics"].get(f"audit_{cfg.objective.metric}") if best else None,
        best_test=best_test, duration_s=time.monotonic() - started, parent_run_id=parent,
        tracking_uri=redact(uri), trials=trials, reselection=reselection,
        best_trial_by_select=by_select["number"] if by_select else None,
    )


def _ensemble(cfg: StudyConfig, run_dir: Path, uri: str, parent: str) -> dict[str, Any]:
    from ensembles import build_ensemble

    rep = build_ensemble(run_dir, method=cfg.ensemble.method, combine=cfg.ensemble.combine, size=cfg.ensemble.size,
                         metric=cfg.ensemble.metric, save_artifact=cfg.training.save_models,
                         tracking_uri=uri if cfg.training.save_models else None, parent_run_id=parent)
    return {"members": [(m["trial"], m["weight"]) for m in rep.members], "metrics": rep.metrics,
            "best_single": rep.best_single["metrics"], "artifact_dir": rep.artifact_dir,
            "mlflow_run_id": rep.mlflow_run_id, "model_uri": rep.model_uri}


# -- script API --------------------------------------------------------------------------------
def _materialise(data: Any) -> tuple[Any, Any]:
    """(x, y) from arrays or a finite dataset of (x, y) batches (``tf.data`` or any iterable)."""
    if isinstance(data, tuple) and len(data) == 2:
        return data
    if hasattr(data, "as_numpy_iterator") or hasattr(data, "__iter__"):
        xs, ys = [], []
        for xb, yb in (data.as_numpy_iterator() if hasattr(data, "as_numpy_iterator") else data):
            xs.append(xb)
            ys.append(yb)
        return concat(xs), concat(ys)
    raise ConfigError("data", f"expected (x, y) arrays or a dataset of (x, y) batches, got {type(data).__name__}")


def search(
    build: Builder,
    x: Any,
    y: Any = None,
    *,
    validation_data: Any,
    test_data: Any = None,
    name: str = "search",
    n_trials: int = 12,
    driver: str = "optuna",
    sampler: str | None = None,
    pruner: str = "none",
    epochs: int = 10,
    batch_size: int = 64,
    objective: str = "accuracy",
    direction: str = "maximize",
    seed: int = 0,
    run_dir: str | Path | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    ensemble: bool | Mapping[str, Any] = True,
    callbacks: Any = None,
    tensorboard: bool = False,
    heads: Any = None,
    on_trial_end: TrialCallback | None = None,
    executor: Mapping[str, Any] | None = None,
) -> StudySummary:
    """Search ``build(hp)`` on the user's own data, like ``tuner.search(x, y, validation_data=...)``.

    ``x``/``y`` may be arrays, lists or dicts of named arrays, or ``x`` a dataset of
    ``(x, y)`` batches (materialised into arrays). ``validation_data`` is cut into the
    ``select`` and ``audit`` halves; ``test_data``, when given, is the locked test split
    (otherwise 20% of ``x`` is held out). Labels stay in the form the user's loss expects.
    """
    from hpo.data import DataSpec, check_rows, infer_heads, n_rows, take

    if y is None:
        x, y = _materialise(x)
    xv, yv = _materialise(validation_data)
    check_rows(x, y, "y")  # before any cutting: rows of other lengths would be silently misaligned
    check_rows(xv, yv, "validation_data")
    if isinstance(x, dict):
        inputs = {k: tuple(np.asarray(v).shape[1:]) for k, v in x.items()}
    elif isinstance(x, (list, tuple)):
        inputs = {f"input_{i}": tuple(np.asarray(v).shape[1:]) for i, v in enumerate(x)}
    else:
        inputs = {"input": tuple(np.asarray(x).shape[1:])}
    spec = DataSpec(inputs, tuple(heads) if heads is not None else infer_heads(y))
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_rows(yv))
    half = len(perm) // 2
    if half < 1:
        raise ConfigError("validation_data", "needs at least 2 rows to cut into select and audit halves")
    if test_data is not None:
        xt, yt = _materialise(test_data)
        xs = {"train": x, "select": take(xv, perm[:half]), "audit": take(xv, perm[half:]), "test": xt}
        ys = {"train": y, "select": take(yv, perm[:half]), "audit": take(yv, perm[half:]), "test": yt}
        splits = Splits(x=xs, y=ys, spec=spec, name=name)
    else:
        idx = rng.permutation(n_rows(y))
        n_test = max(1, int(0.2 * len(idx)))
        xs = {"train": take(x, idx[n_test:]), "select": take(xv, perm[:half]), "audit": take(xv, perm[half:]),
              "test": take(x, idx[:n_test])}
        ys = {"train": take(y, idx[n_test:]), "select": take(yv, perm[:half]), "audit": take(yv, perm[half:]),
              "test": take(y, idx[:n_test])}
        splits = Splits(x=xs, y=ys, spec=spec, name=name)
    ens = {} if isinstance(ensemble, bool) else dict(ensemble)
    raw = {
        "study": {"name": name, "seed": seed, "n_trials": n_trials, "run_dir": str(run_dir) if run_dir else None},
        "driver": {"name": driver, "sampler": sampler or config_mod.SAMPLERS.get(driver, ("tpe",))[0],
                   "pruner": pruner, "storage": storage},
        "data": {"dataset": "custom"},  # the data is given from Python
        "space": {"builder": getattr(build, "__module__", "user") + ":" + getattr(build, "__qualname__", "build")},
        "training": {"epochs": epochs, "batch_size": batch_size},
        "objective": {"metric": objective, "direction": direction},
        "tracking": {"uri": tracking_uri},
        "ensemble": {"enabled": bool(ensemble), **ens},
        "tensorboard": {"enabled": tensorboard},
        "executor": dict(executor or {}),
    }
    cfg = config_mod.from_dict(raw)
    return run_study(cfg, build=build, splits=splits, callbacks=callbacks, on_trial_end=on_trial_end)
