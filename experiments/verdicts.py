"""Verdicts on the overhead benchmark's targets, from per-trial paired estimates and their 95% intervals.

A whole run of a variant is one sample of the machine's load; each trial paired with the bare loop's same
configuration in the same repetition is one more (n−1 per repetition: the first trial carries the study's
setup, which is added back separately). A target is

- **met** when the 95% interval of the median paired ratio lies entirely under it,
- **not met** when the interval lies entirely over it,
- **undecided** when the interval spans it (the machine's noise is larger than the distance to the target),
  or when the results file lacks the per-trial data (written before it was recorded: "undecided: rerun").

Both the benchmark (:mod:`experiments.bench`, stored in the results file) and the page
(:mod:`experiments.render`, for files written before) compute them here, so they cannot disagree.
"""

from __future__ import annotations

import statistics
from typing import Any, Mapping, Sequence

TARGET = 0.05  # run_study at most 5% over the bare loop

# Variant names in results files written before the variants were named for what they run.
OLD_NAMES = {"bare": "bare_loop", "runner_lean": "run_trial_no_audit_no_save", "runner": "run_trial",
             "study": "run_study_no_extras", "study_cold": "run_study_no_extras_first_in_process",
             "study_thread": "run_study_no_extras_thread_writes", "kerastuner": "kerastuner_replay"}
BARE = "bare_loop"
PAIRED = ("run_trial_no_audit_no_save", "run_trial", "run_study_no_extras", "run_study_no_extras_first_in_process",
          "run_study_no_extras_thread_writes", "run_study_defaults")
STUDIES = ("run_study_no_extras", "run_study_no_extras_first_in_process", "run_study_no_extras_thread_writes",
           "run_study_defaults")


def median_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free interval for the median: order statistics k and n+1-k, k the largest with
    P(Binomial(n, 1/2) < k) <= (1 - level) / 2 (what the sign test inverts). None for too few values."""
    from scipy.stats import binom

    xs = sorted(values)
    n = len(xs)
    k = 0
    while k + 1 <= n // 2 and binom.cdf(k, n, 0.5) <= (1 - level) / 2:
        k += 1
    if k == 0:
        return None
    return xs[k - 1], xs[n - k]


def decide(ci: Sequence[float] | None, target: float) -> str:
    """``met`` (interval entirely under ``target``), ``not met`` (entirely over), else ``undecided``."""
    if not ci:
        return "undecided"
    if ci[1] < target:
        return "met"
    if ci[0] > target:
        return "not met"
    return "undecided"


def renamed(point: Mapping[str, Any]) -> dict[str, Any]:
    """``point`` with the variant names of older results files replaced by today's."""
    def fix(d: Any) -> Any:
        return {OLD_NAMES.get(k, k): v for k, v in d.items()} if isinstance(d, Mapping) else d

    out = dict(point)
    for key in ("median_wall_s", "overhead_ratio", "cpu_overhead_ratio", "trial_ratio", "hashes_by_variant",
                "cpu_trial_ratio"):
        if key in out:
            out[key] = fix(out[key])
    if "repetitions" in out:
        out["repetitions"] = [fix(rep) | {"order": [OLD_NAMES.get(v, v) for v in rep.get("order", [])]}
                              for rep in out["repetitions"]]
    return out


def paired(reps: Sequence[Mapping[str, Any]], variant: str, key: str = "cycle_s",
           bare_key: str = "per_trial_s") -> list[float]:
    """Trial i's ``key`` of ``variant`` over the bare loop's ``bare_key`` of the same configuration in the same
    repetition, minus one, for trials 1..n-1 of every repetition; empty when a repetition lacks the data."""
    out: list[float] = []
    for rep in reps:
        v, b = rep.get(variant) or {}, rep.get(BARE) or {}
        if not v.get(key) or not b.get(bare_key):
            return []
        out += [v[key][i] / b[bare_key][i] - 1 for i in range(1, len(b[bare_key]))]
    return out


def estimate(values: Sequence[float], shift: float = 0.0) -> dict[str, Any]:
    """Median, quartiles and the median's 95% interval of ``values`` (each plus ``shift``)."""
    xs = [x + shift for x in values]
    if not xs:
        return {"median": None, "n": 0, "median_ci95": None, "quartiles": [None] * 3}
    ci = median_interval(xs)
    return {"median": statistics.median(xs), "n": len(xs), "median_ci95": list(ci) if ci else None,
            "quartiles": statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3}


def once_share(point: Mapping[str, Any], variant: str) -> float | None:
    """The study's setup and end (median over repetitions) as a fraction of the bare loop's time for all trials."""
    reps = point["repetitions"]
    if not all("setup_s" in rep.get(variant, {}) for rep in reps):
        return None
    once = statistics.median([rep[variant]["setup_s"] + rep[variant]["end_s"] for rep in reps])
    n = len(reps[0][BARE]["per_trial_s"])
    return once / sum(statistics.median([rep[BARE]["per_trial_s"][i] for rep in reps]) for i in range(n))


def _verdict(what: str, values: Sequence[float], target: float, *, shift: float = 0.0,
             source: str) -> dict[str, Any]:
    if not values:
        return {"target": what, "threshold": target, "verdict": "undecided: rerun", "source": source,
                "estimate": None, "ci95": None, "n": 0}
    e = estimate(values, shift)
    return {"target": what, "threshold": target, "verdict": decide(e["median_ci95"], target), "source": source,
            "estimate": e["median"], "ci95": e["median_ci95"], "n": e["n"]}


def overhead_verdicts(point: Mapping[str, Any], target: float = TARGET) -> dict[str, dict[str, Any]]:
    """Every target of one point of the overhead benchmark (today's variant names), met / not met / undecided."""
    reps = point["repetitions"]
    out: dict[str, dict[str, Any]] = {}
    labels = {"run_study_no_extras": "`run_study` (ensemble, guards, plots, report off)",
              "run_study_defaults": "`run_study` with default settings",
              "run_study_no_extras_first_in_process": "`run_study` (extras off) as the first study of a process"}
    per = "per trial (paired with the bare loop's same configuration)"
    whole = "whole study (per-trial pairs plus the setup and end, spread over the trials)"
    for v, label in labels.items():
        if not any(v in rep for rep in reps):
            continue
        pairs = paired(reps, v)
        if v != "run_study_no_extras_first_in_process":
            out[f"{v}/wall_per_trial"] = _verdict(f"{label}, wall time {per}: at most {target:.0%} over the bare loop",
                                                  pairs, target, source="cycle_s / bare per_trial_s")
        share = once_share(point, v)
        out[f"{v}/wall_whole_study"] = _verdict(
            f"{label}, wall time of the {whole}: at most {target:.0%} over the bare loop",
            pairs if share is not None else [], target, shift=share or 0.0,
            source="cycle_s / bare per_trial_s + (setup_s + end_s) / bare total")
        if v == "run_study_no_extras":
            out[f"{v}/cpu_per_trial"] = _verdict(
                f"{label}, CPU time of the process tree (MLflow writer process included) {per}: at most "
                f"{target:.0%} over the bare loop", paired(reps, v, "cpu_cycle_s", "cpu_per_trial_s"), target,
                source="cpu_cycle_s / bare cpu_per_trial_s")
            # below KerasTuner: (ours - KerasTuner's) per trial, over the bare loop's same trial, under zero
            diff = [o - k for o, k in zip(pairs, paired(reps, "kerastuner_replay"))] \
                if paired(reps, "kerastuner_replay") else []
            out[f"{v}/below_kerastuner"] = _verdict(
                f"{label}, wall time {per}: below KerasTuner's replaying the same configurations (difference of the "
                "two overheads under zero)", diff, 0.0, source="(ours − KerasTuner's cycle_s) / bare per_trial_s")
    return out
