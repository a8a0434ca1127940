"""XLA compilations of a search under JAX on CPU: how many, how long, and when (study start-up, each trial, after).

    python -m experiments.compiles [--config experiments/quickstart.yaml] [--trials 12] [--code DIR] [--label L]

The count of compilations does not depend on the card, so it is measured here on CPU with
``KERAS_BACKEND=jax``. The study runs in-process twice, each time in a fresh Python process: a first run with
an empty cache directory (``HPO_CACHE_DIR`` points at a new temporary folder) and a rerun of the same study
with that folder kept, so the rerun shows what JAX's persistent compilation cache saves. Every backend
compilation is counted through ``jax.monitoring`` (the ``/jax/core/compile/backend_compile_duration`` event,
one per XLA executable, a persistent-cache hit included, which ``/jax/compilation_cache/cache_hits`` marks),
together with the seconds JAX spent tracing and lowering. An event belongs to the trial whose ``run_trial`` call
was running when it ended; the ones before the first trial are the study's start-up (data, space discovery,
preflight), the ones after the last the summary and ensemble.

``--ab-rounds N`` runs the first run only, with the study's train step compiled ahead of its first trial and
without (``HPO_COMPILE_AHEAD`` on and off, alternating, N rounds) and writes ``ahead_ab.json``.

``--code DIR`` imports ``hpo`` from another checkout (``--code /work/main --label main``: the baseline of
today's main). Writes ``experiments/results/compiles_<label>.json``; ``python -m experiments.bench
--render-only`` renders it.
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
TRACE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration")
HIT_EVENT = "/jax/compilation_cache/cache_hits"


def _log(msg: str) -> None:
    print(f"[compiles {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- the child: one study, every compilation recorded ------------------------------------------------------------
def child(config: str, trials: int, run_dir: Path, out: Path) -> None:
    """Run the study once in this process and write its compilations and trial windows to ``out``."""
    import jax
    from jax import monitoring

    events: list[dict[str, Any]] = []
    hits: list[float] = []

    def on_duration(event: str, duration: float, **kw: Any) -> None:
        if event == COMPILE_EVENT or event in TRACE_EVENTS:
            events.append({"event": event, "end": time.monotonic(), "s": float(duration),
                           "fun": str(kw.get("fun_name", ""))})

    def on_event(event: str, **kw: Any) -> None:
        if event == HIT_EVENT:
            hits.append(time.monotonic())

    monitoring.register_event_duration_secs_listener(on_duration)
    monitoring.register_event_listener(on_event)

    import hpo.study.trials as trials_mod
    from hpo.config import load
    from hpo.study import run_study

    windows: list[dict[str, Any]] = []
    inner = trials_mod.run_trial

    def timed_run_trial(**kwargs: Any) -> Any:  # the window of each trial, to attribute compilations to it
        t0 = time.monotonic()
        result = inner(**kwargs)
        windows.append({"number": kwargs["number"], "start": t0, "end": time.monotonic(),
                        "params": {k: v for k, v in kwargs["params"].items()}, "state": str(result.state.name)})
        return result

    trials_mod.run_trial = timed_run_trial
    cfg = load(config)
    cfg.study.run_dir = str(run_dir)
    cfg.study.n_trials = trials
    t0 = time.monotonic()
    summary = run_study(cfg)
    t1 = time.monotonic()
    results = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    out.write_text(json.dumps({
        "start": t0, "end": t1, "windows": windows, "events": events, "hits": hits,
        "jax": jax.__version__, "backend": os.environ.get("KERAS_BACKEND"),
        "compilation_cache_dir": jax.config.jax_compilation_cache_dir,
        "best_value": getattr(summary, "best_value", None),
        "summary_compilation_cache": results.get("compilation_cache"),
    }, default=str))


# -- the parent: two fresh processes, then the results file -------------------------------------------------------
def _phase(events: list[dict[str, Any]], hits: list[float], lo: float, hi: float) -> dict[str, Any]:
    comp = [e for e in events if e["event"] == COMPILE_EVENT and lo <= e["end"] < hi]
    trace = [e for e in events if e["event"] in TRACE_EVENTS and lo <= e["end"] < hi]
    wall = hi - lo
    compile_s = sum(e["s"] for e in comp)
    n_hits = sum(1 for h in hits if lo <= h < hi)
    return {"wall_s": round(wall, 3), "compilations": len(comp), "cache_hits": n_hits,
            "compile_s": round(compile_s, 3), "trace_lower_s": round(sum(e["s"] for e in trace), 3),
            "compile_share": round(compile_s / wall, 4) if wall > 0 else None,
            "functions": sorted({e["fun"] for e in comp})}


def analyse(raw: dict[str, Any]) -> dict[str, Any]:
    """Start-up, per trial, after the trials, and the totals of one run."""
    ev, hits, wins = raw["events"], raw["hits"], sorted(raw["windows"], key=lambda w: w["start"])
    first = wins[0]["start"] if wins else raw["end"]
    last = wins[-1]["end"] if wins else raw["end"]
    per_trial = []
    for w in wins:
        p = _phase(ev, hits, w["start"], w["end"])
        inside = [e for e in ev if e["event"] == COMPILE_EVENT and w["start"] <= e["end"] < w["end"]]
        named = [e["fun"] for e in inside]
        secs = {f: sum(e["s"] for e in inside if e["fun"] == f) for f in set(named)}
        per_trial.append({"trial": w["number"], "state": w["state"], **{k: v for k, v in p.items() if k != "functions"},
                          "functions": ", ".join(f"{f} x{named.count(f)} ({secs[f]:.2f} s)" for f in sorted(set(named))),
                          # a trial that compiles no train step trained a model (or template) compiled before
                          "new_train_step": "jit(train_step)" in p["functions"],
                          "params": ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                              for k, v in sorted(w["params"].items()))})
    steady = per_trial[1:] or per_trial
    new = [t for t in steady if t["new_train_step"]]
    repeated = [t for t in steady if not t["new_train_step"]]
    total = _phase(ev, hits, raw["start"], raw["end"] + 1)
    return {
        "startup": _phase(ev, hits, raw["start"], first), "after_trials": _phase(ev, hits, last, raw["end"] + 1),
        "trials": per_trial, "total": {k: v for k, v in total.items() if k != "functions"},
        "per_trial": {
            "compilations_median": statistics.median(t["compilations"] for t in steady) if steady else None,
            "compilations_max": max((t["compilations"] for t in steady), default=None),
            "zero_compilation_trials": sum(1 for t in per_trial if t["compilations"] == 0),
            # the measure: every trial's compile seconds over every trial's wall seconds, the first included
            "all_trials_compile_s": round(sum(t["compile_s"] for t in per_trial), 3),
            "all_trials_wall_s": round(sum(t["wall_s"] for t in per_trial), 3),
            "all_trials_compile_share": round(sum(t["compile_s"] for t in per_trial)
                                              / max(sum(t["wall_s"] for t in per_trial), 1e-9), 4),
            "compile_share_median": statistics.median(t["compile_share"] for t in steady) if steady else None,
            "wall_s_median": statistics.median(t["wall_s"] for t in steady) if steady else None,
            "first_trial_excluded": len(per_trial) > 1,
            "new_structure_trials": len(new),
            "new_structure_compile_share_median": statistics.median(t["compile_share"] for t in new) if new else None,
            "new_structure_compile_s_median": statistics.median(t["compile_s"] for t in new) if new else None,
            "repeated_structure_trials": len(repeated),
            "repeated_structure_compilations_max": max((t["compilations"] for t in repeated), default=None),
            "repeated_structure_wall_s_median": statistics.median(t["wall_s"] for t in repeated) if repeated else None,
        },
        "compilation_cache_dir": raw.get("compilation_cache_dir"),
        "summary_compilation_cache": raw.get("summary_compilation_cache"),
    }


def run_once(code: Path, config: str, trials: int, cache: Path, work: Path, tag: str,
             extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    env = {**os.environ, "KERAS_BACKEND": "jax", "HPO_CACHE_DIR": str(cache), "PYTHONPATH": str(code),
           "TF_CPP_MIN_LOG_LEVEL": "2", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "JAX_PLATFORMS": "cpu",
           **(extra_env or {})}
    out = work / f"{tag}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--config", config, "--trials", str(trials),
           "--run-dir", str(work / f"run-{tag}"), "--out", str(out)]
    _log(f"{tag}: {' '.join(cmd[1:3])} with hpo from {code}")
    subprocess.run(cmd, env=env, cwd=str(code), check=True)
    return analyse(json.loads(out.read_text()))


def _ab_row(r: dict[str, Any]) -> dict[str, Any]:
    first = r["trials"][0] if r["trials"] else {"wall_s": 0.0, "compile_s": 0.0}
    return {"study_wall_s": r["total"]["wall_s"], "startup_wall_s": r["startup"]["wall_s"],
            "startup_compiled": r["startup"]["functions"], "startup_compile_s": r["startup"]["compile_s"],
            "first_trial_wall_s": first["wall_s"], "first_trial_compile_s": first["compile_s"],
            "startup_plus_first_trial_s": round(r["startup"]["wall_s"] + first["wall_s"], 3),
            "trials_compile_share": r["per_trial"]["all_trials_compile_share"],
            "trials_wall_s": r["per_trial"]["all_trials_wall_s"], "compilations": r["total"]["compilations"]}


def ahead_ab(args: argparse.Namespace, argv: list[str] | None) -> None:
    """``--ab-rounds N``: the study with the train step compiled ahead (``HPO_COMPILE_AHEAD=on``) and without
    (``off``), alternating, each run in a fresh process with an empty cache folder; writes ``ahead_ab.json``."""
    sys.path.insert(0, str(ROOT))
    from experiments._common import git_commit, header, write_result

    code = Path(args.code).resolve()
    config = str((ROOT / args.config).resolve()) if not Path(args.config).is_absolute() else args.config
    rows: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    for i in range(args.ab_rounds):
        for mode in (("on", "off") if i % 2 == 0 else ("off", "on")):  # alternating which goes first
            with tempfile.TemporaryDirectory(prefix="hpo-ahead-") as tmp:
                r = run_once(code, config, args.trials, Path(tmp) / "cache", Path(tmp), f"{mode}-{i}",
                             {"HPO_COMPILE_AHEAD": mode})
            rows[mode].append(_ab_row(r))
            _log(f"round {i} {mode}: {rows[mode][-1]}")
    keys = ("study_wall_s", "startup_plus_first_trial_s", "startup_wall_s", "first_trial_wall_s",
            "trials_compile_share", "startup_compile_s")
    medians = {m: {k: round(statistics.median(r[k] for r in rows[m]), 4) for k in keys} for m in rows}
    result = header("experiments.compiles", argv) | {
        "settings": {"config": args.config, "trials": args.trials, "code": str(code), "commit": git_commit(code),
                     "rounds": args.ab_rounds, "keras_backend": "jax", "platform": "cpu",
                     "switch": "HPO_COMPILE_AHEAD"},
        "runs": rows, "medians": medians,
        "study_wall_on_over_off": round(medians["on"]["study_wall_s"] / medians["off"]["study_wall_s"], 4),
    }
    result["versions"]["keras_backend"] = "jax"
    path = write_result(args.out_dir, "ahead_ab", result)
    _log(f"wrote {path}: medians {medians}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="experiments/quickstart.yaml")
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--code", default=str(ROOT), help="checkout whose hpo package is measured")
    ap.add_argument("--label", default="branch")
    ap.add_argument("--out-dir", default=str(RESULTS))
    ap.add_argument("--ab-rounds", type=int, default=0,
                    help="rounds of the study with and without its train step compiled ahead (ahead_ab.json)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.config, args.trials, Path(args.run_dir), Path(args.out))
        return
    if args.ab_rounds:
        ahead_ab(args, argv)
        return
    sys.path.insert(0, str(ROOT))
    from experiments._common import git_commit, header, write_result

    code = Path(args.code).resolve()
    config = str((ROOT / args.config).resolve()) if not Path(args.config).is_absolute() else args.config
    with tempfile.TemporaryDirectory(prefix="hpo-compiles-") as tmp:
        work, cache = Path(tmp), Path(tmp) / "cache"
        first = run_once(code, config, args.trials, cache, work, "first")
        rerun = run_once(code, config, args.trials, cache, work, "rerun")
    ratio = rerun["total"]["compile_s"] / first["total"]["compile_s"] if first["total"]["compile_s"] else None
    result = header("experiments.compiles", argv) | {
        "settings": {"config": args.config, "trials": args.trials, "code": str(code), "commit": git_commit(code),
                     "label": args.label, "keras_backend": "jax", "platform": "cpu"},
        "first": first, "rerun": rerun, "rerun_compile_s_ratio": round(ratio, 4) if ratio is not None else None,
    }
    result["versions"]["keras_backend"] = "jax"
    base_file = Path(args.out_dir) / "compiles_main.json"
    if args.label != "main" and base_file.exists():  # today's main, for the side-by-side table
        base = json.loads(base_file.read_text())
        result["baseline"] = {"file": f"experiments/results/{base_file.name}", "commit": base["settings"].get("commit"),
                              "first": base["first"]}
    path = write_result(args.out_dir, f"compiles_{args.label}", result)
    _log(f"wrote {path}: first {first['total']['compilations']} compilations, {first['total']['compile_s']:.1f} s "
         f"of {first['total']['wall_s']:.1f} s; rerun {rerun['total']['compile_s']:.1f} s")


if __name__ == "__main__":
    main()
