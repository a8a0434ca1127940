"""Several processes on one shared study: do they repeat each other's configurations, and what does the study
find with them?

    python -m experiments.shared_bench [--trials 100] [--processes 1 2 4] [--search-trials 40] [--seed 0]

Part 1 (``distinct``): ``--trials`` trials of a shared study (a journal file) asked and told by 1, 2 and 4
processes at once with our Optuna driver (random and TPE samplers; the objective is a fixed function of the
parameters, so only the sampling is measured), counting distinct configurations among the finished trials.
Each row runs twice: as the framework does it (the creating process keeps the study's seed, every other process
samples its own derived stream) and with one seed in every process (what the framework did before).

Part 2 (``search``): the same digits search (``--search-trials`` trials of the ``mlp`` space, TPE, one seed) run
by ``hpo run`` alone and by ``hpo run`` with three ``hpo worker`` processes on a journal storage; the best
select accuracy, distinct configurations and wall time of each.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from experiments._common import header, write_result
from experiments.storage_bench import _space, ask_and_tell

OUT = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent


def _value(params: dict[str, Any]) -> float:
    """A fixed objective of the parameters (higher near 128 units, dropout 0.2, lr 3e-3)."""
    import math

    return -(math.log2(params["units"] / 128) ** 2 + 10 * (params["dropout"] - 0.2) ** 2
             + math.log10(params["learning_rate"] / 3e-3) ** 2) + (0.1 if params["activation"] == "gelu" else 0.0)


def _process(storage: str, study: str, sampler: str, n_trials: int, seed: int, one_seed: bool, ready: Any,
             start: Any, out: Any) -> None:
    import logging

    from hpo.drivers.optuna import OptunaDriver

    logging.getLogger("hpo").setLevel(logging.ERROR)
    if one_seed:  # the behaviour before each process sampled its own stream
        OptunaDriver._own_stream = lambda self: None  # type: ignore[method-assign]
    d = OptunaDriver(_space(), direction="maximize", seed=seed, study_name=study, storage=storage, sampler=sampler,
                     fail_stale=False, shared=True, n_trials=n_trials, parallel=True, heartbeat_s=5, grace_s=60)
    d.open({"bench": "shared"})
    ready.put(os.getpid())
    start.wait()
    out.put(ask_and_tell(d, _value))


def distinct(storage_dir: Path, sampler: str, processes: int, n_trials: int, seed: int, one_seed: bool) -> dict[str, Any]:
    """One row of part 1."""
    import optuna

    from hpo.drivers.optuna import resolve_storage

    storage = f"journal:///{storage_dir / f'{uuid.uuid4().hex[:8]}.log'}"
    study = "shared-bench"
    ctx = mp.get_context("spawn")
    ready, start, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_process, args=(storage, study, sampler, n_trials, seed, one_seed, ready, start, out))
             for _ in range(processes)]
    for i, p in enumerate(procs):
        p.start()
        if i == 0:  # the first process creates the study (and keeps the study's seed)
            ready.get(timeout=600)
    for _ in procs[1:]:  # every process has opened the study before any asks
        ready.get(timeout=600)
    start.set()
    per_process = [out.get(timeout=900) for _ in procs]
    for p in procs:
        p.join()
    final = optuna.load_study(study_name=study, storage=resolve_storage(storage))
    complete = [t for t in final.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    configs = {json.dumps(t.params, sort_keys=True) for t in complete}
    return {"sampler": sampler, "processes": processes, "seeds": "one seed in every process" if one_seed
            else "a stream per process", "complete": len(complete), "distinct": len(configs),
            "distinct_per_100": round(100 * len(configs) / max(len(complete), 1), 1),
            "trials_per_process": per_process, "best_value": max(t.value for t in complete)}


def _search_config(tmp: Path, n_trials: int, seed: int, storage: str) -> Path:
    raw = {"study": {"name": "shared-search", "seed": seed, "n_trials": n_trials, "run_dir": str(tmp / "run")},
           "driver": {"storage": storage, "sampler": "tpe"},
           "data": {"dataset": "digits"},
           "space": {"builder": "mlp", "params": {"layers": {"min": 1, "max": 2}, "units": {"min": 16, "max": 128}}},
           "training": {"epochs": 4, "batch_size": 64, "save_models": False},
           "ensemble": {"enabled": False}, "plots": {"enabled": False}, "report": {"enabled": False}}
    path = tmp / "search.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def search(tmp: Path, processes: int, n_trials: int, seed: int) -> dict[str, Any]:
    """One row of part 2: the owner's summary after ``processes`` processes searched together."""
    import optuna

    from hpo.drivers.optuna import resolve_storage

    tmp.mkdir(parents=True, exist_ok=True)
    storage = f"journal:///{tmp / 'study.log'}"
    cfg = _search_config(tmp, n_trials, seed, storage)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-m", "hpo.cli"]
    t0 = time.perf_counter()
    owner = subprocess.Popen([*cmd, "run", str(cfg), "--quiet", "--json"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    workers = [subprocess.Popen([*cmd, "worker", str(cfg), "--quiet", "--run-dir", str(tmp / f"w{i}")], env=env,
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for i in range(processes - 1)]
    stdout, _ = owner.communicate(timeout=3600)
    for w in workers:
        w.wait(timeout=600)
    wall = time.perf_counter() - t0
    summary = json.loads(stdout[stdout.index("{\n"):])
    trials = optuna.load_study(study_name="shared-search", storage=resolve_storage(storage)).get_trials()
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    return {"processes": processes, "trials": len(complete),
            "distinct": len({json.dumps(t.params, sort_keys=True) for t in complete}),
            "best_select": summary["best_select"], "best_audit": summary["best_audit"], "wall_s": round(wall, 1),
            "by_process": sorted({t.user_attrs.get("hpo.worker") for t in complete} - {None})}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--search-trials", type=int, default=40)
    ap.add_argument("--search-processes", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parts", nargs="+", default=["distinct", "search"])
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="shared-bench-"))
    result = header("experiments.shared_bench", argv) | {"trials": args.trials, "seed": args.seed,
                                                         "distinct_rows": [], "search_rows": []}
    if "distinct" in args.parts:
        for sampler in ("random", "tpe"):
            for n in args.processes:
                for one_seed in ([False, True] if n > 1 else [False]):
                    row = distinct(tmp, sampler, n, args.trials, args.seed, one_seed)
                    result["distinct_rows"].append(row)
                    print(row, flush=True)
    if "search" in args.parts:
        for n in args.search_processes:
            row = search(tmp / f"search-{n}", n, args.search_trials, args.seed)
            result["search_rows"].append(row)
            print(row, flush=True)
    print(write_result(args.out, "shared_bench", result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
