"""The benchmark suite end to end on a tiny budget, its rerun comparison, and the RESULTS.md renderer."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_tiny_budget_and_render(tmp_path: Path) -> None:
    from experiments import bench
    from experiments.render import pct

    out = tmp_path / "results"
    out.mkdir()
    for p in (ROOT / "experiments" / "results").glob("*.json"):
        if not p.name.endswith(".previous.json") and not p.name.startswith("bench_"):
            shutil.copy(p, out)  # the renderer must show every existing results file too
    other = {"command": "python -m experiments.other_script --x 1", "date": "2026-01-01",
             "machine": {"cpu": "test cpu", "cpu_count": 2, "gpu": None}, "versions": {"keras": "3"},
             "speedup": 3.25, "rows": [{"members": 8, "seconds": 12.5}, {"members": 16, "seconds": 21.75}]}
    (out / "packed_demo.json").write_text(json.dumps(other))

    # One of our drivers and one of KerasTuner's own tuners, 2 trials of 1 epoch, 1 seed.
    assert bench.main(["quality", "--tools", "optuna_tpe", "kt_random", "--trials", "2", "--epochs", "1",
                       "--seeds", "1", "--out", str(out), "--runs", str(tmp_path / "runs")]) == 0
    q = json.loads((out / "bench_quality.json").read_text())
    assert [r["tool"] for r in q["runs"]] == ["optuna_tpe", "kt_random"]
    assert all(r["n_trials"] == 2 and r["epochs_trained"] == 2 and r["test"]["accuracy"] > 0.5 for r in q["runs"]), \
        [r["test"] for r in q["runs"]]  # a trained digits model after 1 epoch, not chance (0.1)
    assert q["machine"]["cpu_count"] and q["versions"]["keras-tuner"] and len(q["hashes"]) == 2
    e = json.loads((out / "bench_ensemble.json").read_text())
    assert e["studies"][0]["tool"] == "optuna_tpe" and "greedy" in e["studies"][0]

    # The overhead benchmark on 3 configurations of 1 epoch, once after an untimed warm-up of every variant (the
    # GPU default): every variant, and the trial-by-trial pairs.
    assert bench.main(["overhead", "--overhead", "3:1:1", "--warmup-reps", "1", "--out", str(out),
                       "--runs", str(tmp_path / "runs")]) == 0
    o = json.loads((out / "bench_overhead.json").read_text())["points"][0]
    assert o["warmup_reps"] == 1 and len(o["repetitions"]) == 1
    warm = tmp_path / "runs" / "digits" / "overhead" / "p0"
    assert (warm / "study-r-1").is_dir() and (warm / "kt-r-1").is_dir() and (warm / "study-r0").is_dir()
    assert o["same_configs_everywhere"] and set(o["median_wall_s"]) == {
        "bare_loop", "run_trial_no_audit_no_save", "run_trial", "run_study_no_extras", "run_study_defaults",
        "run_study_no_extras_first_in_process", "run_study_no_extras_thread_writes", "kerastuner_replay"}
    paired = ("run_trial_no_audit_no_save", "run_trial", "run_study_no_extras", "run_study_no_extras_first_in_process",
              "run_study_no_extras_thread_writes", "run_study_defaults")
    assert {v: t["n"] for v, t in o["trial_ratio"].items()} == {v: 2 for v in paired}
    assert {v: t["n"] for v, t in o["cpu_trial_ratio"].items()} == {v: 2 for v in paired}
    assert (warm / "thread-r0").is_dir() and "HPO_MLFLOW_WRITER" not in os.environ  # the thread variant restores it
    # the default-settings variant runs what a user who sets nothing gets: the ensemble and the report at the end
    defaults = warm / "defaults-r0"
    assert (defaults / "report.html").exists() and not (warm / "study-r0" / "report.html").exists()
    assert o["defaults_end_s"] > o["breakdown"]["study_end_s"]
    study = o["repetitions"][0]["run_study_no_extras"]
    assert len(study["cycle_s"]) == 3 and all(c > 0 for c in study["cycle_s"][1:])
    assert all(c > 0 for c in study["cpu_cycle_s"][1:]) and study["cpu_s"] > 0
    assert len(o["repetitions"][0]["kerastuner_replay"]["cycle_s"]) == 3
    assert o["study_estimate"] >= o["trial_ratio"]["run_study_no_extras"]["median"]  # plus setup and end
    # two pairs give no 95% interval: every verdict is undecided, none "met" from a median of whole runs
    assert {v["verdict"] for v in o["verdicts"].values()} == {"undecided"}, o["verdicts"]

    md = (out / "RESULTS.md").read_text()
    assert "Untimed warm-up repetitions of every variant before them: 1." in md
    assert "within 5%: yes" not in md and "**undecided**" in md
    assert pct(o["study_estimate"], 1) in md
    for p in out.glob("*.json"):
        assert json.loads(p.read_text())["command"].strip() in md, p.name
    for r in q["runs"]:
        assert pct(r["test"]["accuracy"]) in md and r["configs_hash"] in md
    assert "3.25" in md and "21.75" in md  # a results file the renderer has no special table for
    if (out / "mnist_validation_noise.json").exists():
        assert f"{json.loads((out / 'mnist_validation_noise.json').read_text())['wall_s']:.1f} s" in md

    # A rerun keeps the previous file and records how far the numbers moved.
    first = {"command": "c", "settings": {"a": 1}, "hashes": {"s": "h1"}, "numbers": {"s": {"test_accuracy": 0.5, "wall_s": 10.0}}}
    second = {"command": "c", "settings": {"a": 1}, "hashes": {"s": "h1"}, "numbers": {"s": {"test_accuracy": 0.75, "wall_s": 12.0}}}
    bench.write_with_rerun(tmp_path / "rr", "bench_x", first)
    bench.write_with_rerun(tmp_path / "rr", "bench_x", second)
    rerun = json.loads((tmp_path / "rr" / "bench_x.json").read_text())["rerun"]
    assert (tmp_path / "rr" / "bench_x.previous.json").exists()
    assert rerun["configs_identical"] == 1 and rerun["max_abs_change_scores"] == 0.25
    assert abs(rerun["max_relative_change_times"] - 0.2) < 1e-9
