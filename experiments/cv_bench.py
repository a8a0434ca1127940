"""One train/select split against 5-fold cross-validation: the chosen trial's test accuracy and its winner's curse.

    python -m experiments.cv_bench [--seeds 5] [--trials 6] [--epochs 10] [--folds 5]

On digits, for each seed, the same 6-trial search (Optuna TPE over the small `mlp` space, batch 32) runs twice at
equal total epochs: once on one split (each trial trains ``epochs`` epochs on train and is scored on the 216-row
select half) and once with ``training.folds: k`` (each trial trains k fold models of ``epochs / k`` epochs on folds
of train+select and is scored on its out-of-fold predictions over all 1,221 rows; its model is the bag of the k
fold models). Six trials keep the whole run near 15 minutes on 2 shared cores: a cross-validated trial builds and
traces k models (about 4 s each there, against 0.1 s per epoch). Audit (216 rows) and the locked test split
(360 rows) are the same in both. For the trial each study
chooses (best select score):

- ``test``: its test accuracy (from its saved test logits: the fold models' logit average for a CV trial);
- ``curse``: select minus test, the winner's curse (how much the choosing score flatters the chosen trial);
- ``curse_single_model``: select minus the test accuracy of the model the select score measured: for one split
  the trial's model; for k folds the mean of the fold models' own test accuracies. The bag of fold models is
  better than any one of them, so ``curse`` of a CV trial mixes the bagging gain into the curse; this does not;
- ``regret``: the best test accuracy among the study's trials minus the chosen one's (how badly the choosing
  score ranks the trials).

The literature expects a smaller curse with folds (a larger, less noisy choosing set); this reports what it
measures. Writes ``experiments/results/cv_bench.json``; ``python -m experiments.bench --render-only`` renders it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 32


def _log(msg: str) -> None:
    print(f"[cv_bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _config(seed: int, trials: int, epochs: int, folds: int | None, run_dir: Path) -> Any:
    from experiments.bench import SMALL_MLP, study_config

    cfg = study_config({"dataset": "digits", "space": SMALL_MLP, "batch_size": BATCH},
                       name=f"cv-{'split' if folds is None else f'k{folds}'}-s{seed}", driver="optuna", sampler="tpe",
                       seed=seed, n_trials=trials, epochs=epochs, run_dir=run_dir, audit_per_epoch=False)
    cfg.training.folds = folds
    cfg.training.save_models = False  # scored from the saved logits; nothing is deployed
    return cfg


def one_study(seed: int, trials: int, epochs: int, folds: int | None, run_dir: Path) -> dict[str, Any]:
    """Run one study; the chosen trial's select, audit and test accuracy, and every trial's test accuracy."""
    from hpo.study import run_study

    if run_dir.exists():
        shutil.rmtree(run_dir)
    t0 = time.monotonic()
    summary = run_study(_config(seed, trials, epochs, folds, run_dir))
    wall = time.monotonic() - t0
    with np.load(run_dir / "labels.npz") as f:
        labels = {s: f[f"{s}/digit"] for s in ("select", "audit", "test")}
    per_trial = {}
    for p in sorted((run_dir / "trials").glob("*/result.json")):
        r = json.loads(p.read_text())
        if r["state"] != "COMPLETE":
            continue
        with np.load(r["predictions_path"]) as f:
            acc = {s: float((f[f"{s}/digit"].argmax(1) == labels[s]).mean()) for s in ("select", "audit", "test")}
        if folds:  # the fold models one by one: what the out-of-fold score estimates (no bagging gain)
            with np.load(Path(r["predictions_path"]).parent / "folds.npz") as f:
                acc["test_fold_models"] = statistics.fmean(
                    float((f[f"fold_{i}/test/digit"].argmax(1) == labels["test"]).mean()) for i in range(folds))
        per_trial[r["number"]] = {"value": r["value"], **acc}
    best = summary.best_trial
    chosen = per_trial[best]
    return {"seed": seed, "wall_s": round(wall, 1), "n_complete": summary.n_complete, "chosen_trial": best,
            "select_rows": int(len(labels["select"])), "select": chosen["value"], "audit": chosen["audit"],
            "test": chosen["test"], "curse": chosen["value"] - chosen["test"],
            # one split: the trial's model is the one the select score measured; k folds: the mean fold model's
            "test_single_model": chosen.get("test_fold_models", chosen["test"]),
            "curse_single_model": chosen["value"] - chosen.get("test_fold_models", chosen["test"]),
            "best_test_of_any_trial": max(t["test"] for t in per_trial.values()),
            "regret": max(t["test"] for t in per_trial.values()) - chosen["test"],
            "trials_test": {str(n): t["test"] for n, t in per_trial.items()}}


def _mean_sd(xs: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(xs), "sd": statistics.stdev(xs) if len(xs) > 1 else 0.0,
            "min": min(xs), "max": max(xs)}


def summarise(arms: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per arm: mean ± sd of test, curse and regret; paired (same seed) differences of CV minus split."""
    keys = ("select", "audit", "test", "curse", "test_single_model", "curse_single_model", "regret", "wall_s")
    out: dict[str, Any] = {arm: {k: _mean_sd([s[k] for s in studies]) for k in keys} for arm, studies in arms.items()}
    split, cv = arms["split"], arms["cv"]
    out["paired_cv_minus_split"] = {k: _mean_sd([c[k] - s[k] for c, s in zip(cv, split)])
                                    for k in ("test", "curse", "curse_single_model", "regret")}
    out["seeds_with_smaller_curse_under_cv"] = sum(c["curse"] < s["curse"] for c, s in zip(cv, split))
    out["seeds_with_smaller_single_model_curse_under_cv"] = sum(
        c["curse_single_model"] < s["curse_single_model"] for c, s in zip(cv, split))
    out["seeds_with_higher_test_under_cv"] = sum(c["test"] > s["test"] for c, s in zip(cv, split))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=10, help="epochs per trial on one split; each fold gets epochs/folds")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--runs", default="runs/cv_bench")
    args = ap.parse_args(argv)
    if args.epochs % args.folds:
        ap.error("--epochs must be a multiple of --folds (equal total epochs)")
    from experiments._common import header, write_result

    t0 = time.monotonic()
    arms: dict[str, list[dict[str, Any]]] = {"split": [], "cv": []}
    for seed in range(args.seeds):
        for arm, folds, epochs in (("split", None, args.epochs), ("cv", args.folds, args.epochs // args.folds)):
            arms[arm].append(one_study(seed, args.trials, epochs, folds, Path(args.runs) / f"{arm}-s{seed}"))
            e = arms[arm][-1]
            _log(f"seed {seed} {arm}: chosen trial {e['chosen_trial']} select {e['select']:.4f} test {e['test']:.4f} "
                 f"curse {e['curse']:+.4f} regret {e['regret']:.4f} ({e['wall_s']} s)")
    result = {**header("experiments.cv_bench", argv), "benchmark": "cv_bench",
              "seed": list(range(args.seeds)),
              "settings": {"dataset": "digits", "trials": args.trials, "batch_size": BATCH, "folds": args.folds,
                           "split_epochs_per_trial": args.epochs, "cv_epochs_per_fold": args.epochs // args.folds,
                           "total_epochs_per_study": args.trials * args.epochs, "driver": "optuna tpe",
                           "space": "experiments.bench.SMALL_MLP"},
              "studies": arms, "summary": summarise(arms), "wall_s": round(time.monotonic() - t0, 1)}
    path = write_result(args.out, "cv_bench", result)
    _log(f"{json.dumps(result['summary'], indent=1)}\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
