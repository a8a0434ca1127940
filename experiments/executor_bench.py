"""Trials per hour in this process, on one worker process, on K worker processes, and packed (issue #5, benchmark a).

    python -m experiments.executor_bench [--trials 16] [--workers 1 2] [--packs 8] [--epochs 3] [--out experiments/results]

The same small search (digits, ``mlp`` with 1-2 layers of 16-64 units and no batch normalization, a few
epochs, Optuna's random sampler with a fixed seed, so every configuration runs the same trials) is run,
one after the other in one process run:

- ``inprocess``: trials in the study's own process (``executor.mode: inprocess``);
- ``processes xK`` for each K in ``--workers``: ``executor.mode: processes`` with K workers. On a
  machine without a GPU that is ``cpu_workers: K`` and ``threads_per_worker: cores // K``; where
  ``nvidia-smi`` shows GPUs (e.g. ``KERAS_BACKEND=jax`` on a GPU machine), ``executor.gpus`` is left
  to auto-detect and ``workers_per_gpu: K``;
- ``packed xP`` for each P in ``--packs``: in this process with ``executor.pack: P``: each batch of P
  trials shares the first one's architecture (Optuna's partial enqueue) and trains as one packed model.
  Its configurations are not the unpacked rows' (members share layers and units), so the row also
  reports the best select accuracy found.

Reported per configuration: wall time of the search loop (from the study's start to the last trial's
end; summary, ensemble, guards and report are off), trials per hour, the ratio to ``inprocess``,
the mean trial duration, and the worker start-up cost (from the pool's start until its workers say
they are ready, having loaded the study's data and builder). Writes
``<out>/executor_<device>.json`` with device ``cpu`` or the GPU's short name (``h100``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


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


def run_one(label: str, work: Path, n_trials: int, epochs: int, executor: dict[str, Any]) -> dict[str, Any]:
    from hpo.study import run_study

    ends: list[float] = []
    durations: list[float] = []
    startup: dict[str, float] = {}
    t_start = time.monotonic()

    def on_end(result: Any, progress: Any) -> None:
        ends.append(time.monotonic())
        durations.append(result.duration_s)

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
    loop_s = ends[-1] - t_start if ends else float("nan")
    return {
        "label": label, "executor": executor, "trials": len(ends), "n_complete": summary.n_complete,
        "n_failed": summary.n_failed, "wall_s": round(loop_s, 1), "trials_per_hour": round(3600 * len(ends) / loop_s, 1),
        "mean_trial_s": round(statistics.mean(durations), 2) if durations else None,
        "worker_startup_s": round(startup["seconds"], 1) if startup else None,
        "best_select": summary.best_select,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--packs", type=int, nargs="*", default=[8], help="executor.pack sizes to run in this process")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", default="experiments/results")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from experiments._common import device_tag, header, write_result
    from hpo.execution.pool import visible_gpus

    gpus = visible_gpus()
    device = "gpu" if gpus else "cpu"
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory(prefix="executor_bench-") as tmp:
        work = Path(tmp)
        rows.append(run_one("inprocess", work, args.trials, args.epochs, {"mode": "inprocess"}))
        print(rows[-1], flush=True)
        for k in args.workers:
            if gpus:
                ex = {"mode": "processes", "workers_per_gpu": k, "recycle_after": None}
            else:
                ex = {"mode": "processes", "gpus": [], "cpu_workers": k, "threads_per_worker": max(1, cores // k),
                      "recycle_after": None}
            rows.append(run_one(f"processes x{k}", work, args.trials, args.epochs, ex))
            print(rows[-1], flush=True)
        for p in args.packs:
            rows.append(run_one(f"packed x{p}", work, args.trials, args.epochs, {"mode": "inprocess", "pack": p}))
            print(rows[-1], flush=True)
    base = rows[0]["trials_per_hour"]
    one = next((r["trials_per_hour"] for r in rows if r["label"] == "processes x1"), None)
    for r in rows:
        r["ratio_vs_inprocess"] = round(r["trials_per_hour"] / base, 2)
        if one:
            r["ratio_vs_one_worker"] = round(r["trials_per_hour"] / one, 2)
    import keras

    out = {**header("experiments.executor_bench", argv), "device": device, "gpus": gpus, "cores": cores,
           "backend": keras.backend.backend(), "trials": args.trials, "epochs": args.epochs,
           "note": ("wall_s runs from the study's start to the last trial's end and includes the workers' start-up; "
                    "the machine may be shared with other work (timings on it are noisy)"),
           "runs": rows}
    path = write_result(args.out, f"executor_{device_tag() if gpus else 'cpu'}", out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
