"""The GPU suite (experiments/gpu_suite.sh) end to end at toy sizes on the CPU, the isolation it relies on, and
benchmarks that write what they measured before a later part can lose it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments._isolated import alternating, run_variant
from experiments.executor_bench import executor_for
from tests.conftest import ROOT

ENV_KEYS = {"card", "keras_backend", "xla_flags", "jax_compilation_cache_dir", "jax_default_matmul_precision",
            "jax_device_kind", "jax_cache_entries_before", "jax_cache_entries_after"}


@pytest.mark.slow
def test_smoke_suite_under_jax_writes_every_variant_as_a_line_with_its_environment(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_cpu_enable_fast_math=false",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run(["bash", "experiments/gpu_suite.sh", str(tmp_path), "--smoke"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    [path] = tmp_path.glob("gpu_suite_cpu_smoke_*.jsonl")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["part"], r.get("variant")) for r in lines] == [
        ("header", None), ("mnist50", "packed x3"),
        ("search16", "inprocess"), ("search16", "packed x2"), ("search16", "processes x2 packed x2"),
        ("targets", None)]
    caches = set()
    for r in lines[1:-1]:
        assert r["rc"] == 0 and not r["timed_out"] and r["complete"], r
        e = r["environment"]
        assert ENV_KEYS <= set(e), e
        assert e["keras_backend"] == "jax" and e["jax_device_kind"] == "cpu" and e["card"]
        assert e["xla_flags"] == "--xla_cpu_enable_fast_math=false"
        assert "jax_default_matmul_precision" in e
        assert e["jax_compilation_cache_dir"].startswith(("/tmp", "/var")) and e["jax_cache_entries_before"] in (None, 0)
        caches.add(e["jax_compilation_cache_dir"])
    assert len(caches) == 4, "every variant had a cold compilation cache of its own"
    mnist = lines[1]
    assert mnist["members"] == 3 and 0 <= mnist["median_test_accuracy"] <= 1 and mnist["wall_s"] > 0
    assert "logit_average_test_accuracy" in mnist
    for r in lines[2:5]:
        assert r["trials"] == r["n_complete"] == 4 and r["distinct_configurations"] == 4, r
        assert r["trials_per_hour"] > 0
    assert lines[4]["worker_startup_s"] is not None, "the workers-and-packs variant ran on worker processes"
    targets = lines[-1]
    assert targets["smoke"] and targets["mnist50_verdict"] == targets["search16_verdict"] == "not measured (smoke)"
    assert set(targets["search16_trials_per_hour"]) == {"inprocess", "packed x2", "processes x2 packed x2"}


def test_a_variant_stopped_at_its_limit_keeps_what_it_wrote(tmp_path: Path) -> None:
    script = ("import sys, time\n"
              "from experiments._isolated import write_record\n"
              "write_record(sys.argv[1], {'trials': 3, 'complete': False})\n"
              "time.sleep(600)\n")
    record = tmp_path / "r.json"
    rec = run_variant(["-c", script, str(record)], record, timeout_s=8,
                      env={"PYTHONPATH": str(ROOT)})
    assert rec["timed_out"] and rec["trials"] == 3 and rec["complete"] is False
    assert rec["process_wall_s"] < 60


def test_variants_alternate_their_order_between_repetitions() -> None:
    assert list(alternating(["a", "b", "c"], 3)) == [(0, "a"), (0, "b"), (0, "c"), (1, "c"), (1, "b"), (1, "a"),
                                                      (2, "a"), (2, "b"), (2, "c")]


def test_executor_bench_rows_name_their_executor() -> None:
    assert executor_for("inprocess", [], 2) == {"mode": "inprocess"}
    assert executor_for("packed x8", [], 2) == {"mode": "inprocess", "pack": 8}
    assert executor_for("processes x2 packed x4", [0], 16) == {"mode": "processes", "workers_per_gpu": 2,
                                                               "recycle_after": None, "pack": 4}
    assert executor_for("processes x2", [], 4)["cpu_workers"] == 2



def test_packed_benchmark_keeps_its_first_part_when_a_later_one_fails(tmp_path: Path) -> None:
    env = {**os.environ, "HPO_MNIST_PATH": str(tmp_path / "missing.npz"),
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, "-m", "experiments.packed", "--members", "2", "--epochs", "1",
                          "--mnist-members", "2", "--mnist-epochs", "1", "--out", str(tmp_path)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode != 0 and "MNIST file not found" in out.stderr, out.stderr[-2000:]
    result = json.loads((tmp_path / "packed_cpu.json").read_text())
    assert result["sequential_vs_packed"]["members"] == 2 and "mnist_packed" not in result
    assert {"card", "xla_flags", "jax_compilation_cache_dir", "jax_default_matmul_precision"} <= set(result["environment"])
