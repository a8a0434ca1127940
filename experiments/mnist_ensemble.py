"""MNIST ensemble benchmark (the course's ensemble-of-50 table, then a real search's ensembles).

    python -m experiments.mnist_ensemble [--members-config experiments/mnist_mlp_ensemble.yaml]
                                         [--search-config experiments/mnist_mlp.yaml] [--out experiments/results]

Part 1 trains 50 identical MLPs with different seeds through the framework and reports the median
single-model test accuracy and the accuracy of the average of their logits and of their
probabilities. Part 2 runs an ``mlp`` search on MNIST and compares its best single trial with its
top-k and greedy ensembles on the locked test split. Results go to ``<out>/mnist_ensemble.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from experiments._common import header, write_result


def members_part(config: str, run_root: Path) -> dict[str, Any]:
    from ensembles import combine, load_pool
    from hpo import load_config, run_study

    cfg = load_config(config)
    cfg.study.run_dir = str(run_root / cfg.study.name)
    t0 = time.monotonic()
    summary = run_study(cfg)
    wall = time.monotonic() - t0
    pool = load_pool(cfg.run_dir)
    z = pool.outputs["test"]["digit"].astype(np.float64)
    y = pool.labels["test"]["digit"]
    singles = (z.argmax(-1) == y).mean(1)
    w = np.ones(len(z))
    return {
        "config": config, "members": int(len(z)), "wall_s": round(wall, 1), "failed": summary.n_failed,
        "median_single_test_accuracy": float(np.median(singles)),
        "min_single_test_accuracy": float(singles.min()), "max_single_test_accuracy": float(singles.max()),
        "logit_average_test_accuracy": float((combine(z, w, "logits").argmax(-1) == y).mean()),
        "probability_average_test_accuracy": float((combine(z, w, "probs").argmax(-1) == y).mean()),
        "data_hashes": json.loads((cfg.run_dir / "data.json").read_text())["hashes"],
    }


def search_part(config: str, run_root: Path) -> dict[str, Any]:
    from ensembles import build_ensemble
    from hpo import load_config, run_study

    cfg = load_config(config)
    cfg.study.run_dir = str(run_root / cfg.study.name)
    cfg.ensemble.enabled = False
    t0 = time.monotonic()
    summary = run_study(cfg)
    wall = time.monotonic() - t0
    out: dict[str, Any] = {"config": config, "trials": cfg.study.n_trials, "complete": summary.n_complete,
                           "pruned": summary.n_pruned, "wall_s": round(wall, 1), "best_trial": summary.best_trial,
                           "best_single_test": summary.best_test}
    for method in ("top_k", "greedy"):
        rep = build_ensemble(cfg.run_dir, method=method, combine="probs", size=cfg.ensemble.size, save_artifact=False)
        out[f"{method}_ensemble"] = {"members": len(rep.members),
                                     "test": {k[5:]: v for k, v in rep.metrics.items() if k.startswith("test_")}}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members-config", default="experiments/mnist_mlp_ensemble.yaml")
    ap.add_argument("--search-config", default="experiments/mnist_mlp.yaml")
    ap.add_argument("--skip-search", action="store_true")
    ap.add_argument("--runs", default="runs/bench")
    ap.add_argument("--out", default="experiments/results")
    args = ap.parse_args(argv)
    result = header("experiments.mnist_ensemble", argv)
    runs = Path(args.runs)
    result["members"] = members_part(args.members_config, runs)
    print(json.dumps(result["members"], indent=2), flush=True)
    if not args.skip_search:
        result["search"] = search_part(args.search_config, runs)
        print(json.dumps(result["search"], indent=2), flush=True)
    write_result(args.out, "mnist_ensemble", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
