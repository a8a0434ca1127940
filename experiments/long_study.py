"""Long studies: resident memory over a long study, bookkeeping per trial up to 2,000 trials.

    python -m experiments.long_study [--trials 2000] [--memory-trials 200] [--parts bookkeeping memory workers quickstart]

Writes ``experiments/results/long_study.json`` (parts not run are kept from the existing file).

1. Memory (``memory``). A real study of small models with the default executor settings (in-process on a
   CPU machine; digits, ``mlp`` with 1-2 layers of 8-32 units, 1 epoch, random sampler, the embedded SQLite
   Optuna and MLflow stores, ``keep_top_models: 5``): the process's resident set (``VmRSS``) after every
   trial, reported every 10 trials; the target is that it stays within 200 MB of its value after trial 10.
   Side by side, each in a fresh process, both at the same time (so the machine's other load falls on both
   alike): the committed code, and the same study with TensorFlow's per-trace gradient registrations kept
   (``forget_trace_gradients`` patched to do nothing: the code before the fix), for the memory growth and the
   trials per hour of both.
   ``workers``: the same search on one worker process (``executor.mode: processes``) with
   ``recycle_after``: the worker's RSS after each trial (read from ``/proc/<pid>/status`` while it
   waits for its next task) and its growth within each worker's lifetime.
2. Bookkeeping (``bookkeeping``). ``run_study``'s real loop (driver ask/tell on the embedded SQLite
   storage, MLflow child runs on the embedded SQLite store, result.json, ``keep_top_models``, progress)
   with the objective replaced by a trivial function: ``hpo.study.trials.run_trial`` is patched with a
   stand-in that reports one epoch through the real listener (MLflow ``log_batch`` and the pruner),
   writes a ``predictions.npz`` of the real split sizes and a placeholder ``model.keras``, and returns
   a ``TrialResult``. Per trial: the wall time between consecutive trial ends minus the stand-in's own
   few lines (its file writes count as bookkeeping, ``save_predictions``), the process CPU time, and
   the pieces (exclusive times: ask, tell, MLflow start/epoch/end, result.json, model retention,
   the rest). Variants: ``rollback_journal`` (both SQLite stores in SQLite's default mode, as before),
   ``optuna_wal`` (the committed code: optuna.db in WAL mode), ``optuna_wal+mlflow_wal`` (plus the
   proposed hpo.tracking change, applied here by the benchmark), with the random sampler and TPE.
3. ``quickstart``: the duration of quickstart trials (experiments/quickstart.yaml), set against the
   sampler proposal cost and greedy ensembling time in ``experiments/results/scale.json``
   (``python -m experiments.scale``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def rss_mb(pid: int | str = "self") -> float | None:
    """Resident set size of a process in MB (``VmRSS`` of ``/proc/<pid>/status``); None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _config(run_dir: Path, name: str, n_trials: int, **sections: Any) -> Any:
    from hpo.config import from_dict

    raw: dict[str, Any] = {
        "study": {"name": name, "seed": 0, "n_trials": n_trials, "run_dir": str(run_dir)},
        "driver": {"name": "optuna", "sampler": "random"},
        "data": {"dataset": "digits"},
        "space": {"builder": "mlp", "params": {"layers": {"min": 1, "max": 2}, "units": {"min": 8, "max": 32, "log": True},
                                               "batchnorm": {"fixed": False}}},
        "training": {"epochs": 1, "batch_size": 128, "keep_top_models": 5},
        "ensemble": {"enabled": False, "size": 5},
        "guards": {"enabled": False},
        "plots": {"enabled": False},
        "report": {"enabled": False},
    }
    for k, v in sections.items():
        raw[k] = {**raw.get(k, {}), **v}
    return from_dict(raw)


# -- 1. memory ---------------------------------------------------------------------------------
def memory_inprocess(n_trials: int, work: Path, keep_trace_gradients: bool = False) -> dict[str, Any]:
    """RSS of this process after every trial of a real study with the default executor settings;
    ``keep_trace_gradients``: as before TensorFlow's per-trace gradient registrations were forgotten."""
    import hpo.execution.memory as memory
    from hpo.study import run_study

    if keep_trace_gradients:
        memory.forget_trace_gradients = lambda: 0  # type: ignore[assignment]

    curve: list[dict[str, Any]] = []
    started = time.monotonic()
    first = rss_mb()

    def on_end(result: Any, progress: Any) -> None:
        curve.append({"trial": progress.done, "rss_mb": round(rss_mb() or 0.0, 1),
                      "elapsed_s": round(time.monotonic() - started, 1)})
        if progress.done % 10 == 0:
            print(f"  inprocess trial {progress.done}: rss {curve[-1]['rss_mb']} MB", flush=True)

    tag = "mem-inprocess-kept" if keep_trace_gradients else "mem-inprocess"
    cfg = _config(work / tag, tag, n_trials)
    if cfg.executor.mode == "auto" and cfg.executor.cpu_workers <= 1:
        print(f"  {tag}: default executor (auto) on this machine runs trials in this process", flush=True)
    summary = run_study(cfg, on_trial_end=on_end)
    report = _memory_report(curve, first, summary, time.monotonic() - started)
    report["trace_gradients"] = "kept (before the fix)" if keep_trace_gradients else "forgotten after each trial"
    report["executor"] = {"mode": cfg.executor.mode, "cpu_workers": cfg.executor.cpu_workers}
    report["trials_per_hour"] = round(3600 * summary.n_complete / report["wall_s"], 0) if report["wall_s"] else None
    return report


def memory_side_by_side(n_trials: int, work: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`memory_inprocess` with the fix and without it, each in a fresh spawned interpreter, both at the same
    time: whatever else loads the machine loads both alike, so their trials per hour compare."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        fixed = pool.submit(memory_inprocess, n_trials, work, False)
        kept = pool.submit(memory_inprocess, n_trials, work, True)
        return fixed.result(), kept.result()


def _memory_report(curve: list[dict[str, Any]], before: float | None, summary: Any, wall: float) -> dict[str, Any]:
    at10 = next((c["rss_mb"] for c in curve if c["trial"] == 10), None)
    peak_after10 = max((c["rss_mb"] for c in curve if c["trial"] >= 10), default=None)
    last = curve[-1]["rss_mb"] if curve else None
    tail = [c for c in curve if c["trial"] >= max(10, len(curve) // 2)]
    slope = None
    if len(tail) >= 2:
        xs = np.array([c["trial"] for c in tail], float)
        ys = np.array([c["rss_mb"] for c in tail], float)
        slope = round(float(np.polyfit(xs, ys, 1)[0]) * 1000, 1)  # KB per trial
    return {
        "rss_before_mb": round(before, 1) if before else None,
        "rss_after_trial_10_mb": at10, "rss_last_mb": last, "peak_after_trial_10_mb": peak_after10,
        "growth_after_trial_10_mb": round(peak_after10 - at10, 1) if at10 is not None and peak_after10 else None,
        "slope_second_half_kb_per_trial": slope,
        "n_complete": summary.n_complete, "n_failed": summary.n_failed, "wall_s": round(wall, 1),
        "curve_every_10": [c for c in curve if c["trial"] % 10 == 0 or c["trial"] == 1],
    }


def memory_workers(n_trials: int, work: Path, recycle_after: int | None) -> dict[str, Any]:
    """RSS of the study's single worker process after each trial (and of the study process)."""
    from hpo.study import run_study

    pool_ref: dict[str, Any] = {}
    curve: list[dict[str, Any]] = []
    started = time.monotonic()
    pids_seen: list[int] = []

    def on_pool(pool: Any) -> None:
        pool_ref["pool"] = pool

    def on_end(result: Any, progress: Any) -> None:
        pool = pool_ref["pool"]
        w = next(iter(pool.workers.values()))
        if not pids_seen or pids_seen[-1] != w.proc.pid:
            pids_seen.append(w.proc.pid)
        # A worker retired after this trial has been replaced by a fresh one that is still loading: skip it.
        wr = rss_mb(w.proc.pid) if w.trials_done > 0 else None
        curve.append({"trial": progress.done, "worker_pid": w.proc.pid, "worker_trials": w.trials_done,
                      "worker_rss_mb": round(wr, 1) if wr else None, "study_rss_mb": round(rss_mb() or 0.0, 1)})

    tag = f"mem-workers-{recycle_after or 'never'}"
    cfg = _config(work / tag, tag, n_trials,
                  executor={"mode": "processes", "cpu_workers": 1, "recycle_after": recycle_after, "gpus": []})
    summary = run_study(cfg, on_trial_end=on_end, on_pool=on_pool)
    measured = [c for c in curve if c["worker_rss_mb"] is not None]
    lifetimes: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for c in measured:
        lifetimes[c["worker_pid"]].append(c)
    per_worker = [{"pid": pid, "trials": len(cs), "rss_first_mb": cs[0]["worker_rss_mb"],
                   "rss_last_mb": cs[-1]["worker_rss_mb"], "growth_mb": round(cs[-1]["worker_rss_mb"] - cs[0]["worker_rss_mb"], 1)}
                  for pid, cs in lifetimes.items()]
    at10 = next((c["worker_rss_mb"] for c in measured if c["trial"] >= 10), None)
    return {
        "recycle_after": recycle_after, "workers_started": len(pids_seen), "n_complete": summary.n_complete,
        "n_failed": summary.n_failed, "wall_s": round(time.monotonic() - started, 1),
        "worker_rss_after_trial_10_mb": at10,
        "worker_rss_peak_mb": max((c["worker_rss_mb"] for c in measured), default=None),
        "worker_rss_last_mb": measured[-1]["worker_rss_mb"] if measured else None,
        "study_process_rss_trial_10_mb": next((c["study_rss_mb"] for c in curve if c["trial"] == 10), None),
        "study_process_rss_last_mb": curve[-1]["study_rss_mb"] if curve else None,
        "per_worker": per_worker,
        "curve_every_10": [c for c in curve if c["trial"] % 10 == 0 or c["trial"] == 1],
    }


# -- 2. bookkeeping --------------------------------------------------------------------------
class _Timer:
    """Wraps functions and accumulates their exclusive wall time per trial (a timed call inside another
    timed call is counted once, under its own key)."""

    def __init__(self) -> None:
        self.current: dict[str, float] = defaultdict(float)
        self._stack: list[float] = []  # time of timed children of each open frame
        self._undo: list[Callable[[], None]] = []

    def timed(self, key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            self._stack.append(0.0)
            try:
                return fn(*a, **k)
            finally:
                elapsed = time.perf_counter() - t0
                children = self._stack.pop()
                self.current[key] += elapsed - children
                if self._stack:
                    self._stack[-1] += elapsed

        return run

    def wrap(self, owner: Any, attr: str, key: str) -> None:
        original = getattr(owner, attr)
        setattr(owner, attr, self.timed(key, original))
        self._undo.append(lambda: setattr(owner, attr, original))

    def take(self) -> dict[str, float]:
        out = dict(self.current)
        self.current.clear()
        return out

    def restore(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


PIECES = ("driver_ask", "driver_tell", "mlflow_start_trial", "mlflow_log_epoch", "mlflow_end_trial",
          "write_result_json", "keep_top_models", "save_predictions")
VARIANTS = {
    # name: (Optuna storage in WAL mode, MLflow store in WAL mode)
    "rollback_journal": (False, False),  # SQLite's default, what both stores used before this change
    "optuna_wal": (True, False),  # the code as committed: hpo.drivers.optuna puts optuna.db in WAL mode
    "optuna_wal+mlflow_wal": (True, True),  # plus the proposed hpo.tracking change (mlflow.db in WAL mode too)
}


def bookkeeping(n_trials: int, work: Path, sampler: str, variant: str = "optuna_wal", keep_top: int = 10) -> dict[str, Any]:
    """Per-trial time of run_study's own loop around a trivial objective, to ``n_trials`` trials."""
    import hpo.study as study_mod
    import hpo.study.loop as loop_mod
    import hpo.study.trials as trials_mod
    from hpo.drivers.optuna import OptunaDriver
    from hpo.sqlite_wal import use_wal
    from hpo.tracking import Tracker
    from hpo.results import TrialResult, TrialState

    optuna_wal, mlflow_wal = VARIANTS[variant]
    timer = _Timer()
    rng = np.random.default_rng(0)
    sizes: dict[str, int] = {}
    labels: dict[str, np.ndarray] = {}

    def save_predictions(trial_dir: Path, value: float) -> Path:
        trial_dir.mkdir(parents=True, exist_ok=True)
        arrays = {f"{s}/digit": (np.eye(10, dtype="float32")[labels[s]] * 3 * value
                                 + rng.normal(0, 1, (sizes[s], 10)).astype("float32")) for s in sizes}
        np.savez_compressed(trial_dir / "predictions.tmp.npz", **arrays)
        (trial_dir / "predictions.tmp.npz").replace(trial_dir / "predictions.npz")
        (trial_dir / "model.keras").write_bytes(b"placeholder: the bookkeeping run trains no model")
        return trial_dir / "predictions.npz"

    save = timer.timed("save_predictions", save_predictions)

    def trivial_trial(*, number: int, params: Any, seed: int, splits: Any, settings: Any, trial_dir: Path,
                      listener: Any = None, **_: Any) -> TrialResult:
        t0 = time.perf_counter()
        if not sizes:
            for s in ("select", "audit", "test"):
                labels[s] = np.asarray(splits.y[s]).reshape(-1)
                sizes[s] = len(labels[s])
        value = float(rng.random())
        logs = {"loss": 1.0 - value, "accuracy": value, "val_loss": 1.0 - value, "val_accuracy": value,
                "audit_loss": 1.0 - value, "audit_accuracy": value}
        if listener is not None:
            listener(0, logs)  # the real listener: MLflow log_batch of the epoch, the pruner
        path = save(trial_dir, value)
        return TrialResult(number=number, params=dict(params), seed=seed, state=TrialState.COMPLETE, value=value,
                           metrics={"select_loss": 1.0 - value, "select_accuracy": value, "audit_loss": 1.0 - value,
                                    "audit_accuracy": value},
                           history={k: [v] for k, v in logs.items()}, epochs=1, duration_s=time.perf_counter() - t0,
                           predictions_path=str(path), model_path=str(trial_dir / "model.keras"))

    rows: list[dict[str, float]] = []
    last = [0.0]
    last_cpu = [0.0]
    real_start_study = Tracker.start_study
    real_init = Tracker.__init__

    def start_study(self: Any, *a: Any, **k: Any) -> str:
        out = real_start_study(self, *a, **k)
        last[0] = time.perf_counter()  # trial 1 is timed from the moment the loop can start
        last_cpu[0] = time.process_time()
        return out

    def init(self: Any, *a: Any, **k: Any) -> None:
        real_init(self, *a, **k)
        if mlflow_wal:  # what the proposed hpo.tracking change does for a sqlite:/// tracking URI
            use_wal(self.client._tracking_client.store.engine)

    def on_end(result: Any, progress: Any) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        parts = timer.take()
        wall = now - last[0]
        last[0] = now
        rows.append({"trial": progress.done, "wall_ms": 1000 * wall, "cpu_ms": 1000 * (cpu - last_cpu[0]),
                     **{k: 1000 * v for k, v in parts.items()}})
        last_cpu[0] = cpu
        if progress.done % 250 == 0:
            print(f"  {variant} {sampler} trial {progress.done}: wall {1000 * wall:.1f} ms", flush=True)

    timer.wrap(OptunaDriver, "ask", "driver_ask")
    timer.wrap(OptunaDriver, "tell", "driver_tell")
    timer.wrap(Tracker, "start_trial", "mlflow_start_trial")
    timer.wrap(Tracker, "log_epoch", "mlflow_log_epoch")
    timer.wrap(Tracker, "end_trial", "mlflow_end_trial")
    timer.wrap(trials_mod, "write_json", "write_result_json")
    timer.wrap(loop_mod, "retain_models", "keep_top_models")
    original_run_trial = trials_mod.run_trial
    trials_mod.run_trial = timer.timed("objective_stand_in", trivial_trial)
    Tracker.start_study = start_study  # type: ignore[method-assign]
    Tracker.__init__ = init  # type: ignore[method-assign]
    OptunaDriver.sqlite_wal = optuna_wal
    name = f"book-{variant.replace('+', '-')}-{sampler}"
    try:
        cfg = _config(work / name, name, n_trials, driver={"sampler": sampler}, training={"keep_top_models": keep_top})
        t_study = time.perf_counter()
        summary = study_mod.run_study(cfg, on_trial_end=on_end)
        total = time.perf_counter() - t_study
    finally:
        trials_mod.run_trial = original_run_trial
        Tracker.start_study = real_start_study  # type: ignore[method-assign]
        Tracker.__init__ = real_init  # type: ignore[method-assign]
        OptunaDriver.sqlite_wal = True
        timer.restore()
    run_dir = work / name
    models = sorted(p.parent.name for p in (run_dir / "trials").glob("*/model.keras"))
    logits = len(list((run_dir / "trials").glob("*/predictions.npz")))
    return _bookkeeping_report(rows, sampler, variant, n_trials, summary, total, models, logits, keep_top)


def _bookkeeping_report(rows: list[dict[str, float]], sampler: str, variant: str, n: int, summary: Any, total: float,
                        models: list[str], logits: int, keep_top: int) -> dict[str, Any]:
    for r in rows:
        # Everything but the stand-in's own few lines is the framework's: sampling, storage, tracking, files.
        r["bookkeeping_ms"] = r["wall_ms"] - r.get("objective_stand_in", 0.0)
        r["other_ms"] = r["bookkeeping_ms"] - sum(r.get(p, 0.0) for p in PIECES)  # on_done, progress, the loop
    block = 100 if n >= 500 else max(10, n // 10)
    keys = ["wall_ms", "bookkeeping_ms", "cpu_ms", *PIECES, "other_ms"]
    blocks = []
    for start in range(0, len(rows), block):
        chunk = rows[start:start + block]
        blocks.append({"trials": f"{chunk[0]['trial']}-{chunk[-1]['trial']}",
                       **{f"median_{k}": round(statistics.median(r.get(k, 0.0) for r in chunk), 2) for k in keys},
                       "p90_bookkeeping_ms": round(float(np.percentile([r["bookkeeping_ms"] for r in chunk], 90)), 2)})
    first = [r for r in rows if 10 <= r["trial"] < 20] or rows[:10]
    final = rows[-min(100, len(rows)):]
    med = lambda rs, k: round(statistics.median(r.get(k, 0.0) for r in rs), 2)  # noqa: E731
    return {
        "variant": variant, "sampler": f"optuna {sampler}", "trials": n, "n_complete": summary.n_complete,
        "study_wall_s": round(total, 1),
        "end_of_study_s": round(total - sum(r["wall_ms"] for r in rows) / 1000, 2),
        "median_bookkeeping_ms_trials_10_19": med(first, "bookkeeping_ms"),
        "median_bookkeeping_ms_last_100": med(final, "bookkeeping_ms"),
        "median_cpu_ms_trials_10_19": med(first, "cpu_ms"),
        "median_cpu_ms_last_100": med(final, "cpu_ms"),
        "p90_bookkeeping_ms_last_100": round(float(np.percentile([r["bookkeeping_ms"] for r in final], 90)), 2),
        "target_50ms_met": med(final, "bookkeeping_ms") < 50,
        "pieces_ms_trials_10_19": {k: med(first, k) for k in (*PIECES, "other_ms")},
        "pieces_ms_last_100": {k: med(final, k) for k in (*PIECES, "other_ms")},
        "models_kept": len(models), "keep_top_models": keep_top, "predictions_kept": logits,
        "blocks": blocks,
    }


# -- 3. one quickstart trial -------------------------------------------------------------------
def quickstart_trial(work: Path) -> dict[str, Any]:
    """Duration of quickstart trials (experiments/quickstart.yaml: digits, mlp 1-3 x 16-256, 8 epochs)."""
    from hpo.config import load
    from hpo.study import run_study

    cfg = load(ROOT / "experiments" / "quickstart.yaml")
    cfg.study.n_trials = 3
    cfg.study.run_dir = str(work / "quickstart")
    cfg.ensemble.enabled = False
    cfg.guards.enabled = False
    cfg.plots.enabled = False
    cfg.report.enabled = False
    cfg.executor.mode = "inprocess"
    summary = run_study(cfg)
    durations = []
    for t in summary.trials:
        r = json.loads((Path(cfg.study.run_dir).resolve() / "trials" / f"{t['number']:05d}" / "result.json").read_text())
        durations.append(r["duration_s"])
    return {"trials": len(durations), "duration_s": [round(d, 2) for d in durations],
            "median_duration_s": round(statistics.median(durations), 2)}


def scale_figures(out_dir: Path, trial_s: float | None) -> dict[str, Any]:
    """Sampler proposal cost and greedy ensembling time from scale.json, set against one quickstart trial."""
    path = out_dir / "scale.json"
    if not path.exists():
        return {"missing": f"{path} (run python -m experiments.scale)"}
    scale = json.loads(path.read_text())
    rows = []
    for r in scale["sampler_cost"]:
        row = dict(r)
        if trial_s:
            row["optuna_tpe_pct_of_quickstart_trial"] = round(100 * r["optuna_tpe_ms"] / 1000 / trial_s, 2)
            row["hyperopt_tpe_pct_of_quickstart_trial"] = round(100 * r["hyperopt_tpe_ms"] / 1000 / trial_s, 2)
        rows.append(row)
    return {"source": "experiments/results/scale.json", "command": scale.get("command"), "date": scale.get("date"),
            "sampler_cost": rows, "greedy_cost": scale["greedy_cost"]}


PARTS = ("bookkeeping", "memory", "workers", "quickstart")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=2000, help="bookkeeping study length (trivial objective)")
    ap.add_argument("--baseline-trials", type=int, default=300,
                    help="bookkeeping study length for the slower variants kept for comparison")
    ap.add_argument("--memory-trials", type=int, default=200, help="in-process memory study length (real tiny fits)")
    ap.add_argument("--worker-trials", type=int, default=None, help="worker-memory study length (default: memory-trials)")
    ap.add_argument("--recycle-after", type=int, default=10, help="executor.recycle_after of the worker-memory study")
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS,
                    help="what to run; the others are kept from an existing results file")
    ap.add_argument("--out", default="experiments/results")
    ap.add_argument("--work", default=None, help="where the studies are written (default: a temporary directory)")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from experiments._common import header, write_result

    tmp = tempfile.TemporaryDirectory(prefix="long_study-") if args.work is None else None
    work = Path(args.work or tmp.name).resolve()  # type: ignore[union-attr]
    work.mkdir(parents=True, exist_ok=True)
    new: dict[str, Any] = {}
    if "bookkeeping" in args.parts:
        rows = [bookkeeping(args.baseline_trials, work, "random", "rollback_journal"),
                bookkeeping(args.baseline_trials, work, "random", "optuna_wal"),
                bookkeeping(args.trials, work, "random", "optuna_wal+mlflow_wal"),
                bookkeeping(args.trials, work, "tpe", "optuna_wal+mlflow_wal")]
        for b in rows:
            print({k: v for k, v in b.items() if k != "blocks"}, flush=True)
        new["bookkeeping"] = {"command": f"python -m experiments.long_study --parts bookkeeping --trials {args.trials} "
                                         f"--baseline-trials {args.baseline_trials}", "runs": rows}
    if "memory" in args.parts:
        new["memory_inprocess"], new["memory_inprocess_before_fix"] = memory_side_by_side(args.memory_trials, work)
        for key in ("memory_inprocess", "memory_inprocess_before_fix"):
            print({k: v for k, v in new[key].items() if k != "curve_every_10"}, flush=True)
    if "workers" in args.parts:
        new["memory_workers"] = memory_workers(args.worker_trials or args.memory_trials, work, args.recycle_after)
        print({k: v for k, v in new["memory_workers"].items() if k != "curve_every_10"}, flush=True)
    if "quickstart" in args.parts:
        new["quickstart_trial"] = quickstart_trial(work)
        print(new["quickstart_trial"], flush=True)
    target = Path(args.out) / "long_study.json"
    out: dict[str, Any] = json.loads(target.read_text()) if target.exists() else {}
    out.update(header("experiments.long_study", argv))
    out.setdefault("runs_of_parts", {})
    for k, v in new.items():
        out[k] = v
    for part in args.parts:
        out["runs_of_parts"][part] = {"command": out["command"], "date": out["date"]}
    q = out.get("quickstart_trial", {}).get("median_duration_s")
    out["sampler_and_ensembling_at_scale"] = scale_figures(Path(args.out), q)
    out["targets"] = targets(out)
    out["why_targets_are_not_met"] = WHY_NOT_MET
    out["inprocess_memory_cause"] = MEMORY_CAUSE
    write_result(args.out, "long_study", out)
    print(json.dumps(out["targets"], indent=1))
    return 0


MEMORY_CAUSE = (
    "The growth was TensorFlow's and had one source: every trace of a Keras train step goes through the "
    "optimizer's all-reduce, a tf.custom_gradient, which in graph mode registers a uniquely named gradient "
    "function in a process-wide registry and never removes it; the function's closure keeps the traced graph "
    "(its Operations and tensors, ~6,800 Python objects per trial) alive, and clear_session and gc.collect "
    "cannot free it. hpo.execution.memory.forget_trace_gradients unregisters them after each trial; a bare "
    "build/fit/clear_session loop went from +4.1 MB per model to 0 with it.")

WHY_NOT_MET = {
    "bookkeeping": (
        "What remains per trial is Optuna's RDB storage code (a commit per sampled parameter, the ask and the "
        "tell) and MLflow's SQLAlchemy store (run creation, params, per-epoch batches, termination), each "
        "measured by the timer breakdown; the result files, model retention and logits writes are a few ms. "
        "Meeting 50 ms needs fewer round trips (batching Optuna's writes, an in-memory Optuna storage "
        "journalled to disk) rather than a faster disk."),
}


def targets(out: dict[str, Any]) -> dict[str, Any]:
    t: dict[str, Any] = {}
    m = out.get("memory_inprocess")
    if m:
        g = m["growth_after_trial_10_mb"]
        t["inprocess_rss_within_200mb_of_trial_10"] = {
            "met": g is not None and g <= 200 and m["n_complete"] >= 200, "growth_mb": g, "trials": m["n_complete"],
            "executor": m.get("executor"), "slope_kb_per_trial": m["slope_second_half_kb_per_trial"]}
        before = out.get("memory_inprocess_before_fix")
        if before and before.get("trials_per_hour") and m.get("trials_per_hour"):
            ratio = m["trials_per_hour"] / before["trials_per_hour"]
            t["throughput_within_10pct_of_before_fix"] = {
                "met": ratio >= 0.9, "trials_per_hour": m["trials_per_hour"],
                "trials_per_hour_before_fix": before["trials_per_hour"], "ratio": round(ratio, 3),
                "growth_before_fix_mb": before["growth_after_trial_10_mb"]}
    w = out.get("memory_workers")
    if w:
        growth = max((p["growth_mb"] for p in w["per_worker"]), default=None)
        t["worker_rss_bounded_by_recycling"] = {"recycle_after": w["recycle_after"], "workers_started": w["workers_started"],
                                                "max_growth_within_one_worker_mb": growth,
                                                "met": growth is not None and growth <= 200}
    b = out.get("bookkeeping")
    if b:
        t["bookkeeping_under_50ms_at_last_100_trials"] = {
            f"{r['variant']} / {r['sampler']} / {r['trials']} trials": {
                "median_ms": r["median_bookkeeping_ms_last_100"], "median_cpu_ms": r.get("median_cpu_ms_last_100"),
                "met": r["target_50ms_met"]} for r in b["runs"]}
    return t


if __name__ == "__main__":
    sys.exit(main())
