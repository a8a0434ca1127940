"""Bookkeeping throughput of a shared study: trials per second with a trivial objective.

    python -m experiments.storage_bench [--trials 200] [--workers 1 4] [--postgres URL]

For SQLite, a journal file and PostgreSQL (``HPO_TEST_POSTGRES_URL`` or ``--postgres``), with 1 and
K worker processes, each doing what ``hpo worker`` does around a trial: our Optuna driver in shared
mode (budget count over every worker's trials, claim check, heartbeat thread, sampling four
parameters, tell) with an objective that returns at once. Plain Optuna ask/tell on the same storage
is measured beside it. The time per trial is the database's share of every real trial; the results
file says how many GPU workers one database serves at a given trial length.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from experiments._common import header, write_result

OUT = Path(__file__).resolve().parent / "results"


def _space() -> Any:
    from hpo.space import Param, SearchSpace

    return SearchSpace([Param("units", "int", 16, 512, log=True, default=64),
                        Param("dropout", "float", 0.0, 0.5, default=0.0),
                        Param("activation", "choice", values=("relu", "gelu", "tanh"), default="relu"),
                        Param("learning_rate", "float", 1e-4, 1e-1, log=True, default=1e-3)])


def _ours(storage: str, study: str, n_trials: int, start: Any, out: Any) -> None:
    import logging

    from hpo.drivers.optuna import OptunaDriver

    logging.getLogger("hpo").setLevel(logging.ERROR)
    d = OptunaDriver(_space(), direction="maximize", seed=os.getpid(), study_name=study, storage=storage,
                     sampler="tpe", fail_stale=False, shared=True, n_trials=n_trials, heartbeat_s=5, grace_s=60)
    d.open({"bench": True})
    start.wait()
    t0 = time.perf_counter()
    done = ask_and_tell(d, lambda params: float(params["dropout"]))
    out.put((done, time.perf_counter() - t0))


def ask_and_tell(d: Any, value: Any) -> int:
    """Ask ``d`` and tell ``value(params)`` until the shared study's budget is used; the trials this process ran."""
    from hpo.drivers.base import Wait
    from hpo.results import TrialResult, TrialState

    done = 0
    while True:
        p = d.ask()
        if p is None:
            return done
        if isinstance(p, Wait):
            time.sleep(0.05)
            continue
        d.tell(p, TrialResult(number=p.number, params=p.params, seed=0, state=TrialState.COMPLETE,
                              value=value(p.params)))
        done += 1


def _plain(storage: str, study: str, n_trials: int, start: Any, out: Any) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    from hpo.drivers.optuna import resolve_storage

    s = optuna.load_study(study_name=study, storage=resolve_storage(storage),
                          sampler=optuna.samplers.TPESampler(seed=os.getpid()))
    start.wait()
    t0, done = time.perf_counter(), 0
    while len(s.get_trials(deepcopy=False)) < n_trials:
        t = s.ask()
        v = t.suggest_float("dropout", 0.0, 0.5)
        t.suggest_int("units", 16, 512, log=True)
        t.suggest_categorical("activation", ["relu", "gelu", "tanh"])
        t.suggest_float("learning_rate", 1e-4, 1e-1, log=True)
        s.tell(t, v)
        done += 1
    out.put((done, time.perf_counter() - t0))


def _run(kind: str, storage: str, workers: int, n_trials: int) -> dict[str, Any]:
    import optuna

    from hpo.drivers.optuna import resolve_storage

    study = f"bench-{uuid.uuid4().hex[:8]}"
    if kind == "plain":
        optuna.create_study(study_name=study, storage=resolve_storage(storage), direction="maximize")
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_ours if kind == "ours" else _plain, args=(storage, study, n_trials, start, out))
             for _ in range(workers)]
    for p in procs:
        p.start()
    time.sleep(3.0 + workers)  # every process imported and opened the study
    t0 = time.perf_counter()
    start.set()
    got = [out.get(timeout=900) for _ in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    final = optuna.load_study(study_name=study, storage=resolve_storage(storage))
    complete = [t for t in final.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    try:
        optuna.delete_study(study_name=study, storage=resolve_storage(storage))
    except Exception:
        pass
    n = sum(g[0] for g in got)
    return {"kind": kind, "workers": workers, "trials": n, "complete_in_storage": len(complete), "wall_s": wall,
            "trials_per_s": n / wall, "ms_per_trial": 1000 * wall / max(n, 1),
            "ms_per_trial_per_worker": statistics.mean(1000 * g[1] / max(g[0], 1) for g in got)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--postgres", default=os.environ.get("HPO_TEST_POSTGRES_URL"))
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="storage-bench-"))
    storages = {"sqlite": f"sqlite:///{tmp}/s.db", "journal": f"journal://{tmp}/s.log"}
    if args.postgres:
        storages["postgresql"] = args.postgres
    rows = []
    for name, url in storages.items():
        for w in args.workers:
            for kind in ("ours", "plain"):
                try:
                    r = _run(kind, url, w, args.trials) | {"storage": name}
                except Exception as exc:  # e.g. SQLite locked under several writers: report, don't hide
                    r = {"storage": name, "kind": kind, "workers": w, "error": f"{type(exc).__name__}: {exc}"[:300]}
                rows.append(r)
                print({k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()}, flush=True)
    result = header("experiments.storage_bench", argv) | {
        "trials": args.trials, "rows": rows,
        "reading": ("ms_per_trial is the database's share of every trial with all workers running; one database "
                    "serves about trial_seconds * 1000 / ms_per_trial workers before it becomes the bottleneck"),
    }
    print(write_result(args.out, "storage_bench", result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
