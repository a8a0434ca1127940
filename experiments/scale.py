"""Cost at scale: sampler proposal time against study size, and greedy ensembling over many candidates.

    python -m experiments.scale [--out experiments/results]

1. The time Optuna's TPE and Hyperopt's TPE take to propose one configuration of the ``mlp`` space
   when 10, 100 and 1,000 trials have finished (in-memory histories, so only the sampler is timed).
2. Greedy forward selection (size cap 20) over 1,000 candidate members with MNIST-sized logits on the
   select half (5,000 rows x 10 classes), for each combination.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def sampler_cost(sizes: tuple[int, ...] = (10, 100, 1000), repeats: int = 5, seed: int = 0) -> list[dict[str, Any]]:
    import hyperopt
    import optuna
    from hyperopt import base

    from hpo.data import load_digits_splits
    from hpo.analysis.guards import sample_random
    from hpo.drivers.hyperopt import HyperoptDriver
    from hpo.drivers.optuna import optuna_distributions, suggest_optuna
    from hpo.space import discover
    from hpo.results import TrialResult, TrialState
    from search_spaces import get_builder

    space = discover(get_builder("mlp"), load_digits_splits().spec)
    dists = optuna_distributions(space)
    rng = np.random.default_rng(seed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    for n in sizes:
        history = [sample_random(space, rng) for _ in range(n)]
        values = rng.random(n).tolist()
        # Optuna: a history of n finished trials, then time ask + define-by-run suggestions
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
        study.add_trials([optuna.trial.create_trial(params={k: v for k, v in p.items() if k in dists},
                                                    distributions={k: dists[k] for k in p if k in dists}, value=v)
                          for p, v in zip(history, values)])
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            trial = study.ask()
            suggest_optuna(space, trial)
            times.append(time.perf_counter() - t0)
            study.tell(trial, float(rng.random()))
        opt = float(np.median(times))
        # Hyperopt: the same number of finished trials (drawn by its random algorithm), then time TPE's ask
        drv = HyperoptDriver(space, direction="maximize", seed=seed, save_file=Path("/tmp/_scale_h.pkl"), algo="rand")
        for _ in range(n):
            prop = drv.ask()
            assert prop is not None
            drv.trials._dynamic_trials[-1]["state"] = base.JOB_STATE_DONE
            drv.trials._dynamic_trials[-1]["result"] = {"status": "ok", "loss": float(rng.random())}
        drv.trials.refresh()
        drv.algo = hyperopt.tpe.suggest
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            prop = drv.ask()
            times.append(time.perf_counter() - t0)
            assert prop is not None
            drv.tell(prop, TrialResult(number=prop.number, params=prop.params, seed=0, state=TrialState.COMPLETE,
                                       value=float(rng.random())))
        rows.append({"finished_trials": n, "optuna_tpe_ms": round(1000 * opt, 1),
                     "hyperopt_tpe_ms": round(1000 * float(np.median(times)), 1)})
        print(rows[-1], flush=True)
    return rows


def greedy_cost(members: int = 1000, rows: int = 5000, classes: int = 10, cap: int = 20, seed: int = 0) -> list[dict[str, Any]]:
    from ensembles.pool import HeadInfo, Pool
    from ensembles.select import greedy

    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, rows)
    signal = np.eye(classes, dtype=np.float32)[y] * 3.0
    # each member: the true signal plus its own noise, so members are correlated but not identical
    logits = np.stack([signal + rng.normal(0, 1.5 + 0.5 * rng.random(), (rows, classes)).astype(np.float32)
                       for _ in range(members)])
    outputs = {s: {"digit": logits} for s in ("select", "audit", "test")}
    labels = {s: {"digit": y} for s in ("select", "audit", "test")}
    pool = Pool(numbers=list(range(members)), params=[{}] * members, values=rng.random(members), direction="maximize",
                heads=[HeadInfo("digit", "multiclass", classes)], outputs=outputs, labels=labels,
                model_paths=[None] * members)
    out = []
    for combine in ("probs", "logits", "geometric", "vote"):
        t0 = time.perf_counter()
        counts, steps = greedy(pool, method=combine, metric="nll", max_size=cap)
        out.append({"combine": combine, "members": members, "rows": rows, "classes": classes, "cap": cap,
                    "steps": len(steps), "seconds": round(time.perf_counter() - t0, 2)})
        print(out[-1], flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="experiments/results")
    args = ap.parse_args(argv)
    from experiments._common import header, write_result

    write_result(args.out, "scale", {**header("experiments.scale", argv), "sampler_cost": sampler_cost(),
                                     "greedy_cost": greedy_cost()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
