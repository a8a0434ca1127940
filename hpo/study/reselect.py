"""Reselection (``guards.reselect_top_k``): retrain the top configurations with new seeds and choose by the
mean select score (SMAC's intensification), so one lucky seed does not make the incumbent."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import numpy as np

from hpo.execution.trial import run_trial
from hpo.repro import trial_seed
from hpo.results import TrialState, result_dict, write_json
from hpo.study.context import StudyRun


def reselect(run: StudyRun) -> dict[str, Any] | None:
    """Retrain the top-k configurations with new seeds and choose by the mean select score."""
    cfg = run.cfg
    complete = sorted((r for r in run.results.values() if r["state"] == "COMPLETE"), key=lambda r: -run.sign * r["value"])
    top = complete[: cfg.guards.reselect_top_k]
    if not top:
        return None
    audit_key = f"audit_{cfg.objective.metric}"
    table: dict[int, dict[str, Any]] = {}
    for r in top:
        sel, aud = [r["value"]], [r["metrics"].get(audit_key)]
        for j in range(1, cfg.guards.reselect_seeds + 1):
            rr = _retrain(run, r, j)
            if rr["state"] == "COMPLETE":
                sel.append(rr["value"])
                aud.append(rr["metrics"].get(audit_key))
        table[r["number"]] = {"select_values": sel, "audit_values": aud, "select_mean": float(np.mean(sel)),
                              "audit_mean": float(np.mean([a for a in aud if a is not None]))}
    chosen = max(table, key=lambda n: run.sign * table[n]["select_mean"])
    return {"chosen": chosen, "by_trial": table, "seeds_per_config": 1 + cfg.guards.reselect_seeds}


def _retrain(run: StudyRun, r: dict[str, Any], j: int) -> dict[str, Any]:
    """Trial ``r``'s configuration with its ``j``-th new seed (read back when a resumed study already ran it)."""
    d = run.run_dir / "reselect" / f"{r['number']:05d}-{j}"
    if (d / "result.json").exists():
        return json.loads((d / "result.json").read_text())
    seed = trial_seed(run.cfg.study.seed + 7919 * j, r["number"])
    tracker = run.tracker
    run_id = tracker.start_trial(r["number"], r["params"], tags={
        "hpo.kind": "reselect", "hpo.seed": seed, "hpo.reselect_of": r["number"]})
    res = run_trial(number=r["number"], params=r["params"], seed=seed, build=run.build, space=run.space,
                    splits=run.splits, settings=replace(run.settings, save_models=False), trial_dir=d,
                    listener=lambda e, logs: tracker.log_epoch(run_id, e, logs))
    d.mkdir(parents=True, exist_ok=True)
    rr = result_dict(res)
    write_json(d / "result.json", rr)
    tracker.end_trial(run_id, res.metrics, {"hpo.state": res.state.value}, failed=res.state is TrialState.FAILED)
    return rr
