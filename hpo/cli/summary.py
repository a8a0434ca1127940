"""What ``hpo run`` prints when its study is done: the best trial, the ensemble, refits, the guards' verdict."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from hpo.cli._common import fmt

if TYPE_CHECKING:
    from hpo.config import StudyConfig
    from hpo.study import StudySummary


def print_summary(cfg: "StudyConfig", summary: "StudySummary") -> None:
    """Print a finished study's summary (the owner's; a worker prints one line)."""
    m = cfg.objective.metric
    print(f"\ndone in {summary.duration_s:.0f}s: {summary.n_complete} complete, {summary.n_pruned} pruned, "
          f"{summary.n_failed} failed")
    if summary.best_trial is not None:
        print(f"best trial {summary.best_trial}: select_{m}={fmt(summary.best_select)} "
              f"audit_{m}={fmt(summary.best_audit)}  params={summary.best_params}")
        print("  test (locked split): " + ", ".join(f"{k}={fmt(v)}" for k, v in summary.best_test.items()))
    if summary.pareto_front is not None:
        _print_front(summary)
    _print_ensembles(summary)
    if summary.plots and summary.plots.get("message"):
        print(summary.plots["message"])
    elif summary.plots:
        print("model plots: " + ", ".join(v for k, v in summary.plots.items() if k != "message" and v))
    if summary.stopped_early:
        print(f"stopped early: {summary.stopped_early}")
    if summary.guards:
        _print_guards(summary.guards)
    if summary.report:
        print(f"report: {summary.report}")
    print(f"mlflow: {summary.tracking_uri}  (hpo ui {summary.run_dir})")


def _print_front(summary: "StudySummary") -> None:
    """Several objectives or constraints: the Pareto front on select (the chosen trial marked) and the count of
    infeasible trials."""
    names = [o["metric"] for o in summary.objectives or []]
    print(f"Pareto front ({len(summary.pareto_front or [])} feasible non-dominated trials on select; "
          f"{summary.n_infeasible} complete trial(s) infeasible):")
    if summary.best_trial is None:
        print("  no feasible trial: nothing chosen, no ensemble")
    for p in summary.pareto_front or []:
        mark = "*" if p["number"] == summary.best_trial else " "
        audit = ", ".join(f"audit_{k}={fmt(v)}" for k, v in p["audit"].items())
        print(f" {mark} trial {p['number']}: " + ", ".join(f"{n}={fmt(p['select'][n])}" for n in names)
              + (f"  ({audit})" if audit else ""))


def _print_ensembles(summary: "StudySummary") -> None:
    """The seed refit of the best configuration, the end-of-study ensemble and the reselection, where run."""
    if summary.seed_refit:
        sr = summary.seed_refit
        if "skipped" in sr:
            print(f"seed refit skipped: {sr['skipped']}")
        else:
            t = sr["select"]
            print(f"seed refit of the best configuration, {sr['members']} seeds packed in one model "
                  f"({sr['wall_s']:.1f}s): select member median {t['member_accuracy_median']:.4f}, "
                  f"logit average {t['logit_average_accuracy']:.4f}; its members are ensemble candidates "
                  "(trial@rK)")
    if summary.ensemble:
        e = summary.ensemble
        test = {k[5:]: v for k, v in e["metrics"].items() if k.startswith("test_")}
        print(f"ensemble of {len(e['members'])} members (trial, weight): "
              + ", ".join(f"({t}, {w:.2f})" for t, w in e["members"]))
        if e.get("best_single_alone"):
            print(f"  the best single trial ({e.get('best_single_trial')}) is kept alone: no other candidate improved it "
                  "on select beyond select's noise (ensemble.confidence)")
        sel = {k[7:]: v for k, v in e["metrics"].items() if k.startswith("select_")}
        print("  select: " + ", ".join(f"{k}={fmt(v)}" for k, v in sel.items()))
        print("  test: " + ", ".join(f"{k}={fmt(v)}" for k, v in test.items()))
        print(f"  artifact: {e['artifact_dir']}  mlflow model: {e['model_uri']}")
    if summary.reselection:
        r = summary.reselection
        print(f"reselection ({r['seeds_per_config']} seeds per configuration): chose trial {r['chosen']} "
              f"(mean select {r['by_trial'][r['chosen']]['select_mean']:.4f}); by a single select score: "
              f"trial {summary.best_trial_by_select}")


def _print_guards(g: dict) -> None:
    """The overfitting guards' verdict (a warning on stderr when the search overfits its select half)."""
    print(g["verdict"])
    if g.get("overtuning") is not None:
        print(f"  overtuning (final incumbent's audit minus the best earlier incumbent's): {g['overtuning']:+.4f}")
    if g["overfit"]:
        print("WARNING: the search overfits its select half; trust audit and test, not select "
              "(tag hpo.guard.overfit=true on the parent run)", file=sys.stderr)
    print(f"  locked test split used {g['test_uses']} time(s)")
    r = g.get("restore_best_epoch")
    if r:
        print(f"  restoring the best select epoch ({r['best_select_epoch']} of {r['last_epoch']}) would have "
              f"changed audit by {r['audit_change_if_restored']:+.4f}")
