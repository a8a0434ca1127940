"""Reproducible benchmark suite: our drivers against KerasTuner's tuners, what the ensemble adds, our overhead.

    python -m experiments.bench [NAME ...] [--mnist] [--render-only] [--out experiments/results] [--runs runs/bench]

Names (default: ``quality overhead``):

- ``quality``: search quality at equal budget. The same space, trials and epochs for our Optuna TPE,
  Hyperopt TPE and KerasTuner-oracle drivers (``run_study``) and for KerasTuner's own ``RandomSearch``,
  ``BayesianOptimization`` and ``Hyperband`` tuners (``tuner.search`` on the same builder; Hyperband gets
  the same total epoch budget); the best trial's audit and test scores, mean and spread over seeds.
  Also writes ``ensemble``: the best single trial of each of our studies against its top-k and greedy
  ensembles (``ensembles.build_ensemble``) on the locked test split.
- ``overhead``: wall time of ``run_study`` against a bare build-fit-evaluate loop over the same sampled
  configurations (taken from a finished study), our trial runner alone, and KerasTuner's RandomSearch
  tuner replaying the same configurations; all interleaved in one run, several repetitions.
- ``mnist_ensemble``, ``validation_noise``, ``scale``: run those scripts (only when named: the MNIST
  ones want a GPU); their results files are rendered either way.

``--mnist`` runs ``quality``/``overhead`` on real MNIST with a larger space and budget (for GPU machines);
their files get a ``_mnist`` suffix, and on a GPU machine the card's short name too
(``bench_overhead_mnist_h100.json``), so GPU results sit beside the CPU machines'. Every run rewrites
``experiments/RESULTS.md`` from every results file (``--render-only`` only does that). A seed fixes the
sampled configurations: each results file records their hashes, and a rerun keeps the previous file as
``<name>.previous.json`` and records how far every number moved.
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
from typing import Any, Callable, Mapping, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from experiments.verdicts import median_interval  # noqa: E402,F401  (kept importable from here)

RESULTS = Path(__file__).resolve().parent / "results"
RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"

# Our studies: tool -> (driver, sampler). KerasTuner's own tuners are in experiments.peers.KT_TOOLS.
OURS = {"optuna_tpe": ("optuna", "tpe"), "hyperopt_tpe": ("hyperopt", "tpe"), "ours_kt_random": ("kerastuner", "random")}
TOOL_LABELS = {
    "optuna_tpe": "ours: Optuna TPE (run_study)", "hyperopt_tpe": "ours: Hyperopt TPE (run_study)",
    "ours_kt_random": "ours: KerasTuner random oracle (run_study)", "kt_random": "KerasTuner RandomSearch",
    "kt_bayesian": "KerasTuner BayesianOptimization", "kt_hyperband": "KerasTuner Hyperband (same epoch budget)",
}
DEFAULT_TOOLS = ("optuna_tpe", "hyperopt_tpe", "ours_kt_random", "kt_random", "kt_bayesian", "kt_hyperband")

# The small mlp space for CPU runs: depth, width, activation, dropout, optimizer and learning rate.
SMALL_MLP = {"layers": {"min": 1, "max": 3}, "units": {"min": 16, "max": 256, "log": True},
             "batchnorm": {"fixed": False}, "use_l2": {"fixed": False}}
MNIST_MLP = {"layers": {"min": 1, "max": 3}, "units": {"min": 32, "max": 1024, "log": True},
             "batchnorm": {"fixed": False}, "use_l2": {"fixed": False}}

SCALES: dict[str, dict[str, Any]] = {
    "digits": {"dataset": "digits", "space": SMALL_MLP, "trials": 12, "seeds": 3, "epochs": 5, "batch_size": 64,
               "overhead": [{"configs": 10, "epochs": 5, "reps": 5}, {"configs": 4, "epochs": 30, "reps": 7}]},
    "mnist": {"dataset": "mnist", "space": MNIST_MLP, "trials": 20, "seeds": 3, "epochs": 10, "batch_size": 256,
              "overhead": [{"configs": 10, "epochs": 10, "reps": 3}]},
}


# -- shared pieces ----------------------------------------------------------------------------
def study_config(settings: Mapping[str, Any], *, name: str, driver: str, sampler: str, seed: int, n_trials: int,
                 epochs: int, run_dir: Path, audit_per_epoch: bool = True, defaults: bool = False) -> Any:
    """A study config with the end-of-study extras (ensemble, guards, plots, report) off; ``defaults``: with
    them as a user who sets nothing gets them (all on)."""
    from hpo.config import StudyConfig, from_dict

    raw: dict[str, Any] = {
        "study": {"name": name, "seed": seed, "n_trials": n_trials, "run_dir": str(run_dir)},
        "driver": {"name": driver, "sampler": sampler},
        "data": {"dataset": settings["dataset"]},
        "space": {"builder": "mlp", "params": settings["space"]},
        "training": {"epochs": epochs, "batch_size": settings["batch_size"]},
    }
    if not defaults:
        raw |= {"ensemble": {"enabled": False}, "guards": {"enabled": False, "audit_per_epoch": audit_per_epoch},
                "plots": {"enabled": False}, "report": {"enabled": False}, "tensorboard": {"enabled": False}}
    if "executor" in StudyConfig.__dataclass_fields__:
        # trials in this process: what is timed is the in-process driver (what the default `auto` picks on a CPU
        # machine with one CPU worker; on a GPU machine `auto` would pick worker processes)
        raw["executor"] = {"mode": "inprocess"}
    return from_dict(raw)


def _fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    return path


def _spread(values: Sequence[float]) -> dict[str, float]:
    vals = [float(v) for v in values]
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "min": min(vals), "max": max(vals), "n": len(vals)}


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _flat(d: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(d, Mapping):
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}/"))
    elif isinstance(d, (int, float)) and not isinstance(d, bool):
        out[prefix.rstrip("/")] = float(d)
    return out


def write_with_rerun(out: Path, name: str, result: dict[str, Any]) -> Path:
    """Write ``<out>/<name>.json``; an existing one is kept as ``<name>.previous.json`` and diffed.

    ``result["hashes"]`` (sampled configurations) and ``result["numbers"]`` (headline numbers) are
    compared with the previous run's: ``result["rerun"]`` says whether the configurations were the same
    and how far each number moved.
    """
    from experiments._common import write_result

    path = Path(out) / f"{name}.json"
    if path.exists():
        try:
            prev = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            prev = None
        if prev is not None and "numbers" in prev:
            same_settings = prev.get("settings") == result.get("settings")
            ph, nh = prev.get("hashes", {}), result.get("hashes", {})
            common = sorted(set(ph) & set(nh))
            pn, nn = _flat(prev.get("numbers", {})), _flat(result.get("numbers", {}))
            moved = {k: {"previous": pn[k], "now": nn[k], "change": nn[k] - pn[k]} for k in sorted(set(pn) & set(nn))}
            scores = [abs(v["change"]) for k, v in moved.items() if not k.endswith("_s") and "ratio" not in k]
            times = [abs(v["change"]) / abs(v["previous"]) for k, v in moved.items()
                     if (k.endswith("_s") or "ratio" in k) and v["previous"]]
            result["rerun"] = {
                "previous_date": prev.get("date"), "previous_command": prev.get("command"),
                "same_settings": same_settings,
                "configs_compared": len(common), "configs_identical": sum(ph[k] == nh[k] for k in common),
                "max_abs_change_scores": max(scores) if scores else None,
                "max_relative_change_times": max(times) if times else None,
                "numbers": moved,
            }
            path.replace(Path(out) / f"{name}.previous.json")
    return write_result(out, name, result)


# -- quality and ensembles ----------------------------------------------------------------------
def _our_study(settings: Mapping[str, Any], tool: str, seed: int, run_dir: Path, build: Any, splits: Any,
               ) -> tuple[dict[str, Any], dict[str, Any]]:
    from ensembles import build_ensemble, load_pool
    from experiments.peers import configs_hash, logits_metrics
    from hpo.study import run_study

    driver, sampler = OURS[tool]
    cfg = study_config(settings, name=f"{tool}-s{seed}", driver=driver, sampler=sampler, seed=seed,
                       n_trials=settings["trials"], epochs=settings["epochs"], run_dir=_fresh(run_dir),
                       audit_per_epoch=False)
    t0 = time.monotonic()
    summary = run_study(cfg, build=build, splits=splits)
    wall = time.monotonic() - t0
    pool = load_pool(run_dir)
    head = pool.heads[0].name
    i = pool.numbers.index(summary.best_trial)
    row: dict[str, Any] = {
        "tool": tool, "seed": seed, "n_trials": len(summary.trials), "failed": summary.n_failed,
        "epochs_trained": sum(int(json.loads(p.read_text())["epochs"]) for p in run_dir.glob("trials/*/result.json")),
        "wall_s": round(wall, 2), "configs_hash": configs_hash([t["params"] for t in summary.trials]),
        "best_trial": summary.best_trial, "best_select": summary.best_select, "best_params": summary.best_params,
        "audit": logits_metrics(pool.outputs["audit"][head][i], pool.labels["audit"][head]),
        "test": logits_metrics(pool.outputs["test"][head][i], pool.labels["test"][head]),
    }
    ens: dict[str, Any] = {"tool": tool, "seed": seed, "best_trial": summary.best_trial,
                           "single": {"test": row["test"], "audit": row["audit"]}}
    for method in ("top_k", "greedy"):
        # the previous selection (raw logits, Caruana's start), as this section has always reported it;
        # experiments.ensemble_gain compares it with the calibrated, guarded default on the same trials
        rep = build_ensemble(run_dir, method=method, combine="probs", size=5, metric="nll", save_artifact=False,
                             calibrate=False, guard=False, confidence=0.0)
        ens[method] = {"members": [m["trial"] for m in rep.members], "size": int(sum(m["count"] for m in rep.members)),
                       **{s: {k: rep.metrics[f"{s}_{k}"] for k in ("accuracy", "nll", "ece")} for s in ("audit", "test")}}
    return row, ens


def quality(settings: Mapping[str, Any], *, tools: Sequence[str], seeds: Sequence[int], runs: Path, out: Path,
            argv: list[str] | None, suffix: str = "") -> dict[str, Any]:
    """Run every tool with every seed on the same space and budget; write bench_quality and bench_ensemble."""
    from experiments._common import header
    from experiments.peers import KT_TOOLS, run_kerastuner
    from hpo.study import prepare

    base = study_config(settings, name="quality", driver="optuna", sampler="tpe", seed=0, n_trials=settings["trials"],
                        epochs=settings["epochs"], run_dir=runs / "quality" / "prepare")
    build, splits, space = prepare(base)
    rows: list[dict[str, Any]] = []
    ensembles: list[dict[str, Any]] = []
    t_all = time.monotonic()
    for seed in seeds:
        for tool in tools:
            run_dir = runs / "quality" / f"{tool}-s{seed}"
            if tool in OURS:
                row, ens = _our_study(settings, tool, seed, run_dir, build, splits)
                ensembles.append(ens)
            elif tool in KT_TOOLS:
                row = run_kerastuner(tool, build, space, splits, n_trials=settings["trials"], epochs=settings["epochs"],
                                     batch_size=settings["batch_size"], seed=seed, directory=run_dir)
            else:
                raise SystemExit(f"unknown tool {tool!r}; choose from {', '.join([*OURS, *KT_TOOLS])}")
            rows.append(row)
            _log(f"quality {tool} seed {seed}: {row['n_trials']} trials, {row['epochs_trained']} epochs, "
                 f"audit {row['audit']['accuracy']:.4f} test {row['test']['accuracy']:.4f} ({row['wall_s']:.1f} s)")
    total = time.monotonic() - t_all
    keys = ["dataset", "space", "trials", "epochs", "batch_size"]
    from experiments.peers import KT_SEED_OFFSET

    common_settings = {k: settings[k] for k in keys} | {"seeds": list(seeds), "tools": list(tools),
                                                        "kerastuner_seed_offset": KT_SEED_OFFSET}
    summary = {}
    for tool in tools:
        mine = [r for r in rows if r["tool"] == tool]
        summary[tool] = {"label": TOOL_LABELS[tool], "audit_accuracy": _spread([r["audit"]["accuracy"] for r in mine]),
                         "test_accuracy": _spread([r["test"]["accuracy"] for r in mine]),
                         "test_nll": _spread([r["test"]["nll"] for r in mine]),
                         "trials": _spread([r["n_trials"] for r in mine]),
                         "epochs_trained": _spread([r["epochs_trained"] for r in mine]),
                         "wall_s": _spread([r["wall_s"] for r in mine])}
    head = header("experiments.bench", argv)
    data_hashes = splits.hashes
    quality_result = {
        **head, "benchmark": "quality", "settings": common_settings, "data_hashes": data_hashes,
        "total_wall_s": round(total, 1), "summary": summary, "runs": rows,
        "hashes": {f"{r['tool']}/seed{r['seed']}": r["configs_hash"] for r in rows},
        "numbers": {f"{r['tool']}/seed{r['seed']}": {"audit_accuracy": r["audit"]["accuracy"],
                                                      "test_accuracy": r["test"]["accuracy"], "wall_s": r["wall_s"]}
                    for r in rows},
    }
    write_with_rerun(out, f"bench_quality{suffix}", quality_result)
    if ensembles:
        gains = {m: {"test_accuracy": _spread([e[m]["test"]["accuracy"] - e["single"]["test"]["accuracy"] for e in ensembles]),
                     "test_nll": _spread([e[m]["test"]["nll"] - e["single"]["test"]["nll"] for e in ensembles])}
                 for m in ("top_k", "greedy")}
        ensemble_result = {
            **head, "benchmark": "ensemble", "settings": common_settings | {"ensemble_size": 5, "combine": "probs",
                                                                            "greedy_metric": "nll"},
            "data_hashes": data_hashes, "studies": ensembles, "mean_gain_over_single": gains,
            "single_test_accuracy": _spread([e["single"]["test"]["accuracy"] for e in ensembles]),
            "single_test_nll": _spread([e["single"]["test"]["nll"] for e in ensembles]),
            **{f"{m}_test_{k}": _spread([e[m]["test"][k] for e in ensembles]) for m in ("top_k", "greedy")
               for k in ("accuracy", "nll")},
            "hashes": {f"{r['tool']}/seed{r['seed']}": r["configs_hash"] for r in rows if r["tool"] in OURS},
            "numbers": {f"{e['tool']}/seed{e['seed']}": {f"{m}_test_{k}": e[m]["test"][k]
                                                          for m in ("single", "top_k", "greedy") for k in ("accuracy", "nll")}
                        for e in ensembles},
        }
        write_with_rerun(out, f"bench_ensemble{suffix}", ensemble_result)
    return quality_result


# -- overhead ------------------------------------------------------------------------------------
def _timed_study(settings: Mapping[str, Any], point: Mapping[str, Any], seed: int, run_dir: Path, build: Any,
                 splits: Any, defaults: bool = False) -> dict[str, Any]:
    """run_study, timed, with the time inside trials (duration_s) and around them split out; wall and CPU time
    (of the process tree: the MLflow writer process included) at every trial's end."""
    from experiments._common import tree_cpu_s
    from experiments.peers import configs_hash
    from hpo.study import run_study

    cfg = study_config(settings, name="overhead", driver="optuna", sampler="tpe", seed=seed, n_trials=point["configs"],
                       epochs=point["epochs"], run_dir=_fresh(run_dir), defaults=defaults)
    ends: list[float] = []
    cpu_ends: list[float] = []

    def on_end(r: Any, p: Any) -> None:
        ends.append(time.monotonic())
        cpu_ends.append(tree_cpu_s())

    t0 = time.monotonic()
    summary = run_study(cfg, build=build, splits=splits, on_trial_end=on_end)
    t1 = time.monotonic()
    results = sorted((json.loads(p.read_text()) for p in run_dir.glob("trials/*/result.json")), key=lambda r: r["number"])
    dur = [r["duration_s"] for r in results]
    n = len(dur)
    # ends[i] = start of trial i + its duration + its bookkeeping after it (tell, MLflow end)
    loop = sum(ends[i] - dur[i] - ends[i - 1] for i in range(1, n))
    per_trial_loop = loop / (n - 1) if n > 1 else 0.0
    # Trial i's whole cycle (ask, MLflow, training, cleanup, tell) runs from trial i-1's end to its own.
    cycles = [ends[i] - ends[i - 1] for i in range(1, n)]
    return {"wall_s": t1 - t0, "in_trials_s": sum(dur), "per_trial_s": dur, "cycle_s": [None, *cycles],
            "cpu_cycle_s": [None, *(cpu_ends[i] - cpu_ends[i - 1] for i in range(1, n))],
            "setup_s": ends[0] - dur[0] - t0 - per_trial_loop, "loop_s": loop + per_trial_loop,
            "end_s": t1 - ends[-1], "configs_hash": configs_hash([t["params"] for t in summary.trials]),
            "params": [t["params"] for t in summary.trials]}


def _with_env(name: str, value: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        return fn()
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _overhead_variants(settings: Mapping[str, Any], point: Mapping[str, Any], seed: int, root: Path, build: Any,
                       splits: Any, space: Any, configs: Sequence[Mapping[str, Any]],
                       ) -> dict[str, Callable[[int], dict[str, Any]]]:
    """Every variant, named for what it runs (experiments.render.VARIANTS describes each), by repetition index."""
    from experiments.peers import bare_loop, replay_tuner, runner_loop
    from hpo.study import clear_prepared

    kw = dict(epochs=point["epochs"], batch_size=settings["batch_size"], seed=seed)

    def study(r: int, tag: str, **extra: Any) -> dict[str, Any]:
        return _timed_study(settings, point, seed, root / f"{tag}-r{r}", build, splits, **extra)

    def first_in_process(r: int) -> dict[str, Any]:
        clear_prepared()  # as the first study of a process (`hpo run`): space discovery and preflight run again
        return study(r, "first")

    return {
        "bare_loop": lambda r: bare_loop(configs, build, space, splits, **kw),
        "run_trial_no_audit_no_save": lambda r: runner_loop(configs, build, space, splits, directory=root / f"lean-r{r}",
                                                            audit_per_epoch=False, save_models=False, **kw),
        "run_trial": lambda r: runner_loop(configs, build, space, splits, directory=root / f"runner-r{r}", **kw),
        "run_study_no_extras": lambda r: study(r, "study"),
        "run_study_defaults": lambda r: study(r, "defaults", defaults=True),
        "run_study_no_extras_first_in_process": first_in_process,
        # MLflow writes made by the study's own background thread, as before the writer process (hpo.tracking.writer)
        "run_study_no_extras_thread_writes": lambda r: _with_env("HPO_MLFLOW_WRITER", "thread",
                                                                 lambda: study(r, "thread")),
        "kerastuner_replay": lambda r: replay_tuner(configs, build, space, splits, directory=root / f"kt-r{r}", **kw),
    }


def _overhead_point(settings: Mapping[str, Any], point: Mapping[str, Any], p_i: int, *, seed: int, runs: Path,
                    warmup_reps: int) -> dict[str, Any]:
    """One point: a warm-up study samples the configurations, then every variant runs them, interleaved."""
    from experiments._common import tree_cpu_s
    from experiments.verdicts import BARE, PAIRED, estimate, once_share, overhead_verdicts, paired
    from hpo.study import prepare

    root = runs / "overhead" / f"p{p_i}"
    base = study_config(settings, name="overhead", driver="optuna", sampler="tpe", seed=seed,
                        n_trials=point["configs"], epochs=point["epochs"], run_dir=root / "prepare")
    build, splits, space = prepare(base)
    # Warm-up study: its trials are the configurations every variant runs (Optuna TPE's seeded
    # start-up trials, so every repetition of the study samples them again).
    warm = _timed_study(settings, point, seed, root / "warmup", build, splits)
    configs = warm["params"]
    variants = _overhead_variants(settings, point, seed, root, build, splits, space, configs)
    names = list(variants)
    for w in range(warmup_reps):
        for v in names:
            variants[v](-1 - w)
            _log(f"overhead point {p_i} warm-up {w} {v} done")
    reps: list[dict[str, Any]] = []
    for r in range(point["reps"]):
        order = names[r % len(names):] + names[: r % len(names)]  # rotate, so no variant always runs first
        rep: dict[str, Any] = {"order": order}
        for v in order:
            # CPU of the process tree: the MLflow writer process's work counts for the variants that hand it over
            cpu0 = tree_cpu_s()
            res = variants[v](r)
            res["cpu_s"] = tree_cpu_s() - cpu0
            res.pop("params", None)
            rep[v] = res
            _log(f"overhead point {p_i} rep {r} {v}: {res['wall_s']:.2f} s")
        reps.append(rep)
    hashes = {v: sorted({rep[v]["configs_hash"] for rep in reps}) for v in names}
    med = statistics.median

    def ratio(v: str, key: str = "wall_s") -> list[float]:
        return [rep[v][key] / rep[BARE][key] - 1 for rep in reps]

    study = [rep["run_study_no_extras"] for rep in reps]
    n = point["configs"]
    out: dict[str, Any] = {
        "n_configs": n, "epochs": point["epochs"], "reps": point["reps"], "batch_size": settings["batch_size"],
        "warmup_reps": warmup_reps, "cpu_scope": "process tree (this process, live descendants, reaped children)",
        "configs_hash": warm["configs_hash"],
        "same_configs_everywhere": all(h == [warm["configs_hash"]] for h in hashes.values()),
        "hashes_by_variant": hashes, "configs": configs, "repetitions": reps,
        "median_wall_s": {v: med([rep[v]["wall_s"] for rep in reps]) for v in names},
        "overhead_ratio": {v: {"median": med(ratio(v)), "per_rep": ratio(v)} for v in names if v != BARE},
        "cpu_overhead_ratio": {v: {"median": med(ratio(v, "cpu_s")), "per_rep": ratio(v, "cpu_s")}
                               for v in names if v != BARE},
        # Trial by trial against the bare loop's same configuration in the same repetition: a variant's whole run
        # is one sample of the machine's load, each trial one more (n−1 per repetition; the first trial carries
        # the study's setup, added back in the whole-study estimates)
        "trial_ratio": {v: estimate(paired(reps, v)) for v in PAIRED},
        "cpu_trial_ratio": {v: estimate(paired(reps, v, "cpu_cycle_s", "cpu_per_trial_s")) for v in PAIRED},
        "study_cold_setup_s": med([rep["run_study_no_extras_first_in_process"]["setup_s"] for rep in reps]),
        "defaults_end_s": med([rep["run_study_defaults"]["end_s"] for rep in reps]),
        "breakdown": {
            "bare_per_trial_s": med([rep[BARE]["wall_s"] for rep in reps]) / n,
            "in_trial_extras_per_trial_s": med([s["in_trials_s"] - rep[BARE]["wall_s"] for s, rep in zip(study, reps)]) / n,
            "of_which_audit_per_epoch_and_model_save_per_trial_s":
                med([rep["run_trial"]["wall_s"] - rep["run_trial_no_audit_no_save"]["wall_s"] for rep in reps]) / n,
            "of_which_select_validation_predictions_seeding_per_trial_s":
                med([rep["run_trial_no_audit_no_save"]["wall_s"] - rep[BARE]["wall_s"] for rep in reps]) / n,
            "study_setup_s": med([s["setup_s"] for s in study]),
            "loop_per_trial_s": med([s["loop_s"] for s in study]) / n,
            "study_end_s": med([s["end_s"] for s in study]),
        },
    }
    out["study_estimate"] = out["trial_ratio"]["run_study_no_extras"]["median"] + once_share(out, "run_study_no_extras")
    out["verdicts"] = overhead_verdicts(out)
    return out


def overhead(settings: Mapping[str, Any], *, seed: int, runs: Path, out: Path, argv: list[str] | None,
             suffix: str = "", warmup_reps: int | None = None) -> dict[str, Any]:
    """Our run_study (extras off and default settings), our trial runner, KerasTuner and the bare loop on the same
    configurations, interleaved; verdicts from the per-trial paired estimates (:mod:`experiments.verdicts`).

    ``warmup_reps`` untimed repetitions of every variant run first (default: 1 where a GPU is visible, else 0).
    On a GPU, XLA compiles each new computation once per process (autotuning included: seconds a model). The
    warm-up study has compiled our runner's functions but not the bare loop's ``evaluate`` or KerasTuner's, so
    without this the variant that first meets a computation pays for it: on an H100 the bare loop's first
    repetition took 6.2 s a trial, its second 3.4 s, ours ~3 s in both (the probable cause; on a CPU, where
    compiling is cheap, the first repetition is not slower).
    """
    from experiments._common import header

    if warmup_reps is None:
        from experiments._common import machine

        warmup_reps = 1 if machine().get("gpu") else 0
    t_all = time.monotonic()
    load_before = os.getloadavg()
    points = [_overhead_point(settings, point, p_i, seed=seed, runs=runs, warmup_reps=warmup_reps)
              for p_i, point in enumerate(settings["overhead"])]
    head = header("experiments.bench", argv)
    result = {
        **head, "benchmark": "overhead", "seed": seed,
        "settings": {"dataset": settings["dataset"], "space": settings["space"], "batch_size": settings["batch_size"],
                     "points": settings["overhead"], "driver": "optuna tpe"},
        "total_wall_s": round(time.monotonic() - t_all, 1), "points": points,
        # the machine's 1/5/15-minute load averages before and after: other work running meanwhile widens the intervals
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
        "hashes": {f"point{i}": p["configs_hash"] for i, p in enumerate(points)},
        "numbers": {f"point{i}": {f"{v}_ratio": p["overhead_ratio"][v]["median"] for v in p["overhead_ratio"]}
                    | {f"{v}_trial_ratio": t["median"] for v, t in p["trial_ratio"].items()}
                    | {"study_estimate": p["study_estimate"]}
                    | {f"{v}_s": p["median_wall_s"][v] for v in p["median_wall_s"]} for i, p in enumerate(points)},
    }
    write_with_rerun(out, f"bench_overhead{suffix}", result)
    return result


# -- entry point ------------------------------------------------------------------------------------
SCRIPTS = {"mnist_ensemble": "experiments.mnist_ensemble", "validation_noise": "experiments.validation_noise",
           "scale": "experiments.scale"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="quality, ensemble (same run as quality), overhead, "
                                              "mnist_ensemble, validation_noise, scale (default: quality overhead)")
    ap.add_argument("--mnist", action="store_true", help="real MNIST, a larger space and budget (for GPU machines)")
    ap.add_argument("--render-only", action="store_true", help="only rebuild RESULTS.md from the results files")
    ap.add_argument("--tools", nargs="+", default=list(DEFAULT_TOOLS), help="quality: which tools")
    ap.add_argument("--trials", type=int, help="quality: trials per study")
    ap.add_argument("--seeds", type=int, help="quality: number of seeds (0, 1, ...)")
    ap.add_argument("--epochs", type=int, help="quality: epochs per trial")
    ap.add_argument("--overhead", help="overhead points as CONFIGS:EPOCHS:REPS[,...], e.g. 10:5:3")
    ap.add_argument("--seed", type=int, default=0, help="overhead: study seed")
    ap.add_argument("--warmup-reps", type=int, help="overhead: untimed repetitions of every variant first "
                                                    "(default 1 on a GPU machine, 0 otherwise)")
    ap.add_argument("--out", default=str(RESULTS), help="where results files go")
    ap.add_argument("--runs", default="runs/bench", help="where the studies run (deleted and rewritten)")
    ap.add_argument("--results-md", default=None, help="RESULTS.md to write (default: experiments/RESULTS.md "
                                                        "when --out is the default)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    md = Path(args.results_md) if args.results_md else (RESULTS_MD if out.resolve() == RESULTS.resolve() else out / "RESULTS.md")
    if not args.render_only:
        names = args.names or ["quality", "overhead"]
        unknown = set(names) - {"quality", "ensemble", "overhead", *SCRIPTS}
        if unknown:
            ap.error(f"unknown benchmark {sorted(unknown)[0]!r}")
        settings = dict(SCALES["mnist" if args.mnist else "digits"])
        for key in ("trials", "seeds", "epochs"):
            if getattr(args, key) is not None:
                settings[key] = getattr(args, key)
        if args.overhead:
            settings["overhead"] = [dict(zip(("configs", "epochs", "reps"), map(int, p.split(":"))))
                                    for p in args.overhead.split(",")]
        from experiments._common import device_tag

        # A GPU's results sit beside the CPU machines' instead of replacing them: bench_overhead_mnist_h100.json
        device = device_tag()
        suffix = ("_mnist" if args.mnist else "") + ("" if device == "cpu" else f"_{device}")
        runs = Path(args.runs) / ("mnist" if args.mnist else "digits")
        if "quality" in names or "ensemble" in names:
            quality(settings, tools=args.tools, seeds=range(settings["seeds"]), runs=runs, out=out, argv=argv, suffix=suffix)
        if "overhead" in names:
            overhead(settings, seed=args.seed, runs=runs, out=out, argv=argv, suffix=suffix,
                     warmup_reps=args.warmup_reps)
        for name in names:
            if name in SCRIPTS:
                import importlib

                importlib.import_module(SCRIPTS[name]).main(["--out", str(out)])
    from experiments.render import write_results_md

    path = write_results_md(out, md)
    _log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
