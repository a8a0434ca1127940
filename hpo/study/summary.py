"""How a study ended (:class:`StudySummary`) and how far it is (:class:`StudyProgress`)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from hpo.config import StudyConfig
from hpo.execution.xla import enable_compilation_cache
from hpo.redaction import redact


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
    # several objectives or constraints (hpo.study.objectives): the objectives, the Pareto front on select (each
    # point's values on select and audit), and how many complete trials were infeasible
    objectives: list[dict[str, str]] | None = None
    pareto_front: list[dict[str, Any]] | None = None
    n_infeasible: int = 0
    tracking_undelivered: int = 0  # MLflow calls queued in mlflow_outbox.jsonl (`hpo sync RUN_DIR` delivers them)
    compilation_cache: str | None = None  # JAX's persistent compilation cache folder the study used (JAX only)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StudyProgress:
    """Counts passed to progress callbacks after each trial."""

    done: int
    total: int
    failed: int
    pruned: int
    best_value: float | None
    elapsed_s: float


def _count(results: Mapping[int, Mapping[str, Any]], state: str) -> int:
    return sum(r["state"] == state for r in results.values())


def progress(results: Mapping[int, Mapping[str, Any]], cfg: StudyConfig, started: float) -> StudyProgress:
    """Where the study stands after its latest trial."""
    vals = [r["value"] for r in results.values() if r["state"] == "COMPLETE"]
    best = (max if cfg.objective.direction == "maximize" else min)(vals) if vals else None
    return StudyProgress(done=len(results), total=cfg.study.n_trials, failed=_count(results, "FAILED"),
                         pruned=_count(results, "PRUNED"), best_value=best, elapsed_s=time.monotonic() - started)


def worker_summary(cfg: StudyConfig, run_dir: Path, results: Mapping[int, Mapping[str, Any]], started: float,
                   parent: str, uri: str) -> StudySummary:
    """What this worker ran (the owner's summary covers the whole study)."""
    done = sorted(results.values(), key=lambda r: r["number"])
    return StudySummary(
        name=cfg.study.name, run_dir=str(run_dir), n_complete=_count(results, "COMPLETE"),
        n_pruned=_count(results, "PRUNED"), n_failed=_count(results, "FAILED"),
        best_trial=None, best_params={}, best_select=None, best_audit=None, best_test={},
        duration_s=time.monotonic() - started, parent_run_id=parent, tracking_uri=redact(uri),
        trials=[{"number": r["number"], "state": r["state"], "value": r["value"], "params": r["params"]}
                for r in done], compilation_cache=enable_compilation_cache())


def summarise(cfg: StudyConfig, run_dir: Path, results: Mapping[int, Mapping[str, Any]], started: float,
              parent: str, uri: str, reselection: dict[str, Any] | None = None,
              front: list[dict[str, Any]] | None = None) -> StudySummary:
    """The owner's summary: the incumbent (by select, or by reselection, or the Pareto ``front``'s chosen trial
    with several objectives or constraints) and its score on the locked test split."""
    from hpo.study.objectives import chosen_trial

    complete = [r for r in results.values() if r["state"] == "COMPLETE"]
    sign = 1 if cfg.objective.direction == "maximize" else -1
    by_select = max(complete, key=lambda r: (sign * r["value"], -r["number"])) if complete else None
    if front is not None:
        chosen = chosen_trial(cfg, front)
        by_select = results[chosen] if chosen is not None else None
    best = results[reselection["chosen"]] if reselection else by_select
    best_test = incumbent_test_scores(run_dir, best) if best is not None and best.get("predictions_path") else {}
    audit_key = f"audit_{cfg.objective.metric}"
    trials = [{"number": r["number"], "state": r["state"], "value": r["value"], "params": r["params"],
               "audit": r["metrics"].get(audit_key), "error": r.get("error"),
               **{k: r[k] for k in ("values", "feasible", "measures") if r.get(k) is not None}}
              for r in sorted(results.values(), key=lambda r: r["number"])]
    return StudySummary(
        name=cfg.study.name, run_dir=str(run_dir),
        n_complete=len(complete), n_pruned=_count(results, "PRUNED"), n_failed=_count(results, "FAILED"),
        best_trial=best["number"] if best else None, best_params=best["params"] if best else {},
        best_select=best["value"] if best else None,
        best_audit=best["metrics"].get(audit_key) if best else None,
        best_test=best_test, duration_s=time.monotonic() - started, parent_run_id=parent,
        tracking_uri=redact(uri), trials=trials, reselection=reselection,
        best_trial_by_select=by_select["number"] if by_select else None,
        objectives=[{"metric": o.metric, "direction": o.direction} for o in cfg.objectives] if front is not None else None,
        pareto_front=front, n_infeasible=sum(r.get("feasible") is False for r in complete),
        compilation_cache=enable_compilation_cache(),
    )


def incumbent_test_scores(run_dir: Path, best: Mapping[str, Any]) -> dict[str, float]:
    """The incumbent's scores on the locked test split: the one place a study reads it for a trial (counted)."""
    from ensembles.build import evaluate
    from ensembles.pool import load_pool
    from hpo.analysis.guards import record_test_use

    pool = load_pool(run_dir)
    counts = np.zeros(len(pool))
    counts[pool.numbers.index(best["number"])] = 1
    scores = {k[5:]: v for k, v in evaluate(pool, counts, "probs", {}, splits=("test",)).items()}
    record_test_use(run_dir, f"incumbent trial {best['number']}")
    return scores
