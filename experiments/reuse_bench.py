"""A trial on a freshly built and compiled model against the same trial on the kept compiled model of its
architecture (``hpo.execution.reuse``), side by side under TensorFlow and under JAX on CPU; and what a JAX
study's start-up compiles.

    python -m experiments.reuse_bench [--reps 5] [--epochs 8] [--units 128] [--backends tensorflow jax]

Each backend runs in its own fresh process (a process has one Keras backend): the digits data and the ``mlp``
space are prepared (under JAX every backend compilation during that start-up is recorded through
``jax.monitoring``), one untimed trial warms the process up, then each repetition runs, alternating, a trial on a
freshly built model with no kept model to reuse (``clear_twins()`` first: it builds, traces and compiles its own
steps) and the same trial again (same seed, learning rate and architecture), which trains the model the first
one left compiled, loaded with its own freshly built initial state. Both are ``run_trial`` calls: an MLP
64-h-h-10 on digits, fit with the select split as validation, then the predictions of select, audit and test.
The reused trial must give exactly the fresh trial's history and objective; the file records whether it did.
JAX's persistent compilation cache is off in the child (``HPO_JAX_CACHE_DIR=off``) so a fresh trial compiles
its steps rather than loading them from an earlier repetition. Writes ``experiments/results/reuse_bench.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def _log(msg: str) -> None:
    print(f"[reuse_bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- the child: one backend ---------------------------------------------------------------------------------------
def child(backend: str, reps: int, epochs: int, units: int, out: Path) -> None:
    compiled: list[tuple[float, str, float]] = []
    if backend == "jax":
        from jax import monitoring

        def on_duration(event: str, duration: float, **kw: Any) -> None:
            if event == COMPILE_EVENT:
                compiled.append((time.monotonic(), str(kw.get("fun_name", "")), float(duration)))

        monitoring.register_event_duration_secs_listener(on_duration)

    from hpo.config import from_dict
    from hpo.execution.reuse import clear_twins
    from hpo.execution.trial import TrialSettings, run_trial
    from hpo.study.prepare import prepare

    t0 = time.monotonic()
    cfg = from_dict({"study": {"name": "reuse"}, "data": {"dataset": "digits"}, "space": {"builder": "mlp"},
                     "training": {"epochs": epochs, "batch_size": 64}})
    build, splits, space = prepare(cfg)
    startup = {"wall_s": time.monotonic() - t0, "compilations": [f for _, f, _ in compiled],
               "compile_s": sum(s for _, _, s in compiled)}
    base = {**space.defaults(), "layers": 2, "units": units, "dropout": 0.0, "optimizer": "adam"}
    settings = TrialSettings(epochs=epochs, batch_size=64, save_models=False, audit_per_epoch=False)
    tmp = Path(tempfile.mkdtemp(prefix="reuse-bench-"))
    number = iter(range(10_000))

    def trial(seed: int, lr: float) -> dict[str, Any]:
        n = next(number)
        before = len(compiled)
        start = time.monotonic()
        r = run_trial(number=n, params={**base, "learning_rate": lr}, seed=seed, build=build, space=space,
                      splits=splits, settings=settings, trial_dir=tmp / str(n))
        wall = time.monotonic() - start
        assert r.state.name == "COMPLETE", r.error
        comp = compiled[before:]
        return {"wall_s": wall, "duration_s": r.duration_s, "fit_s": r.measures["epoch_seconds"] * r.epochs,
                "compilations": len(comp), "compile_s": sum(s for _, _, s in comp), "value": r.value,
                "history": r.history}

    clear_twins()
    trial(1, 1e-3)  # warm-up: the first trial of a process pays for imports and the data pipeline
    rows = []
    for rep in range(reps):
        seed, lr = 100 + rep, 10 ** (-3 + 0.25 * rep)
        clear_twins()
        fresh = trial(seed, lr)
        reused = trial(seed, lr)
        rows.append({"rep": rep, "seed": seed, "learning_rate": lr, "fresh": fresh, "reused": reused,
                     "identical": fresh["history"] == reused["history"] and fresh["value"] == reused["value"]})
        _log(f"{backend} rep {rep}: fresh {fresh['wall_s']:.2f} s, reused {reused['wall_s']:.2f} s")
    for row in rows:
        for k in ("fresh", "reused"):
            row[k].pop("history")
    out.write_text(json.dumps({"backend": backend, "startup": startup, "rows": rows}))


# -- the parent --------------------------------------------------------------------------------------------------
def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    rows = raw["rows"]
    med = statistics.median

    def m(kind: str, key: str) -> float:
        return med(r[kind][key] for r in rows)

    fresh, reused = m("fresh", "wall_s"), m("reused", "wall_s")
    return {
        "fresh_wall_s": fresh, "reused_wall_s": reused, "speedup": fresh / reused if reused else None,
        "saved_share": 1 - reused / fresh if fresh else None,
        "per_rep_ratio": [r["reused"]["wall_s"] / r["fresh"]["wall_s"] for r in rows],
        "fresh_fit_s": m("fresh", "fit_s"), "reused_fit_s": m("reused", "fit_s"),
        "fresh_compilations": m("fresh", "compilations"), "reused_compilations": m("reused", "compilations"),
        "all_identical": all(r["identical"] for r in rows),
        "startup": raw["startup"], "rows": rows,
    }


def run_backend(backend: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    out = work / f"{backend}.json"
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2",
           "JAX_PLATFORMS": "cpu", "HPO_JAX_CACHE_DIR": "off", "HPO_CACHE_DIR": str(work / "cache"),
           "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    env.pop("HPO_REUSE_COMPILED", None)
    cmd = [sys.executable, "-m", "experiments.reuse_bench", "--child", backend, "--reps", str(args.reps),
           "--epochs", str(args.epochs), "--units", str(args.units), "--out", str(out)]
    _log(f"{backend}: child process")
    subprocess.run(cmd, env=env, cwd=str(ROOT), check=True)
    return summarise(json.loads(out.read_text()))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--units", type=int, default=128, help="h of the MLP 64-h-h-10")
    ap.add_argument("--backends", nargs="+", default=["tensorflow", "jax"])
    ap.add_argument("--out-dir", default=str(RESULTS))
    ap.add_argument("--note", default="", help="recorded with the results (e.g. that the machine was shared)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.reps, args.epochs, args.units, Path(args.out))
        return
    from experiments._common import header, write_result

    t0 = time.monotonic()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="hpo-reuse-bench-") as tmp:
        backends = {b: run_backend(b, args, Path(tmp)) for b in args.backends}
    result = header("experiments.reuse_bench", argv) | {
        "settings": {"reps": args.reps, "epochs": args.epochs, "units": args.units, "batch_size": 64,
                     "model": f"MLP 64-{args.units}-{args.units}-10 (mlp space, dropout 0, Adam)",
                     "dataset": "digits", "jax_compilation_cache": "off"},
        "note": args.note, "total_wall_s": round(time.monotonic() - t0, 1),
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
        "backends": backends,
    }
    result["versions"]["keras_backend"] = " and ".join(args.backends) + ", one process each"
    path = write_result(args.out_dir, "reuse_bench", result)
    _log(f"wrote {path}: " + "; ".join(f"{b}: fresh {r['fresh_wall_s']:.2f} s, reused {r['reused_wall_s']:.2f} s"
                                       for b, r in backends.items()))


if __name__ == "__main__":
    main()
