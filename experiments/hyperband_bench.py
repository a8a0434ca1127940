"""Our KerasTuner-Hyperband driver against KerasTuner's own ``keras_tuner.Hyperband`` tuner at equal epoch budget.

    python -m experiments.hyperband_bench [--seeds 3] [--max-epochs 9]

On digits, for each seed, one Hyperband iteration (``max_epochs`` 9, factor 3: brackets of 9, 5 and 3 starting
trials, 23 trials in all) over the small ``mlp`` space (batch 64) runs twice on the same splits and builder:

- ``ours``: ``hpo`` with ``driver: kerastuner, sampler: hyperband`` (trials in this process, per-epoch audit
  scores, MLflow tracking; ensembles, guards, plots and the report off). A promoted trial continues its parent's
  checkpoint (weights and optimizer state) and trains only the epochs after the parent's;
- ``kerastuner``: ``keras_tuner.Hyperband(...).search(...)``, which also continues promoted trials
  (``tuner/trial_id``) from the parent's best-epoch checkpoint.

Both oracles are KerasTuner's ``HyperbandOracle`` with the same seed, so the schedule (and so the epoch budget) is
the same; the epochs each trained are counted from the trials' ``tuner/epochs - tuner/initial_epoch``, and
``epochs_from_scratch`` is what the same schedule trains when every round starts from scratch (this driver before
issue 27). For the best trial by select accuracy (ours: its last epoch; KerasTuner: its best epoch, whose checkpoint
it reloads): select and test accuracy; and the wall time of the whole search. ``sampled_configs_hash`` hashes the
configurations the oracle drew (its trials that continue no other): the same in both when the seed gives both
oracles the same draws; which trials are promoted depends on each tool's scores (``configs_hash``, all trials). Writes
``experiments/results/hyperband_bench.json``; ``python -m experiments.bench --render-only`` renders it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 64
FACTOR = 3  # our driver's (hpo.drivers.kerastuner), and KerasTuner's default


def _log(msg: str) -> None:
    print(f"[hyperband_bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _settings(max_epochs: int) -> dict[str, Any]:
    from experiments.bench import SMALL_MLP

    return {"dataset": "digits", "space": SMALL_MLP, "batch_size": BATCH, "epochs": max_epochs}


def sampled_hash(oracle_dir: Path, space: Any) -> str:
    """Hash of the configurations the oracle sampled (its trials that continue no other), in start order: the same
    for both tools when their oracles drew the same configurations."""
    import keras_tuner as kt

    from experiments.peers import _trial_params, configs_hash

    order = json.loads((oracle_dir / "oracle.json").read_text())["start_order"]
    trials = [kt.engine.trial.Trial.load(str(oracle_dir / f"trial_{t}" / "trial.json")) for t in order]
    return configs_hash([_trial_params(space, t) for t in trials if "tuner/trial_id" not in t.hyperparameters.values])


def ours(seed: int, max_epochs: int, build: Any, space: Any, splits: Any, run_dir: Path) -> dict[str, Any]:
    """One Hyperband iteration through our driver; the best trial's scores from its saved logits."""
    from ensembles import load_pool
    from experiments.bench import study_config
    from experiments.peers import configs_hash, logits_metrics
    from hpo.study import run_study

    if run_dir.exists():
        shutil.rmtree(run_dir)
    # n_trials above one iteration's trials: the oracle ends the study when its iteration is done
    cfg = study_config(_settings(max_epochs), name=f"hb-ours-s{seed}", driver="kerastuner", sampler="hyperband",
                       seed=seed, n_trials=1000, epochs=max_epochs, run_dir=run_dir)
    t0 = time.monotonic()
    summary = run_study(cfg, build=build, splits=splits)
    wall = time.monotonic() - t0
    records = [json.loads(p.read_text()) for p in sorted(run_dir.glob("trials/*/result.json"))]
    pool = load_pool(run_dir)
    head = pool.heads[0].name
    i = pool.numbers.index(summary.best_trial)
    return {"tool": "ours", "seed": seed, "n_trials": len(records), "failed": summary.n_failed,
            "epochs_trained": sum(r["epochs"] for r in records),
            "epochs_from_scratch": sum(r["epochs"] + r["initial_epoch"] for r in records),
            "promoted": sum(r["resumed_from"] is not None for r in records),
            "wall_s": round(wall, 2), "configs_hash": configs_hash([r["params"] for r in records]),
            "sampled_configs_hash": sampled_hash(run_dir / "kerastuner" / "oracle", space),
            "best_trial": summary.best_trial, "best_select": summary.best_select,
            "test": logits_metrics(pool.outputs["test"][head][i], pool.labels["test"][head])}


def kerastuner(seed: int, max_epochs: int, build: Any, space: Any, splits: Any, directory: Path) -> dict[str, Any]:
    """One iteration of KerasTuner's own Hyperband tuner; its best model (best-epoch checkpoint) scored on test."""
    import keras
    import keras_tuner as kt

    from experiments.peers import KT_SEED_OFFSET, _hypermodel, _trial_params, configs_hash, logits_metrics

    if directory.exists():
        shutil.rmtree(directory)
    tuner = kt.Hyperband(hypermodel=_hypermodel(build, splits.spec, seed), objective=kt.Objective("val_accuracy", "max"),
                         max_epochs=max_epochs, factor=FACTOR, hyperband_iterations=1, seed=seed + KT_SEED_OFFSET,
                         hyperparameters=space.to_kerastuner(), tune_new_entries=False,
                         directory=str(directory.parent), project_name=directory.name, overwrite=True)
    t0 = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tuner.search(splits.x["train"], splits.y["train"], validation_data=(splits.x["select"], splits.y["select"]),
                     batch_size=BATCH, verbose=0)
    wall = time.monotonic() - t0
    trials = [tuner.oracle.trials[t] for t in tuner.oracle.start_order]
    values = [t.hyperparameters.values for t in trials]
    best = tuner.oracle.get_best_trials(1)[0]
    model = tuner.load_model(best)
    out = {"tool": "kerastuner", "seed": seed, "n_trials": len(trials),
           "failed": sum(t.status != "COMPLETED" for t in trials),
           "epochs_trained": sum(int(v["tuner/epochs"]) - int(v["tuner/initial_epoch"]) for v in values),
           "epochs_from_scratch": sum(int(v["tuner/epochs"]) for v in values),
           "promoted": sum("tuner/trial_id" in v for v in values),
           # Keras' warning when a checkpoint's optimizer variables are skipped (loaded into an unbuilt optimizer)
           "optimizer_state_dropped": sum("Skipping variable loading for optimizer" in str(w.message) for w in caught),
           "wall_s": round(wall, 2), "configs_hash": configs_hash([_trial_params(space, t) for t in trials]),
           "sampled_configs_hash": sampled_hash(directory, space),
           "best_trial": tuner.oracle.start_order.index(best.trial_id), "best_select": float(best.score),
           "test": logits_metrics(model.predict(splits.x["test"], batch_size=1024, verbose=0), splits.y["test"])}
    del model
    keras.backend.clear_session()
    return out


def _mean_sd(xs: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(xs), "sd": statistics.stdev(xs) if len(xs) > 1 else 0.0,
            "min": min(xs), "max": max(xs)}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per tool: mean ± sd of the best trial's select and test accuracy, epochs and wall time."""
    out: dict[str, Any] = {}
    for tool in ("ours", "kerastuner"):
        mine = [r for r in rows if r["tool"] == tool]
        out[tool] = {"best_select": _mean_sd([r["best_select"] for r in mine]),
                     "test_accuracy": _mean_sd([r["test"]["accuracy"] for r in mine]),
                     **{k: _mean_sd([float(r[k]) for r in mine])
                        for k in ("n_trials", "epochs_trained", "epochs_from_scratch", "promoted", "wall_s")}}
    pairs = [(o, k) for o in rows if o["tool"] == "ours" for k in rows if k["tool"] == "kerastuner"
             and k["seed"] == o["seed"]]
    out["paired_ours_minus_kerastuner"] = {
        "test_accuracy": _mean_sd([o["test"]["accuracy"] - k["test"]["accuracy"] for o, k in pairs]),
        "wall_ratio": _mean_sd([o["wall_s"] / k["wall_s"] for o, k in pairs])}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--max-epochs", type=int, default=9)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--runs", default="runs/hyperband_bench")
    args = ap.parse_args(argv)
    from experiments._common import header, write_result
    from experiments.bench import study_config
    from hpo.study import prepare

    build, splits, space = prepare(study_config(_settings(args.max_epochs), name="hb-prepare", driver="kerastuner",
                                                sampler="hyperband", seed=0, n_trials=1, epochs=args.max_epochs,
                                                run_dir=Path(args.runs) / "prepare"))
    t0 = time.monotonic()
    rows: list[dict[str, Any]] = []
    for seed in range(args.seeds):
        for tool in ("ours", "kerastuner"):
            where = Path(args.runs) / f"{tool}-s{seed}"
            row = (ours(seed, args.max_epochs, build, space, splits, where) if tool == "ours"
                   else kerastuner(seed, args.max_epochs, build, space, splits, where.resolve()))
            rows.append(row)
            _log(f"seed {seed} {tool}: {row['n_trials']} trials ({row['promoted']} promoted), {row['epochs_trained']} "
                 f"epochs (from scratch {row['epochs_from_scratch']}), best select {row['best_select']:.4f} "
                 f"test {row['test']['accuracy']:.4f} ({row['wall_s']} s)")
    result = {**header("experiments.hyperband_bench", argv), "benchmark": "hyperband_bench",
              "seed": list(range(args.seeds)),
              "settings": {"dataset": "digits", "max_epochs": args.max_epochs, "factor": FACTOR,
                           "hyperband_iterations": 1, "batch_size": BATCH, "space": "experiments.bench.SMALL_MLP",
                           "test_rows": int(len(splits.y["test"]))},
              "data_hashes": splits.hashes, "runs": rows, "summary": summarise(rows),
              "wall_s": round(time.monotonic() - t0, 1)}
    path = write_result(args.out, "hyperband_bench", result)
    _log(f"{json.dumps(result['summary'], indent=1)}\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
