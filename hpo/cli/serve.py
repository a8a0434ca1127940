"""``hpo ui``, ``hpo dashboard`` and ``hpo tensorboard``: serve a study's tracking store, storage or event files."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from hpo.cli._common import resolve_run_dir


def add_ui(sub: Any) -> None:
    """The ``ui`` subcommand."""
    u = sub.add_parser("ui", help="serve the MLflow UI of a study's tracking store")
    u.add_argument("run_dir", help="the study's run directory, or its name (runs/<name>)")
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--port", type=int, default=5000)
    u.add_argument("--tracking-uri")
    u.set_defaults(fn=cmd_ui)


def add_dashboard(sub: Any) -> None:
    """The ``dashboard`` subcommand."""
    d = sub.add_parser("dashboard", help="serve optuna-dashboard on the study's Optuna storage")
    d.add_argument("run_dir", help="the study's run directory, or its name (runs/<name>)")
    d.add_argument("--storage", help="an Optuna storage URL (default: the run directory's optuna.journal)")
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument("--port", type=int, default=8080)
    d.set_defaults(fn=cmd_dashboard)


def add_tensorboard(sub: Any) -> None:
    """The ``tensorboard`` subcommand."""
    t = sub.add_parser("tensorboard", help="serve TensorBoard (scalars, HParams) of a study run with tensorboard on")
    t.add_argument("run_dir", help="the study's run directory, or its name (runs/<name>)")
    t.add_argument("--host", default="127.0.0.1")
    t.add_argument("--port", type=int, default=6006)
    t.set_defaults(fn=cmd_tensorboard)


def warn_if_exposed(host: str, what: str) -> bool:
    """Print a one-line warning when ``host`` is not a loopback address; whether it did."""
    import ipaddress

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        print(f"warning: --host {host} exposes {what} to the network; it has no authentication: anyone who can "
              "reach this port can read the study (bind to 127.0.0.1 and use an SSH tunnel instead)",
              file=sys.stderr, flush=True)
    return not loopback


def _serve(cmd: list[str], env: dict[str, str] | None = None) -> int:
    """Run a server command; Ctrl-C or SIGTERM stops it and its process group."""
    import signal

    proc = subprocess.Popen(cmd, start_new_session=True, env={**os.environ, **env} if env else None)

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


def cmd_ui(args: argparse.Namespace) -> int:
    """``hpo ui``: the MLflow UI on the study's tracking store."""
    from hpo.tracking import default_tracking_uri

    run_dir = resolve_run_dir(args.run_dir)
    uri = args.tracking_uri or default_tracking_uri(run_dir)
    # The store's URI goes through MLflow's environment variable, not its command line: a password in it
    # would be readable by every user in the process list.
    cmd = [sys.executable, "-m", "mlflow", "ui", "--host", args.host, "--port", str(args.port)]
    if not args.tracking_uri:
        cmd += ["--default-artifact-root", (run_dir / "mlartifacts").resolve().as_uri()]
    warn_if_exposed(args.host, "the MLflow UI (and its REST API, which can also change and delete runs)")
    print(f"MLflow UI for {run_dir} on http://{args.host}:{args.port}  (Ctrl-C stops it)", flush=True)
    experiment = _experiment_id(uri, run_dir)
    if experiment is not None:
        # MLflow 3's UI keeps a GenAI/model-training switch of its own (GenAI by default, whatever the
        # experiment's kind): the query selects model training, and the study's view of its runs table
        # (metric columns, its parent run expanded; written by the study's end).
        from hpo.tracking.ops import VIEW_KEY

        print(f"the study's runs: http://{args.host}:{args.port}/#/experiments/{experiment}/runs"
              f"?viewStateShareKey={VIEW_KEY}&workflowType=machine_learning", flush=True)
    return _serve(cmd, {"MLFLOW_BACKEND_STORE_URI": uri})


def _experiment_id(uri: str, run_dir: Path) -> str | None:
    """The MLflow experiment of the study in ``run_dir`` (its parent run's, from summary.json, else the config's
    experiment name); None when the store does not have it (yet)."""
    import json
    import logging

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        summary = run_dir / "summary.json"
        if summary.exists():
            parent = json.loads(summary.read_text()).get("parent_run_id")
            if parent:
                return str(client.get_run(parent).info.experiment_id)
        import yaml

        raw = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        name = (raw.get("tracking") or {}).get("experiment") or (raw.get("study") or {}).get("name")
        exp = client.get_experiment_by_name(name) if name else None
        return None if exp is None else str(exp.experiment_id)
    except Exception:  # the URL is a convenience: the UI still serves the store
        return None


def cmd_dashboard(args: argparse.Namespace) -> int:
    """``hpo dashboard``: optuna-dashboard on the study's Optuna storage."""
    run_dir = resolve_run_dir(args.run_dir)
    from hpo.drivers import default_storage
    from hpo.drivers.optuna import resolve_storage

    storage = args.storage or default_storage(run_dir)
    try:
        import optuna_dashboard
    except ImportError:
        print("error: optuna-dashboard is not installed: pip install optuna-dashboard", file=sys.stderr)
        return 2
    warn_if_exposed(args.host, "optuna-dashboard (which can also change the study)")
    print(f"optuna-dashboard for {storage.split('@')[-1]} on http://{args.host}:{args.port}  (Ctrl-C stops it)",
          flush=True)
    try:
        optuna_dashboard.run_server(resolve_storage(storage), host=args.host, port=args.port)
    except KeyboardInterrupt:
        pass
    return 0


def cmd_tensorboard(args: argparse.Namespace) -> int:
    """``hpo tensorboard``: TensorBoard on the study's event files."""
    from hpo.tracking.tensorboard import ROOT

    logdir = resolve_run_dir(args.run_dir) / ROOT
    if not logdir.exists():
        print(f"error: run_dir: {logdir} does not exist; run the study with tensorboard: {{enabled: true}}",
              file=sys.stderr)
        return 2
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", args.host, "--port", str(args.port)]
    warn_if_exposed(args.host, "TensorBoard")
    print(f"TensorBoard for {logdir} on http://{args.host}:{args.port}  (Ctrl-C stops it)", flush=True)
    return _serve(cmd)
