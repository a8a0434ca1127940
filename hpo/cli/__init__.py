"""The ``hpo`` command: a thin layer over the Python API.

    hpo run experiments/quickstart.yaml [--driver hyperopt] [--n-trials N] [--workers K] [--pack N] [--storage URL] [--quiet]
    hpo worker --study NAME --storage postgresql://user@host/db [--workers K]
    hpo sync runs/quickstart        # deliver MLflow calls queued while the tracking store was unreachable
    hpo ensemble runs/quickstart [--method greedy|top_k] [--top-k N] [--combine probs|logits|geometric|vote]
    hpo ui runs/quickstart [--port 5000]

One module per group of commands: ``run`` (run, worker), ``tools`` (ensemble, report, sync) and ``serve``
(ui, dashboard, tensorboard). The benchmarks are not a command: ``python -m experiments.bench`` runs them.
"""

from __future__ import annotations

import argparse
import logging
import time

from hpo.cli.output import quiet_library_environment

quiet_library_environment()  # before anything imports TensorFlow or MLflow

from hpo.cli import run, serve, tools  # noqa: E402

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``hpo`` argument parser with every subcommand, in the order ``hpo --help`` lists them."""
    p = argparse.ArgumentParser(prog="hpo", description="Hyperparameter search and ensembling for Keras.")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (run.add_run, run.add_worker, tools.add_ensemble, serve.add_ui, tools.add_report,
                serve.add_dashboard, serve.add_tensorboard, tools.add_sync):
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one ``hpo`` command; its exit status."""
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
