"""XLA compilations of a packed search under JAX on CPU, side by side: a baseline commit against this checkout.

    python -m experiments.pack_compiles [--space widths|fixed] [--baseline REV] [--trials 16] [--pack 4] [--reps 1]

A packed search (``executor.pack``) trains up to N trials of one architecture as one model
(:mod:`hpo.execution.packed`). This counts, for every pack, the XLA compilations that ended while it trained (through
``jax.monitoring``'s ``backend_compile_duration`` event, one per executable), their seconds and the pack's wall time,
in a fresh process per run with an empty compilation cache, the baseline and this checkout alternating. The
study: digits, the ``mlp`` builder (2 layers, relu, Adam) with learning rate, dropout rate and L2 factor searched
per member (TPE, 8 epochs), and ``--space fixed`` 64 units for every trial, ``--space widths`` units searched
from 16 to 128 on a log scale (members of one pack may differ in width). Issue 23's targets: at most 3
compilations per pack of any size, none for a pack whose shapes this process compiled before, and a search over
continuous widths packing and reusing as well as a grid.

Writes ``experiments/results/pack_compiles_<space>.json``; ``python -m experiments.bench --render-only`` renders it.
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
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def study_config(trials: int, pack: int, space: str) -> dict[str, Any]:
    """The packed study both runs search."""
    units = {"fixed": 64} if space == "fixed" else {"min": 16, "max": 128, "log": True}
    return {"study": {"name": "pack-compiles", "seed": 0, "n_trials": trials},
            "driver": {"name": "optuna", "sampler": "tpe", "pruner": "none"}, "data": {"dataset": "digits"},
            "space": {"builder": "mlp", "params": {
                "layers": {"fixed": 2}, "units": units, "activation": {"fixed": "relu"},
                "optimizer": {"fixed": "adam"}, "batchnorm": {"fixed": False}, "use_l2": {"fixed": True},
                "learning_rate": {"min": 3e-4, "max": 1e-2, "log": True}, "dropout": {"min": 0.05, "max": 0.4},
                "l2": {"min": 1e-6, "max": 1e-3, "log": True}}},
            "training": {"epochs": 8, "batch_size": 64}, "executor": {"pack": pack},
            "objective": {"metric": "accuracy", "direction": "maximize"}, "ensemble": {"enabled": False}}


def child(trials: int, pack: int, space: str, run_dir: Path, out: Path) -> None:
    """One packed study in this process; every compilation and every pack's window written to ``out``."""
    from jax import monitoring

    events: list[tuple[float, float, str]] = []
    monitoring.register_event_duration_secs_listener(
        lambda e, d, **k: events.append((time.monotonic(), float(d), str(k.get("fun_name", ""))))
        if e == COMPILE_EVENT else None)
    import hpo.execution.packed as packed
    from hpo.config import from_dict
    from hpo.study import run_study

    windows: list[tuple[float, float, list[int], list[Any]]] = []
    inner = packed.train_pack

    def timed(**kw: Any) -> Any:  # the window of each pack, to attribute compilations to it
        t0 = time.monotonic()
        res = inner(**kw)
        windows.append((t0, time.monotonic(), list(kw["numbers"]), [p.get("units") for p in kw["params"]]))
        return res

    packed.train_pack = timed
    cfg = from_dict(study_config(trials, pack, space))
    cfg.study.run_dir = str(run_dir)
    t0 = time.monotonic()
    run_study(cfg)
    wall = time.monotonic() - t0
    packs = []
    for a, b, numbers, units in sorted(windows):
        ev = [e for e in events if a <= e[0] < b]
        packs.append({"trials": numbers, "members": len(numbers), "units": units, "wall_s": round(b - a, 3),
                      "compilations": len(ev), "compile_s": round(sum(e[1] for e in ev), 3),
                      "functions": dict(Counter(e[2] for e in ev))})
    out.write_text(json.dumps({"packs": packs, "wall_s": wall, "compilations": len(events)}))


def _summary(raw: dict[str, Any]) -> dict[str, Any]:
    packs = raw["packs"]
    later = packs[1:] or packs
    return {"packs": len(packs), "study_wall_s": round(raw["wall_s"], 2), "study_compilations": raw["compilations"],
            "first_pack_compilations": packs[0]["compilations"] if packs else None,
            "later_pack_compilations_median": statistics.median(p["compilations"] for p in later) if later else None,
            "packs_compiling_nothing": sum(1 for p in packs if p["compilations"] == 0),
            "pack_wall_s_median": statistics.median(p["wall_s"] for p in packs) if packs else None,
            "pack_compile_share_median": statistics.median(p["compile_s"] / p["wall_s"] for p in packs) if packs else None,
            "per_pack": [{k: v for k, v in p.items() if k != "functions"}
                         | {"functions": ", ".join(f"{k} x{n}" for k, n in sorted(p["functions"].items()))}
                         for p in packs]}


def run_once(code: Path, trials: int, pack: int, space: str, work: Path, tag: str) -> dict[str, Any]:
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "HPO_CACHE_DIR": str(work / f"cache-{tag}"),
           "PYTHONPATH": str(code), "TF_CPP_MIN_LOG_LEVEL": "2", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    out = work / f"{tag}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--trials", str(trials), "--pack", str(pack),
           "--space", space, "--run-dir", str(work / f"run-{tag}"), "--out", str(out)]
    print(f"[pack_compiles {time.strftime('%H:%M:%S')}] {tag} with hpo from {code}", flush=True)
    subprocess.run(cmd, env=env, cwd=str(code), check=True)
    return _summary(json.loads(out.read_text()))


def _checkout(rev: str, into: Path) -> Path:
    """The files of ``rev`` of this repository, unpacked into ``into``."""
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", choices=("widths", "fixed"), default="widths")
    ap.add_argument("--baseline", default="c11d6ed", help="git revision measured beside this checkout")
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--pack", type=int, default=4)
    ap.add_argument("--reps", type=int, default=1, help="runs of each, alternating")
    ap.add_argument("--out-dir", default=str(ROOT / "experiments" / "results"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.trials, args.pack, args.space, Path(args.run_dir), Path(args.out))
        return
    sys.path.insert(0, str(ROOT))
    from experiments._common import header, write_result

    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "this": []}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="hpo-pack-compiles-") as tmp:
        base = _checkout(args.baseline, Path(tmp) / "baseline")
        for rep in range(args.reps):
            for name, code in (("baseline", base), ("this", ROOT)):
                runs[name].append(run_once(code, args.trials, args.pack, args.space, Path(tmp), f"{name}-{rep}"))
    result = header("experiments.pack_compiles", argv) | {
        "settings": {"baseline": args.baseline, "space": args.space, "trials": args.trials, "pack": args.pack,
                     "reps": args.reps, "keras_backend": "jax", "platform": "cpu",
                     "study": study_config(args.trials, args.pack, args.space)},
        "baseline": runs["baseline"][0], "this_checkout": runs["this"][0],
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
        "note": "the counts do not depend on the machine's load; wall and compile seconds do (load_average: 1, 5 "
                "and 15 minute averages before and after)",
    }
    result["versions"]["keras_backend"] = "jax"
    path = write_result(args.out_dir, f"pack_compiles_{args.space}", result)
    b, t = runs["baseline"][0], runs["this"][0]
    print(f"wrote {path}: compilations per later pack {b['later_pack_compilations_median']} -> "
          f"{t['later_pack_compilations_median']}; first pack {b['first_pack_compilations']} -> "
          f"{t['first_pack_compilations']}; study wall {b['study_wall_s']} -> {t['study_wall_s']} s")


if __name__ == "__main__":
    main()
