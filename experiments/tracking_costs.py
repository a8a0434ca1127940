"""What tracking costs a study: a new embedded MLflow store, and the MLflow writer process's memory and work.

    python -m experiments.tracking_costs [--stores 3] [--trials 8] [--out experiments/results]

- **A new embedded store** (``sqlite:///…/mlflow.db``), opened until its first query answers: MLflow's own
  path (its whole Alembic migration history on an empty file) against ours (:mod:`hpo.tracking.schema`:
  a copy of a cached migrated template), ``--stores`` fresh files each, medians.
- **The writer process** (:mod:`hpo.tracking.writer`, one per study process): its resident memory once
  ready and after a study, and the CPU seconds it spends per trial (the SQLAlchemy work of a trial's
  MLflow writes that it takes off the study's process: its CPU time from one trial's end to the next, the
  first trial left out), from a digits study of ``--trials`` trials of 2
  epochs with the end-of-study extras off. Read with psutil.

Writes ``<out>/tracking_costs.json``; the README's tracking figures come from it.
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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _open_and_query(uri: str) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=uri).search_experiments(max_results=1)


def store_creation(n: int, work: Path) -> dict[str, Any]:
    """Seconds to a new store's first answer: MLflow migrating it, and a copy of the cached template."""
    from hpo.tracking.schema import seed_sqlite_store, template_path

    os.environ["HPO_CACHE_DIR"] = str(work / "cache")  # an empty cache: the template is built here first
    migrate, copy = [], []
    for i in range(n):
        uri = f"sqlite:///{work / f'migrated-{i}.db'}"
        t0 = time.perf_counter()
        _open_and_query(uri)
        migrate.append(time.perf_counter() - t0)
    seed_sqlite_store(f"sqlite:///{work / 'first-copy.db'}")  # builds the template (MLflow's migration, once)
    assert template_path().exists()
    for i in range(n):
        uri = f"sqlite:///{work / f'copied-{i}.db'}"
        t0 = time.perf_counter()
        seed_sqlite_store(uri)
        _open_and_query(uri)
        copy.append(time.perf_counter() - t0)
    return {"mlflow_migrates_s": migrate, "template_copy_s": copy, "mlflow_migrates_median_s": statistics.median(migrate),
            "template_copy_median_s": statistics.median(copy)}


def writer_process(n_trials: int, work: Path) -> dict[str, Any]:
    """The writer process's RSS when ready and after a study, and its CPU seconds per trial of that study."""
    import psutil

    from experiments.bench import SCALES, study_config
    from hpo.study import run_study
    from hpo.tracking.handover import shared_writer

    writer = shared_writer()
    if writer is None:
        raise SystemExit("no writer process (HPO_MLFLOW_WRITER=thread?)")
    writer.ready()
    proc = psutil.Process(writer.pid)
    rss_ready = proc.memory_info().rss
    cpu0 = sum(proc.cpu_times()[:2])
    settings = SCALES["digits"]
    cfg = study_config(settings, name="tracking-costs", driver="optuna", sampler="random", seed=0, n_trials=n_trials,
                       epochs=2, run_dir=work / "study")
    at_end: list[float] = []  # the writer's CPU seconds at each trial's end
    t0 = time.monotonic()
    summary = run_study(cfg, on_trial_end=lambda r, p: at_end.append(sum(proc.cpu_times()[:2])))
    wall = time.monotonic() - t0
    cpu = sum(proc.cpu_times()[:2]) - cpu0
    # from one trial's end to the next: that trial's writes (the first carries the study's run and the writer's
    # first connection to the store, so it is left out)
    per = [1000 * (at_end[i] - at_end[i - 1]) for i in range(1, len(at_end))]
    return {"trials": len(summary.trials), "epochs": 2, "study_wall_s": wall, "rss_ready_mb": rss_ready / 2**20,
            "rss_after_study_mb": proc.memory_info().rss / 2**20, "cpu_s": cpu, "cpu_per_trial_ms": per,
            "cpu_per_trial_median_ms": statistics.median(per), "cpu_per_trial_max_ms": max(per)}


def main(argv: list[str] | None = None) -> int:
    from experiments._common import header, write_result

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stores", type=int, default=3)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        stores = store_creation(args.stores, Path(tmp))
        print(f"new store: MLflow migrates {stores['mlflow_migrates_median_s']:.2f} s, "
              f"template copy {stores['template_copy_median_s']:.3f} s", flush=True)
        writer = writer_process(args.trials, Path(tmp))
        print(f"writer: {writer['rss_ready_mb']:.0f} MB ready, {writer['rss_after_study_mb']:.0f} MB after the study, "
              f"{writer['cpu_per_trial_median_ms']:.0f} ms CPU per trial (median)", flush=True)
    result = {**header("experiments.tracking_costs", argv), "benchmark": "tracking_costs",
              "settings": {"stores": args.stores, "trials": args.trials}, "store_creation": stores,
              "writer_process": writer}
    print(write_result(args.out, "tracking_costs", result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
