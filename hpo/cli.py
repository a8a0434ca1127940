"""The ``hpo`` command: a thin layer over the Python API.

    hpo run experiments/quickstart.yaml [--driver hyperopt] [--n-trials N] [--workers K | --pack N] [--storage URL] [--quiet]
    hpo worker --study NAME --storage postgresql://user@host/db [--workers K]
    hpo sync runs/quickstart        # deliver MLflow calls queued while the tracking store was unreachable
    hpo bench [NAME...]             # the benchmark suite; rewrites experiments/RESULTS.md
    hpo ensemble runs/quickstart [--method greedy|top_k] [--top-k N] [--combine probs|logits|geometric|vote]
    hpo ui runs/quickstart [--port 5000]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def _config_from_storage(study: str, storage: str, wait_s: float = 0.0) -> Any:
    """The config a study was created with, as stored in its Optuna storage (waiting ``wait_s`` for it to appear)."""
    import optuna

    from hpo import config as config_mod
    from hpo.drivers.optuna_driver import CONFIG_ATTR, racing_schema, resolve_storage
    from hpo.errors import ConfigError

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    deadline = time.monotonic() + wait_s
    opened = resolve_storage(storage)
    if isinstance(opened, str):  # one engine for every poll, not one per poll
        url = opened
        # Workers started with their owner on a new database race it to create Optuna's tables.
        opened = racing_schema(lambda: optuna.storages.RDBStorage(url))
    while True:
        try:
            found = optuna.load_study(study_name=study, storage=opened)
            raw = found.user_attrs.get(CONFIG_ATTR)
            if raw is not None:
                break
        except KeyError as exc:
            if time.monotonic() >= deadline:
                raise ConfigError("study", f"no study {study!r} in this storage; start it with `hpo run CONFIG` "
                                           "(driver.storage set to this URL) or pass the config file to `hpo worker`"
                                  ) from exc
        if time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    if raw is None:
        raise ConfigError("study", f"study {study!r} holds no hpo config; pass the config file to `hpo worker`")
    raw = dict(raw)
    raw["driver"] = {**raw["driver"], "storage": storage}  # the stored URL is redacted
    return config_mod.from_dict(raw)


def _cmd_worker(args: argparse.Namespace) -> int:
    return _cmd_run(args, role="worker")


def _cmd_run(args: argparse.Namespace, role: str = "owner") -> int:
    from hpo import config as config_mod
    from hpo.errors import ConfigError, HpoError
    from hpo.study import StudyProgress, run_study
    from hpo.trial import TrialResult

    try:
        if args.config:
            cfg = config_mod.load(args.config)
        elif role == "worker" and args.study and args.storage:
            cfg = _config_from_storage(args.study, args.storage, args.wait)
        else:
            raise ConfigError("config", "give a config file, or --study NAME and --storage URL")
        if args.storage:
            cfg.driver.storage = args.storage
        if args.tracking_uri:
            cfg.tracking.uri = args.tracking_uri
        if cfg.tracking.uri and "***" in cfg.tracking.uri:
            raise ConfigError("tracking.uri", "the stored tracking URI has its password redacted; pass --tracking-uri")
        if args.workers is not None:
            from hpo.executor import visible_gpus

            cfg.executor.mode = "processes"
            if visible_gpus() and cfg.executor.gpus != []:
                cfg.executor.workers_per_gpu = args.workers
            else:
                cfg.executor.cpu_workers = args.workers
        if getattr(args, "pack", None) is not None:
            cfg.executor.pack = args.pack
        if getattr(args, "driver", None):
            cfg.driver.name = args.driver
            cfg.driver.sampler = args.sampler or config_mod.SAMPLERS.get(args.driver, ("tpe",))[0]
        elif getattr(args, "sampler", None):
            cfg.driver.sampler = args.sampler
        if getattr(args, "n_trials", None) is not None:
            cfg.study.n_trials = args.n_trials
        if args.run_dir:
            cfg.study.run_dir = args.run_dir
        if getattr(args, "name", None):
            cfg.study.name = args.name
        config_mod.validate(cfg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    live = None
    if not args.quiet and sys.stdout.isatty():
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        live = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
        trials_task = live.add_task("trials", total=cfg.study.n_trials, info="")
        epoch_task = live.add_task("epochs", total=cfg.training.epochs, info="")

    def on_epoch_end(number: int, epoch: int, total: int, logs: Any) -> None:
        if live is not None:
            value = logs.get("val_" + cfg.objective.metric)
            live.update(epoch_task, completed=epoch, total=total,
                        info=f"trial {number}" + (f" select={value:.4f}" if value is not None else ""))

    def on_trial_end(r: TrialResult, p: StudyProgress) -> None:
        if args.quiet:
            return
        eta = p.elapsed_s / max(p.done, 1) * max(p.total - p.done, 0)
        detail = f"select={_fmt(r.value)} audit={_fmt(r.metrics.get('audit_' + cfg.objective.metric))}" \
            if r.value is not None else (r.error or "")[:120]
        line = (f"[{p.done}/{p.total}] trial {r.number} {r.state.value:<8} {detail}  "
                f"best={_fmt(p.best_value)} failed={p.failed} pruned={p.pruned} "
                f"elapsed={p.elapsed_s:.0f}s eta={eta:.0f}s")
        if live is not None:
            live.console.print(line)
            live.update(trials_task, completed=p.done,
                        info=f"best={_fmt(p.best_value)} failed={p.failed} pruned={p.pruned}")
        else:
            print(line, flush=True)

    if not args.quiet:
        print(f"{'worker on ' if role == 'worker' else ''}study {cfg.study.name!r}: {cfg.study.n_trials} trials, "
              f"driver {cfg.driver.name}/{cfg.driver.sampler}, {cfg.space.builder} on {cfg.data.dataset}, "
              f"run dir {cfg.run_dir}", flush=True)
    try:
        if live is not None:
            with live:
                summary = run_study(cfg, on_trial_end=on_trial_end, on_epoch_end=on_epoch_end, role=role)
        else:
            summary = run_study(cfg, on_trial_end=on_trial_end, role=role)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except HpoError as exc:  # e.g. the run directory became unwritable: finished trials are kept
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print("interrupted: finished trials are saved; rerun the same command to resume", file=sys.stderr)
        from hpo.errors import StudyInterrupted

        return 143 if isinstance(exc, StudyInterrupted) else 130
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2, default=str))
        return 0
    if role == "worker":
        print(f"worker done in {summary.duration_s:.0f}s: ran {summary.n_complete} complete, {summary.n_pruned} "
              f"pruned, {summary.n_failed} failed; the study's budget is used (its owner, `hpo run`, summarises)")
        return 0
    m = cfg.objective.metric
    print(f"\ndone in {summary.duration_s:.0f}s: {summary.n_complete} complete, {summary.n_pruned} pruned, "
          f"{summary.n_failed} failed")
    if summary.best_trial is not None:
        print(f"best trial {summary.best_trial}: select_{m}={_fmt(summary.best_select)} "
              f"audit_{m}={_fmt(summary.best_audit)}  params={summary.best_params}")
        print("  test (locked split): " + ", ".join(f"{k}={_fmt(v)}" for k, v in summary.best_test.items()))
    if summary.ensemble:
        e = summary.ensemble
        test = {k[5:]: v for k, v in e["metrics"].items() if k.startswith("test_")}
        print(f"ensemble of {len(e['members'])} members (trial, weight): "
              + ", ".join(f"({t}, {w:.2f})" for t, w in e["members"]))
        print("  test: " + ", ".join(f"{k}={_fmt(v)}" for k, v in test.items()))
        print(f"  artifact: {e['artifact_dir']}  mlflow model: {e['model_uri']}")
    if summary.seed_refit:
        sr = summary.seed_refit
        if "skipped" in sr:
            print(f"seed refit skipped: {sr['skipped']}")
        else:
            t = sr["test"]
            print(f"seed refit of the best configuration, {sr['members']} seeds packed in one model "
                  f"({sr['wall_s']:.1f}s): test member median {t['member_accuracy_median']:.4f}, "
                  f"logit average {t['logit_average_accuracy']:.4f}")
    if summary.reselection:
        r = summary.reselection
        print(f"reselection ({r['seeds_per_config']} seeds per configuration): chose trial {r['chosen']} "
              f"(mean select {r['by_trial'][r['chosen']]['select_mean']:.4f}); by a single select score: "
              f"trial {summary.best_trial_by_select}")
    if summary.plots and summary.plots.get("message"):
        print(summary.plots["message"])
    elif summary.plots:
        print("model plots: " + ", ".join(v for k, v in summary.plots.items() if k != "message" and v))
    if summary.stopped_early:
        print(f"stopped early: {summary.stopped_early}")
    if summary.guards:
        g = summary.guards
        print(g["verdict"])
        if g.get("overtuning") is not None:
            print(f"  overtuning (final incumbent's audit minus the best earlier incumbent's): {g['overtuning']:+.4f}")
        if g["overfit"]:
            print("WARNING: the search overfits its select half; trust audit and test, not select "
                  "(tag hpo.guard.overfit=true on the parent run)", file=sys.stderr)
        print(f"  locked test split used {g['test_uses']} time(s)")
        r = g.get("restore_best_epoch")
        if r:
            print(f"  restoring the best select epoch ({r['best_select_epoch']} of {r['last_epoch']}) would have "
                  f"changed audit by {r['audit_change_if_restored']:+.4f}")
    if summary.report:
        print(f"report: {summary.report}")
    print(f"mlflow: {summary.tracking_uri}  (hpo ui {summary.run_dir})")
    return 0


def _resolve_run_dir(arg: str) -> Path:
    """A run directory, or a study name whose run directory is ``runs/<name>``."""
    p = Path(arg)
    if not p.exists() and (Path("runs") / arg).exists():
        return Path("runs") / arg
    return p


def _study_dir(arg: str) -> Path | None:
    """The study's run directory named by ``arg``; None (after saying why) when it holds no study."""
    run_dir = _resolve_run_dir(arg)
    if not (run_dir / "study.json").exists():
        print(f"error: run_dir: {run_dir} holds no study (no study.json); give the study's run directory",
              file=sys.stderr)
        return None
    return run_dir


def _cmd_ensemble(args: argparse.Namespace) -> int:
    from ensembles import build_ensemble
    from hpo.tracking import default_tracking_uri

    run_dir = _study_dir(args.run_dir)
    if run_dir is None:
        return 2
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    parent = summary.get("parent_run_id")
    recorded = summary.get("tracking_uri")
    uri = args.tracking_uri or (recorded if recorded and "***" not in recorded else default_tracking_uri(run_dir))
    rep = build_ensemble(run_dir, method=args.method, combine=args.combine, size=args.top_k, metric=args.metric,
                         temperature=args.temperature, distinct_configs=args.distinct, out_dir=args.out,
                         tracking_uri=uri, parent_run_id=parent)
    print(f"ensemble ({rep.method}, {rep.combine}) of {len(rep.members)} members: "
          + ", ".join(f"trial {m['trial']} x{m['count']}" for m in rep.members))
    for split in ("select", "audit", "test"):
        ens = {k[len(split) + 1:]: v for k, v in rep.metrics.items() if k.startswith(split + "_")}
        one = {k[len(split) + 1:]: v for k, v in rep.best_single["metrics"].items() if k.startswith(split + "_")}
        print(f"  {split:<6} ensemble: " + ", ".join(f"{k}={v:.4f}" for k, v in ens.items())
              + "   best single: " + ", ".join(f"{k}={v:.4f}" for k, v in one.items()))
    print(f"artifact: {rep.artifact_dir}  mlflow model: {rep.model_uri}")
    return 0


def _serve(cmd: list[str]) -> int:
    """Run a server command; Ctrl-C or SIGTERM stops it and its process group."""
    import signal

    proc = subprocess.Popen(cmd, start_new_session=True)

    def stop(*_: Any) -> None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, stop)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        stop()
        return proc.wait()


def _cmd_ui(args: argparse.Namespace) -> int:
    from hpo.tracking import default_tracking_uri

    run_dir = _resolve_run_dir(args.run_dir)
    uri = args.tracking_uri or default_tracking_uri(run_dir)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)]
    if not args.tracking_uri:
        cmd += ["--default-artifact-root", (run_dir / "mlartifacts").resolve().as_uri()]
    print(f"MLflow UI for {run_dir} on http://{args.host}:{args.port}  (Ctrl-C stops it)", flush=True)
    return _serve(cmd)


def _cmd_report(args: argparse.Namespace) -> int:
    from hpo.analysis.report import build_report
    from hpo.tracking import default_tracking_uri

    run_dir = _resolve_run_dir(args.run_dir)
    if not (run_dir / "summary.json").exists():
        print(f"error: run_dir: {run_dir} holds no finished study (no summary.json)", file=sys.stderr)
        return 2
    path = build_report(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    uri = args.tracking_uri or (summary["tracking_uri"] if "***" not in summary["tracking_uri"]
                                else default_tracking_uri(run_dir))
    try:
        from mlflow.tracking import MlflowClient

        MlflowClient(uri).log_artifact(summary["parent_run_id"], str(path))
        where = f"logged to the parent run {summary['parent_run_id']}"
    except Exception as exc:  # the report itself is written; tracking may be elsewhere or down
        where = f"not logged to MLflow ({type(exc).__name__}: {str(exc)[:120]})"
    print(f"report: {path} ({where})")
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    run_dir = _resolve_run_dir(args.run_dir)
    from hpo.drivers import default_storage
    from hpo.drivers.optuna_driver import resolve_storage

    storage = args.storage or default_storage(run_dir)
    try:
        import optuna_dashboard
    except ImportError:
        print("error: optuna-dashboard is not installed: pip install optuna-dashboard", file=sys.stderr)
        return 2
    print(f"optuna-dashboard for {storage.split('@')[-1]} on http://{args.host}:{args.port}  (Ctrl-C stops it)",
          flush=True)
    try:
        optuna_dashboard.run_server(resolve_storage(storage), host=args.host, port=args.port)
    except KeyboardInterrupt:
        pass
    return 0


def _cmd_tensorboard(args: argparse.Namespace) -> int:
    from hpo.tensorboard import ROOT

    logdir = _resolve_run_dir(args.run_dir) / ROOT
    if not logdir.exists():
        print(f"error: run_dir: {logdir} does not exist; run the study with tensorboard: {{enabled: true}}",
              file=sys.stderr)
        return 2
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", args.host, "--port", str(args.port)]
    print(f"TensorBoard for {logdir} on http://{args.host}:{args.port}  (Ctrl-C stops it)", flush=True)
    return _serve(cmd)


def _cmd_bench(args: argparse.Namespace) -> int:
    if (Path.cwd() / "experiments" / "bench.py").exists() and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        from experiments.bench import main as bench_main
    except ImportError:
        print("error: `hpo bench` runs from a checkout of the repository (it needs its experiments/ folder)",
              file=sys.stderr)
        return 2
    return int(bench_main(args.rest) or 0)


def _cmd_sync(args: argparse.Namespace) -> int:
    """Deliver the MLflow calls a study queued while its tracking store was unreachable."""
    import yaml

    from hpo.repro import redact
    from hpo.tracking import OUTBOX, default_tracking_uri, sync

    run_dir = _study_dir(args.run_dir)
    if run_dir is None:
        return 2
    uri = args.tracking_uri
    if uri is None:
        saved = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").exists() else {}
        uri = ((saved or {}).get("tracking") or {}).get("uri") or default_tracking_uri(run_dir)
        if "***" in uri:
            print("error: tracking.uri: the recorded tracking URI has its password redacted; pass --tracking-uri",
                  file=sys.stderr)
            return 2
    if not (run_dir / OUTBOX).exists():
        print(f"nothing to sync: {run_dir} has no queued MLflow calls")
        return 0
    res = sync(run_dir, uri)
    print(f"delivered {res.delivered} queued MLflow calls to {redact(uri)}; {res.remaining} still queued"
          + (f"; {len(res.refused)} refused by the store" if res.refused else ""))
    for reason in res.refused:
        print(f"  refused: {reason}", file=sys.stderr)
    if res.error:
        print(f"error: {res.error}; run `hpo sync {run_dir}` again later", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hpo", description="Hyperparameter search and ensembling for Keras.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run or resume the study a YAML config describes")
    r.add_argument("config")
    r.add_argument("--driver", choices=["optuna", "hyperopt", "kerastuner"])
    r.add_argument("--sampler")
    r.add_argument("--n-trials", type=int)
    r.add_argument("--run-dir")
    r.add_argument("--name", help="study name (default: the config's)")
    r.add_argument("--quiet", action="store_true", help="print only the final summary")
    r.add_argument("--json", action="store_true", help="print the summary as JSON")
    r.add_argument("--storage", help="Optuna storage URL shared with `hpo worker` processes (sets driver.storage)")
    r.add_argument("--tracking-uri", help="MLflow tracking URI (sets tracking.uri)")
    r.add_argument("--workers", type=int, help="worker processes (per GPU when GPUs are visible)")
    r.add_argument("--pack", type=int, help="train up to N trials that share an architecture as one packed model "
                                            "(sets executor.pack; mlp builder)")
    r.set_defaults(fn=_cmd_run)
    w = sub.add_parser("worker", help="join a study in a shared storage and run its trials until its budget is used")
    w.add_argument("config", nargs="?", help="the study's config (default: the one stored with --study/--storage)")
    w.add_argument("--study", help="study name in --storage (the config is read from the storage)")
    w.add_argument("--storage", help="the study's Optuna storage URL, e.g. postgresql://user@host/db")
    w.add_argument("--tracking-uri", help="MLflow tracking URI (default: the study's)")
    w.add_argument("--run-dir", help="where this worker keeps its trials' files (default: runs/<name>)")
    w.add_argument("--workers", type=int, help="worker processes on this machine (per GPU when GPUs are visible)")
    w.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the study to be created")
    w.add_argument("--quiet", action="store_true")
    w.add_argument("--json", action="store_true")
    w.set_defaults(fn=_cmd_worker)
    b = sub.add_parser("bench", help="run the benchmarks in experiments/ and rewrite experiments/RESULTS.md",
                       add_help=False)
    b.add_argument("rest", nargs=argparse.REMAINDER, help="arguments of python -m experiments.bench")
    b.set_defaults(fn=_cmd_bench)
    e = sub.add_parser("ensemble", help="ensemble a finished study's trials")
    e.add_argument("run_dir", help="the study's run directory, or its name (runs/<name>)")
    e.add_argument("--method", choices=["greedy", "top_k"], default="greedy")
    e.add_argument("--top-k", type=int, default=5, help="ensemble size (greedy: the cap)")
    e.add_argument("--combine", choices=["probs", "logits", "geometric", "vote"], default="probs")
    e.add_argument("--metric", choices=["nll", "accuracy"], default="nll", help="what greedy selection optimises")
    e.add_argument("--temperature", action="store_true", help="fit a temperature on select after pooling")
    e.add_argument("--distinct", action="store_true", help="at most one member per identical configuration")
    e.add_argument("--out", help="artifact directory (default <run_dir>/ensemble)")
    e.add_argument("--tracking-uri")
    e.set_defaults(fn=_cmd_ensemble)
    u = sub.add_parser("ui", help="serve the MLflow UI of a study's tracking store")
    u.add_argument("run_dir", help="the study's run directory, or its name (runs/<name>)")
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--port", type=int, default=5000)
    u.add_argument("--tracking-uri")
    u.set_defaults(fn=_cmd_ui)
    rp = sub.add_parser("report", help="write the study's self-contained HTML report and log it to MLflow")
    rp.add_argument("run_dir", help="the study's run directory, or its name (runs/<name>)")
    rp.add_argument("--tracking-uri")
    rp.set_defaults(fn=_cmd_report)
    d = sub.add_parser("dashboard", help="serve optuna-dashboard on the study's Optuna storage")
    d.add_argument("run_dir", help="the study's run directory, or its name (runs/<name>)")
    d.add_argument("--storage", help="an Optuna storage URL (default: the run directory's optuna.journal)")
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument("--port", type=int, default=8080)
    d.set_defaults(fn=_cmd_dashboard)
    t = sub.add_parser("tensorboard", help="serve TensorBoard (scalars, HParams) of a study run with tensorboard on")
    t.add_argument("run_dir", help="the study's run directory, or its name (runs/<name>)")
    t.add_argument("--host", default="127.0.0.1")
    t.add_argument("--port", type=int, default=6006)
    t.set_defaults(fn=_cmd_tensorboard)
    sy = sub.add_parser("sync", help="deliver the MLflow calls a study queued while its tracking store was down")
    sy.add_argument("run_dir", help="the study's run directory, or its name (runs/<name>)")
    sy.add_argument("--tracking-uri", help="MLflow tracking URI (default: the study's)")
    sy.set_defaults(fn=_cmd_sync)
    return p


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else list(argv)
    if raw[:1] == ["bench"]:  # every other argument belongs to experiments.bench
        return _cmd_bench(argparse.Namespace(rest=raw[1:]))
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow(\..*)?")
    for noisy in ("absl", "tensorflow", "alembic", "mlflow"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    t0 = time.monotonic()
    code = int(args.fn(args))
    logging.getLogger(__name__).debug("hpo %s took %.1fs", args.command, time.monotonic() - t0)
    return code


if __name__ == "__main__":
    sys.exit(main())
