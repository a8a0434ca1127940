"""Benchmark verdicts: met / not met / undecided from the per-trial paired estimate's 95% interval, CPU time that
counts child processes, and old results files rendered without a verdict their data cannot support."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from experiments.verdicts import decide, median_interval, overhead_verdicts, renamed

ROOT = Path(__file__).resolve().parent.parent


def test_decide_reads_the_interval_against_the_target() -> None:
    assert decide([0.01, 0.04], 0.05) == "met"
    assert decide([0.06, 0.20], 0.05) == "not met"
    assert decide([-0.02, 0.10], 0.05) == "undecided"  # a median under 5% decides nothing while the interval spans it
    assert decide(None, 0.05) == "undecided"


def _point(study_ratio: float, n_reps: int = 3, n: int = 10) -> dict:
    """A point whose study trials take ``1 + study_ratio`` times the bare loop's, with a little spread."""
    reps = []
    for r in range(n_reps):
        bare = [1.0 + 0.01 * ((i + r) % 3) for i in range(n)]
        cyc = [None] + [b * (1 + study_ratio + 0.002 * ((i * 7 + r) % 5 - 2)) for i, b in enumerate(bare) if i]
        reps.append({"order": [], "bare_loop": {"per_trial_s": bare},
                     "run_study_no_extras": {"cycle_s": cyc, "setup_s": 0.0, "end_s": 0.0}})
    return {"repetitions": reps}


def test_verdicts_follow_the_per_trial_pairs() -> None:
    assert overhead_verdicts(_point(0.01))["run_study_no_extras/wall_per_trial"]["verdict"] == "met"
    assert overhead_verdicts(_point(0.10))["run_study_no_extras/wall_per_trial"]["verdict"] == "not met"
    v = overhead_verdicts(_point(0.10))
    # no per-trial CPU or KerasTuner data in this point: no verdict claimed from them
    assert v["run_study_no_extras/cpu_per_trial"]["verdict"] == "undecided: rerun"
    assert v["run_study_no_extras/below_kerastuner"]["verdict"] == "undecided: rerun"
    assert median_interval([0.1, 0.2]) is None  # two pairs give no 95% interval


def test_an_old_results_file_gets_verdicts_from_its_stored_pairs() -> None:
    """The 2026-12-02 run said "within 5%: yes" from whole-run medians while its per-trial intervals spanned 5%."""
    p = json.loads((ROOT / "tests" / "data" / "bench_overhead_2026-12-02_point1.json").read_text())
    assert p["ours_within_5pct"] is True  # what the page said then, from the median of three whole runs
    v = overhead_verdicts(renamed(p))
    w = v["run_study_no_extras/wall_per_trial"]
    assert w["ci95"] == p["trial_ratio"]["study"]["median_ci95"] and w["verdict"] == "undecided"
    assert v["run_study_no_extras/cpu_per_trial"]["verdict"] == "undecided: rerun"  # process_time() only, then


def test_cpu_time_of_the_process_tree_counts_a_running_child() -> None:
    from experiments._common import tree_cpu_s

    c0, p0 = tree_cpu_s(), time.process_time()
    child = subprocess.Popen([sys.executable, "-c", "import time\nt=time.process_time()\n"
                              "while time.process_time() - t < 0.6: pass\nprint('done', flush=True)\ninput()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "done"
        live = tree_cpu_s() - c0  # the child still runs: resource.getrusage(RUSAGE_CHILDREN) would not see it yet
        assert live >= 0.5, live
        assert time.process_time() - p0 < 0.3  # what the benchmark counted before: this process only
    finally:
        child.communicate("\n", timeout=30)
    assert tree_cpu_s() - c0 >= 0.5  # reaped: still counted, once
    assert tree_cpu_s() - c0 < live + 0.4
