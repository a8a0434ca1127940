"""``hpo run`` and ``hpo worker``: the config with the command line's changes, the study, its live progress."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, Callable

from hpo.cli._common import fmt, tracking_uri
from hpo.errors import ConfigError

if TYPE_CHECKING:
    from hpo.cli.output import LibraryOutput
    from hpo.config import StudyConfig
    from hpo.study import StudyProgress, StudySummary
    from hpo.results import TrialResult


def add_run(sub: Any) -> None:
    """The ``run`` subcommand."""
    r = sub.add_parser("run", help="run or resume the study a YAML config describes")
    r.add_argument("config")
    r.add_argument("--driver", choices=["optuna", "hyperopt", "kerastuner"])
    r.add_argument("--sampler")
    r.add_argument("--n-trials", type=int)
    r.add_argument("--timeout", metavar="SECONDS", help="wall-clock budget of this run: no trial starts after it "
                                                        "(sets study.timeout_s)")
    r.add_argument("--run-dir")
    r.add_argument("--name", help="study name (default: the config's)")
    r.add_argument("--quiet", action="store_true", help="print only the final summary")
    r.add_argument("-v", "--verbose", action="store_true",
                   help="also show the libraries' output (TensorFlow, MLflow, warnings) kept in <run dir>/hpo.log")
    r.add_argument("--json", action="store_true", help="print the summary as JSON")
    r.add_argument("--storage", help="Optuna storage URL shared with `hpo worker` processes (sets driver.storage)")
    r.add_argument("--tracking-uri", help="MLflow tracking URI (sets tracking.uri)")
    r.add_argument("--workers", type=int, help="worker processes (per GPU when GPUs are visible)")
    r.add_argument("--pack", type=int, help="train up to N trials that share an architecture as one packed model "
                                            "(sets executor.pack; mlp builder)")
    r.set_defaults(fn=cmd_run)


def add_worker(sub: Any) -> None:
    """The ``worker`` subcommand."""
    w = sub.add_parser("worker", help="join a study in a shared storage and run its trials until its budget is used")
    w.add_argument("config", nargs="?", help="the study's config (default: the one stored with --study/--storage)")
    w.add_argument("--study", help="study name in --storage (the config is read from the storage)")
    w.add_argument("--storage", help="the study's Optuna storage URL, e.g. postgresql://user@host/db")
    w.add_argument("--tracking-uri", help="MLflow tracking URI (default: the study's)")
    w.add_argument("--run-dir", help="where this worker keeps its trials' files (default: runs/<name>)")
    w.add_argument("--workers", type=int, help="worker processes on this machine (per GPU when GPUs are visible)")
    w.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the study to be created")
    w.add_argument("--quiet", action="store_true")
    w.add_argument("-v", "--verbose", action="store_true",
                   help="also show the libraries' output (TensorFlow, MLflow, warnings) kept in <run dir>/hpo.log")
    w.add_argument("--json", action="store_true")
    w.set_defaults(fn=cmd_worker)


def cmd_worker(args: argparse.Namespace) -> int:
    """``hpo worker``: join a study in a shared storage."""
    return cmd_run(args, role="worker")


def cmd_run(args: argparse.Namespace, role: str = "owner") -> int:
    """``hpo run`` (``role="owner"``) or ``hpo worker``; the exit status. The libraries' output goes to the run
    directory's ``hpo.log`` (and the terminal with ``--verbose``); the terminal shows the command's own lines."""
    from hpo.cli.output import LibraryOutput

    with LibraryOutput(verbose=getattr(args, "verbose", False)) as output:
        return _cmd_run(args, role, output)


def _cmd_run(args: argparse.Namespace, role: str, output: "LibraryOutput") -> int:
    try:
        cfg = load_config(args, role)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = _run(cfg, args, role, output)
    if isinstance(summary, int):
        return summary
    if args.json:
        import json

        print(json.dumps(summary.to_dict(), indent=2, default=str))
        return 0
    if role == "worker":
        print(f"worker done in {summary.duration_s:.0f}s: ran {summary.n_complete} complete, {summary.n_pruned} "
              f"pruned, {summary.n_failed} failed; the study's budget is used (its owner, `hpo run`, summarises)")
        return 0
    from hpo.cli.summary import print_summary

    print_summary(cfg, summary)
    if output.path is not None:
        print(f"log: {output.path}  (the libraries' output; -v shows it here)")
    return 0


def load_config(args: argparse.Namespace, role: str) -> "StudyConfig":
    """The config file's (or the shared storage's) config with the command line's values set on it.

    Loading validates the config; it is validated again only when the command line changed a field."""
    from hpo import config as config_mod

    if args.config:
        cfg = config_mod.load(args.config)
    elif role == "worker" and args.study and args.storage:
        from hpo.drivers.stored import stored_config

        cfg = stored_config(args.study, args.storage, args.wait)
    else:
        raise ConfigError("config", "give a config file, or --study NAME and --storage URL")
    if _apply_overrides(cfg, args):
        config_mod.validate(cfg)
    return cfg


def _apply_overrides(cfg: "StudyConfig", args: argparse.Namespace) -> bool:
    """Set the fields the command line gives on ``cfg``; whether any of them changed."""
    from hpo.config import SAMPLERS

    changed = False

    def put(section: Any, name: str, value: Any) -> None:
        nonlocal changed
        if getattr(section, name) != value:
            setattr(section, name, value)
            changed = True

    if args.storage:
        put(cfg.driver, "storage", args.storage)
    if args.tracking_uri:
        put(cfg.tracking, "uri", args.tracking_uri)
    tracking_uri(None, cfg.tracking.uri, recorded_as="stored")  # a redacted one cannot be opened
    if args.workers is not None:
        from hpo.execution.pool import visible_gpus

        put(cfg.executor, "mode", "processes")
        if visible_gpus() and cfg.executor.gpus != []:
            put(cfg.executor, "workers_per_gpu", args.workers)
        else:
            put(cfg.executor, "cpu_workers", args.workers)
    if getattr(args, "pack", None) is not None:
        put(cfg.executor, "pack", args.pack)
    if getattr(args, "driver", None):
        put(cfg.driver, "name", args.driver)
        put(cfg.driver, "sampler", args.sampler or SAMPLERS.get(args.driver, ("tpe",))[0])
    elif getattr(args, "sampler", None):
        put(cfg.driver, "sampler", args.sampler)
    if getattr(args, "n_trials", None) is not None:
        put(cfg.study, "n_trials", args.n_trials)
    if getattr(args, "timeout", None) is not None:
        try:
            put(cfg.study, "timeout_s", float(args.timeout))
        except ValueError:
            raise ConfigError("study.timeout_s", f"--timeout must be a positive number of seconds, got "
                                                 f"{args.timeout!r}") from None
    if args.run_dir:
        put(cfg.study, "run_dir", args.run_dir)
    if getattr(args, "name", None):
        put(cfg.study, "name", args.name)
    return changed


def _run(cfg: "StudyConfig", args: argparse.Namespace, role: str,
         output: "LibraryOutput") -> "StudySummary | int":
    """Run the study, with live progress on a terminal; its summary, or the exit status when it stopped."""
    from hpo.errors import HpoError
    from hpo.study import run_study

    live, on_trial_end, on_epoch_end = _progress(cfg, args.quiet)

    def on_open(run_dir: Any) -> None:  # the header once the study is open: a start-up failure is one line
        output.attach(run_dir)
        if not args.quiet:
            print(f"{'worker on ' if role == 'worker' else ''}study {cfg.study.name!r}: {cfg.study.n_trials} "
                  f"trials, driver {cfg.driver.name}/{cfg.driver.sampler}, {cfg.space.builder} on "
                  f"{cfg.data.dataset}, run dir {cfg.run_dir}", flush=True)

    try:
        if live is not None:
            with live:
                return run_study(cfg, on_trial_end=on_trial_end, on_epoch_end=on_epoch_end, role=role,
                                 on_open=on_open)
        return run_study(cfg, on_trial_end=on_trial_end, role=role, on_open=on_open)
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


def _progress(cfg: "StudyConfig", quiet: bool) -> tuple[Any, Callable[..., None], Callable[..., None]]:
    """The live display (rich bars on a terminal, else None) and the study's trial- and epoch-end callbacks."""
    live = trials_task = epoch_task = None
    if not quiet and sys.stdout.isatty():
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        live = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
        trials_task = live.add_task("trials", total=cfg.study.n_trials, info="")
        epoch_task = live.add_task("epochs", total=cfg.max_epochs, info="")

    def on_epoch_end(number: int, epoch: int, total: int, logs: Any) -> None:
        if live is not None:
            value = logs.get("val_" + cfg.objective.metric)
            live.update(epoch_task, completed=epoch, total=total,
                        info=f"trial {number}" + (f" select={value:.4f}" if value is not None else ""))

    def on_trial_end(r: "TrialResult", p: "StudyProgress") -> None:
        if quiet:
            return
        eta = p.elapsed_s / max(p.done, 1) * max(p.total - p.done, 0)
        detail = f"select={fmt(r.value)} audit={fmt(r.metrics.get('audit_' + cfg.objective.metric))}" \
            if r.value is not None else (r.error or "")[:120]
        line = (f"[{p.done}/{p.total}] trial {r.number} {r.state.value:<8} {detail}  "
                f"best={fmt(p.best_value)} failed={p.failed} pruned={p.pruned} "
                f"elapsed={p.elapsed_s:.0f}s eta={eta:.0f}s")
        if live is not None:
            live.console.print(line)
            live.update(trials_task, completed=p.done,
                        info=f"best={fmt(p.best_value)} failed={p.failed} pruned={p.pruned}")
        else:
            print(line, flush=True)

    return live, on_trial_end, on_epoch_end
