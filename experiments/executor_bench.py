"""Trials per hour in this process, on one worker process, on K worker processes, and packed (issue #5, benchmark a).

    python -m experiments.executor_bench [--trials 16] [--workers 1 2] [--packs 8] [--worker-packs K:P ...]
                                         [--epochs 3] [--repeats 1] [--out experiments/results]

The same small search (digits, ``mlp`` with 1-2 layers of 16-64 units and no batch normalization, a few
epochs, Optuna's random sampler with a fixed seed, so every configuration runs the same trials) is run
once per row, each row in a fresh process of its own (so no row inherits another's compiled functions or warm
caches), the rows alternating their order from one repetition (``--repeats``) to the next:

- ``inprocess``: trials in the study's own process (``executor.mode: inprocess``);
- ``processes xK`` for each K in ``--workers``: ``executor.mode: processes`` with K workers. On a
  machine without a GPU that is ``cpu_workers: K`` and ``threads_per_worker: cores // K``; where
  ``nvidia-smi`` shows GPUs (e.g. ``KERAS_BACKEND=jax`` on a GPU machine), ``executor.gpus`` is left
  to auto-detect and ``workers_per_gpu: K``;
- ``packed xP`` for each P in ``--packs``: in this process with ``executor.pack: P``: each batch of P
  trials shares the first one's architecture (Optuna's partial enqueue) and trains as one packed model.
  Its configurations are not the unpacked rows' (members share layers and units), so the row also
  reports the best select accuracy found;
- ``processes xK packed xP`` for each ``K:P`` in ``--worker-packs``: K worker processes, each training packs of
  up to P trials.

Reported per configuration: wall time of the search loop (from the study's start to the last trial's
end; summary, ensemble, guards and report are off), trials per hour, the ratio to ``inprocess``,
the mean trial duration, and the worker start-up cost (from the pool's start until its workers say
they are ready, having loaded the study's data and builder). Writes
``<out>/executor_<device>.json`` with device ``cpu`` or the GPU's short name (``h100``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable


def _config(run_dir: Path, name: str, n_trials: int, epochs: int, executor: dict[str, Any]) -> Any:
    from hpo.config import from_dict

    return from_dict({
        "study": {"name": name, "seed": 0, "n_trials": n_trials, "run_dir": str(run_dir)},
        "driver": {"name": "optuna", "sampler": "random"},
        "data": {"dataset": "digits"},
        "space": {"builder": "mlp", "params": {"layers": {"min": 1, "max": 2}, "batchnorm": {"fixed": False},
                                               "units": {"min": 16, "max": 64, "log": True}}},
        "training": {"epochs": epochs, "batch_size": 64},
        "ensemble": {"enabled": False},
        "guards": {"enabled": False},
        "plots": {"enabled": False},
        "report": {"enabled": False},
        "executor": executor,
    })


def executor_for(label: str, gpus: list[int], cores: int) -> dict[str, Any]:
    """The ``executor`` section of a row: ``inprocess``, ``processes xK``, ``packed xP`` or ``processes xK packed xP``."""
    words = label.split()
    k = int(words[words.index("processes") + 1][1:]) if "processes" in words else None
    p = int(words[words.index("packed") + 1][1:]) if "packed" in words else 1
    if k is None:
        ex: dict[str, Any] = {"mode": "inprocess"}
    elif gpus:
        ex = {"mode": "processes", "workers_per_gpu": k, "recycle_after": None}
    else:
        ex = {"mode": "processes", "gpus": [], "cpu_workers": k, "threads_per_worker": max(1, cores // k),
              "recycle_after": None}
    return ex | ({"pack": p} if p > 1 else {})


def run_one(label: str, work: Path, n_trials: int, epochs: int, executor: dict[str, Any],
            on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """One row: the search under ``executor``; ``on_progress`` gets the row so far after every trial."""
    from hpo.study import run_study

    ends: list[float] = []
    durations: list[float] = []
    configs: set[str] = set()
    startup: dict[str, float] = {}
    t_start = time.monotonic()

    def row(summary: Any = None) -> dict[str, Any]:
        loop_s = ends[-1] - t_start if ends else float("nan")
        return {
            "label": label, "executor": executor, "trials": len(ends), "complete": summary is not None,
            "n_complete": summary.n_complete if summary is not None else None,
            "n_failed": summary.n_failed if summary is not None else None,
            "distinct_configurations": len(configs), "wall_s": round(loop_s, 2),
            "trials_per_hour": round(3600 * len(ends) / loop_s, 1) if ends else None,
            "mean_trial_s": round(statistics.mean(durations), 2) if durations else None,
            "worker_startup_s": round(startup["seconds"], 1) if startup else None,
            "best_select": summary.best_select if summary is not None else None,
        }

    def on_end(result: Any, progress: Any) -> None:
        ends.append(time.monotonic())
        durations.append(result.duration_s)
        configs.add(json.dumps(result.params, sort_keys=True, default=str))
        if on_progress is not None:
            on_progress(row())

    def on_pool(pool: Any) -> None:
        # run_study calls this right after pool.start(): wait here (nothing is asked yet) until every worker
        # has loaded the study, so the start-up cost is measured on its own.
        t0 = time.monotonic()
        while len(pool.idle()) < len(pool.slots):
            pool.poll(timeout=0.2)
        startup["seconds"] = time.monotonic() - t0
        startup["since_study_start_s"] = time.monotonic() - t_start

    name = label.replace(" ", "-")
    summary = run_study(_config(work / name, name, n_trials, epochs, executor), on_trial_end=on_end,
                        on_pool=on_pool if executor.get("mode") != "inprocess" else None)
    return row(summary)


def run_row(args: argparse.Namespace) -> int:
    """This process runs one row and writes it to ``--record`` (after every trial, and complete at the end)."""
    from experiments._isolated import cache_entries, environment, write_record
    from hpo.execution.pool import visible_gpus

    before = cache_entries()
    ex = executor_for(args.row, visible_gpus(), os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="executor_bench-") as tmp:
        row = run_one(args.row, Path(tmp), args.trials, args.epochs, ex,
                      on_progress=lambda r: write_record(args.record, r | {"environment": environment(
                          cache_entries_before=before)}))
    write_record(args.record, row | {"environment": environment(cache_entries_before=before)})
    return 0


def labels(args: argparse.Namespace) -> list[str]:
    """The rows to run: in-process, each worker count, each in-process pack size, each ``K:P`` workers-and-packs."""
    out = ["inprocess", *(f"processes x{k}" for k in args.workers), *(f"packed x{p}" for p in args.packs)]
    for kp in args.worker_packs:
        k, p = kp.split(":")
        out.append(f"processes x{int(k)} packed x{int(p)}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--packs", type=int, nargs="*", default=[8], help="executor.pack sizes to run in this process")
    ap.add_argument("--worker-packs", nargs="*", default=[], metavar="K:P",
                    help="K worker processes, each training packs of up to P trials")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=1, help="run every row this many times, alternating the order")
    ap.add_argument("--row-timeout-s", type=float, default=1800.0)
    ap.add_argument("--out", default="experiments/results")
    ap.add_argument("--row", help=argparse.SUPPRESS)  # internal: run this one row here
    ap.add_argument("--record", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if args.row:
        return run_row(args)
    from experiments._common import device_tag, header, write_result
    from experiments._isolated import alternating, run_variant
    from hpo.execution.pool import visible_gpus

    gpus = visible_gpus()
    device = "gpu" if gpus else "cpu"
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory(prefix="executor_bench-rows-") as tmp:
        for rep, label in alternating(labels(args), args.repeats):
            record = Path(tmp) / "row.json"
            rows.append({"rep": rep} | run_variant(
                ["-m", "experiments.executor_bench", "--row", label, "--trials", str(args.trials),
                 "--epochs", str(args.epochs), "--record", str(record)], record, args.row_timeout_s))
            print({k: v for k, v in rows[-1].items() if k != "environment"}, flush=True)
    rate = {lab: round(statistics.median(r["trials_per_hour"] for r in rows if r.get("label") == lab and r.get("trials_per_hour")), 1)
            for lab in labels(args) if any(r.get("label") == lab and r.get("trials_per_hour") for r in rows)}
    for r in rows:
        if r.get("trials_per_hour") and rate.get("inprocess"):
            r["ratio_vs_inprocess"] = round(r["trials_per_hour"] / rate["inprocess"], 2)
        if r.get("trials_per_hour") and rate.get("processes x1"):
            r["ratio_vs_one_worker"] = round(r["trials_per_hour"] / rate["processes x1"], 2)
    import keras

    out = {**header("experiments.executor_bench", argv), "device": device, "gpus": gpus, "cores": cores,
           "backend": keras.backend.backend(), "trials": args.trials, "epochs": args.epochs,
           "note": ("every row ran in a fresh process of its own, rows alternating their order between repetitions; "
                    "wall_s runs from the study's start to the last trial's end and includes the workers' start-up; "
                    "the machine may be shared with other work (timings on it are noisy)"),
           "median_trials_per_hour": rate, "runs": rows}
    path = write_result(args.out, f"executor_{device_tag() if gpus else 'cpu'}", out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
