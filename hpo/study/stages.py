"""The end of a study, as a list of small stages run in order on the open :class:`StudyRun`: summary,
seed refit (whose members are ensemble candidates), ensemble, plots, guards, summary file and report, and the parent run's final record."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hpo.execution.xla import host_initialisers
from hpo.results import inside, write_json
from hpo.study.context import StudyRun
from hpo.study.summary import StudySummary, summarise

log = logging.getLogger(__name__)


@dataclass
class Ending:
    """What the stages leave for the parent run's final record."""

    metrics: dict[str, float | None] = field(default_factory=dict)
    tags: dict[str, Any] = field(default_factory=dict)


Stage = Callable[[StudyRun, StudySummary, Ending], None]


def ensemble_stage(run: StudyRun, summary: StudySummary, ending: Ending) -> None:
    """The ensemble of the best trials, logged to MLflow (or only saved, while the tracking store is unreachable)."""
    cfg = run.cfg
    if not (cfg.ensemble.enabled and summary.n_complete - summary.n_infeasible > 0):
        return  # (infeasible trials never join an ensemble: ensembles.pool.load_pool)
    from hpo.tracking import is_transient

    logged = run.tracker.healthy()
    try:
        summary.ensemble = _ensemble(run, logged, summary.best_trial)
    except Exception as exc:
        if not (logged and is_transient(exc)):
            raise
        logged = False
        summary.ensemble = _ensemble(run, False, summary.best_trial)
    if not logged and cfg.training.save_models:
        log.warning("the ensemble is saved in %s but not logged to MLflow (the tracking store is unreachable); "
                    "`hpo ensemble %s` logs one once it is back", summary.ensemble.get("artifact_dir"), run.run_dir)


def _ensemble(run: StudyRun, logged: bool, summary_best: int | None) -> dict[str, Any]:
    from ensembles import build_ensemble
    from ensembles.artifact import member_name

    e, save = run.cfg.ensemble, run.cfg.training.save_models
    rep = build_ensemble(run.run_dir, method=e.method, combine=e.combine, size=e.size, metric=e.metric,
                         calibrate=e.calibrate, confidence=e.confidence, snapshots=bool(e.snapshot_epochs),
                         max_per_config=e.max_per_config, save_artifact=save,
                         tracking_uri=run.uri if (save and logged) else None, parent_run_id=run.parent,
                         incumbent_counted=summary_best, seed=run.cfg.study.seed)
    return {"members": [(member_name(m), m["weight"]) for m in rep.members], "metrics": rep.metrics,
            "best_single": rep.best_single["metrics"], "best_single_trial": rep.best_single["trial"],
            "best_single_alone": rep.best_single_alone,
            "member_records": [{k: m[k] for k in ("trial", "epoch", "refit", "count", "temperature")}
                               for m in rep.members],
            "artifact_dir": rep.artifact_dir,
            "mlflow_run_id": rep.mlflow_run_id, "model_uri": rep.model_uri}


def seed_refit_stage(run: StudyRun, summary: StudySummary, ending: Ending) -> None:
    """``ensemble.seed_refit``: the incumbent retrained with new seeds as one packed model, before the ensemble
    stage so that its members are candidates of the ensemble's pool. Left at null, ``AUTO_SEEDS`` seeds where the
    study's best configuration packs and the ensemble is on (else nothing, logged at info)."""
    cfg = run.cfg
    if summary.best_trial is None:
        return
    from hpo.execution.refit import AUTO_SEEDS, auto_refit, seed_refit
    from hpo.space.fit_params import searched_fit_params

    members = cfg.ensemble.seed_refit
    if members is None and cfg.ensemble.enabled:
        reason = auto_refit(cfg.space.builder, run.splits, summary.best_params,
                            searched=list(searched_fit_params(cfg.training)), folds=cfg.training.folds,
                            objective=cfg.objective.metric)
        if reason:
            log.info("no seed refit of the best configuration: %s", reason)
        members = 0 if reason else AUTO_SEEDS
    if not members:
        return
    summary.seed_refit = seed_refit(cfg.space.builder, summary.best_params, run.splits, members=members,
                                    epochs=cfg.training.epochs, batch_size=cfg.training.batch_size,
                                    seed=cfg.study.seed, out_dir=run.run_dir / "refit", trial=summary.best_trial,
                                    objective=cfg.objective.metric, save_models=cfg.training.save_models)
    if "skipped" in summary.seed_refit:
        log.warning("seed refit skipped: %s", summary.seed_refit["skipped"])
    else:
        ending.metrics.update({f"seed_refit_select_{k}": v for k, v in summary.seed_refit["select"].items()})
        ending.metrics["seed_refit_wall_s"] = summary.seed_refit["wall_s"]


def plots_stage(run: StudyRun, summary: StudySummary, ending: Ending) -> None:
    """Model plots of the best trial and the ensemble."""
    if not (run.cfg.plots.enabled and summary.best_trial is not None):
        return
    from hpo.analysis.plots import plot_study

    best = run.results.get(summary.best_trial, {})
    model = inside(run.run_dir, best.get("model_path"), f"trial {summary.best_trial}: model_path")
    summary.plots = plot_study(run.run_dir, str(model) if model else None,
                               summary.ensemble.get("artifact_dir") if summary.ensemble else None)
    for key in ("best_trial", "ensemble"):
        if summary.plots.get(key):
            run.tracker.log_study_artifact(Path(summary.plots[key]), "plots")


def guards_stage(run: StudyRun, summary: StudySummary, ending: Ending) -> None:
    """The guard report (guards.json, parent-run metrics and tags) and the count of test-split uses."""
    from hpo.analysis.guards import test_uses

    cfg = run.cfg
    if cfg.guards.enabled and summary.best_trial is not None:
        from hpo.analysis.guards import check_study

        members = None
        if summary.ensemble:
            members = (summary.ensemble["member_records"], cfg.ensemble.combine)
        report = check_study(run.run_dir, list(run.results.values()), metric=cfg.objective.metric,
                             direction=cfg.objective.direction, incumbent=summary.best_trial,
                             threshold=cfg.guards.gap_threshold, n_resamples=cfg.guards.n_bootstrap,
                             confidence=cfg.guards.confidence, seed=cfg.study.seed, ensemble_counts=members)
        summary.guards = report.to_dict() | {"verdict": report.verdict()}
        if cfg.multi_objective:  # the other objectives' guards on the chosen trial
            from hpo.study.objectives import objective_guards

            summary.guards["per_objective"] = objective_guards(run.run_dir, cfg, list(run.results.values()),
                                                               summary.best_trial)
            if any(p.get("overfit") for p in summary.guards["per_objective"].values()):
                ending.tags["hpo.guard.overfit_other_objective"] = "true"
        write_json(run.run_dir / "guards.json", summary.guards)
        run.tracker.log_study_artifact(run.run_dir / "guards.json")
        c = report.incumbent_check
        ending.metrics.update({
            "guard_gap": c.gap if c else None, "guard_gap_threshold": c.threshold if c else None,
            "guard_gap_se": c.gap_se if c else None, "guard_select_audit_correlation": report.correlation,
            "guard_overtuning": report.overtuning, "guard_tied_trials": float(len(report.tied)),
            "guard_ensemble_gap": report.ensemble_check.gap if report.ensemble_check else None})
        ending.tags.update({"hpo.guard.overfit": str(report.overfit).lower(), "hpo.guard.verdict": report.verdict()})
    ending.metrics["test_split_uses"] = float(test_uses(run.run_dir))


def front_stage(run: StudyRun, summary: StudySummary, ending: Ending) -> None:
    """Several objectives or constraints: the Pareto front as pareto_front.json, logged to the parent run with
    its trial numbers (tag ``hpo.pareto_front``) and the chosen trial's value of each objective."""
    if summary.pareto_front is None:
        return
    front = {"objectives": summary.objectives, "chosen": summary.best_trial, "rule": CHOSEN_RULE,
             "n_infeasible": summary.n_infeasible, "front": summary.pareto_front}
    write_json(run.run_dir / "pareto_front.json", front)
    run.tracker.log_study_artifact(run.run_dir / "pareto_front.json")
    ending.tags["hpo.pareto_front"] = ",".join(str(p["number"]) for p in summary.pareto_front) or "empty"
    ending.metrics["pareto_front_size"] = float(len(summary.pareto_front))
    ending.metrics["n_infeasible"] = float(summary.n_infeasible)
    chosen = next((p for p in summary.pareto_front if p["number"] == summary.best_trial), None)
    for metric, v in (chosen or {}).get("select", {}).items():
        ending.metrics[f"chosen_{metric}"] = v


CHOSEN_RULE = ("the feasible Pareto front's best trial on the first objective; ties broken by the next objectives "
               "in order, then by the lowest trial number")


def files_stage(run: StudyRun, summary: StudySummary, ending: Ending) -> None:
    """summary.json and the offline report, logged to the parent run."""
    summary.duration_s = time.monotonic() - run.started
    write_json(run.run_dir / "summary.json", summary.to_dict())
    run.tracker.log_study_artifact(run.run_dir / "summary.json")
    if run.cfg.report.enabled:
        from hpo.analysis.report import build_report

        summary.report = str(build_report(run.run_dir))
        write_json(run.run_dir / "summary.json", summary.to_dict())
        run.tracker.log_study_artifact(Path(summary.report))


def end_tracking_stage(run: StudyRun, summary: StudySummary, ending: Ending) -> None:
    """The parent run's final metrics and tags; a warning (and the count in summary.json) for MLflow calls still
    waiting in the outbox."""
    metrics: dict[str, float | None] = {
        "n_complete": summary.n_complete, "n_failed": summary.n_failed, "n_pruned": summary.n_pruned,
        "best_select": summary.best_select, "best_audit": summary.best_audit,
        **{f"best_test_{k}": v for k, v in summary.best_test.items()},
    }
    if summary.ensemble:
        metrics.update({f"ensemble_{k}": v for k, v in summary.ensemble["metrics"].items()})
    metrics.update(ending.metrics)
    tags = {"hpo.best_trial": summary.best_trial, "hpo.status": "finished", **ending.tags}
    if run.stopped_early:
        tags["hpo.stopped_early"] = run.stopped_early
    from hpo.study.note import study_note

    cfg = run.cfg
    tags["mlflow.note.content"] = study_note(summary, study=cfg.study.name, metric=cfg.objective.metric,
                                             builder=cfg.space.builder, dataset=cfg.data.dataset)
    if run.role == "owner":  # the experiment's description is the study's (a shared study's owner writes it)
        m = cfg.objective.metric
        run.tracker.describe_experiment(tags["mlflow.note.content"], columns=[f"select_{m}", f"audit_{m}"])
    run.tracker.end_study(metrics, tags, status="FINISHED")
    undelivered = run.tracker.undelivered_message()
    if undelivered:
        summary.tracking_undelivered = run.tracker.pending
        write_json(run.run_dir / "summary.json", summary.to_dict())
        log.warning(undelivered)


STAGES: tuple[Stage, ...] = (seed_refit_stage, ensemble_stage, plots_stage, guards_stage, front_stage, files_stage,
                             end_tracking_stage)


def finish_study(run: StudyRun, reselection: dict[str, Any] | None) -> StudySummary:
    """Summarise the study and run its end stages in order."""
    from hpo.study.objectives import pareto_front

    several = run.cfg.multi_objective or bool(run.cfg.constraints)
    front = pareto_front(run.cfg, run.results, run.driver.pareto_front() if several else None)
    summary = summarise(run.cfg, run.run_dir, run.results, run.started, run.parent, run.uri, reselection, front)
    summary.stopped_early = run.stopped_early
    ending = Ending()
    # The stages load saved models (ensemble members, plotted models): under JAX their initialisers would compile
    # one program per kernel shape before the saved weights replace them (hpo.execution.xla)
    with host_initialisers():
        for stage in STAGES:
            stage(run, summary, ending)
    return summary
