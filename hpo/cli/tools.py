"""``hpo ensemble``, ``hpo report`` and ``hpo sync``: work on a study that has run."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from hpo.cli._common import refused_uri_hint, resolve_run_dir, run_dir_tracking_uri, study_dir
from hpo.errors import ConfigError


USE_RECORDED_HELP = "send to the tracking URI the run directory's files name, when it is not the run directory's own store"


def _confidence(text: str) -> float:
    """``--confidence``: a share of bootstrap resamples, at least 0 and below 1."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1 (0.95 is the default), got {text!r}")
    return value


def add_ensemble(sub: Any) -> None:
    """The ``ensemble`` subcommand."""
    e = sub.add_parser("ensemble", help="ensemble a finished study's trials")
    e.add_argument("run_dir", help="the study's run directory, or its name (runs/<name>)")
    e.add_argument("--method", choices=["greedy", "top_k", "weights"], default="greedy")
    e.add_argument("--top-k", type=int, default=5, help="ensemble size (greedy: the cap)")
    e.add_argument("--combine", choices=["probs", "logits", "geometric", "vote"], default="probs")
    e.add_argument("--metric", choices=["nll", "accuracy"], default="nll", help="what greedy selection optimises")
    e.add_argument("--temperature", action="store_true", help="fit a temperature on select after pooling")
    e.add_argument("--no-calibrate", dest="calibrate", action="store_false",
                   help="combine the members' raw logits (default: one temperature per member, fitted on select)")
    e.add_argument("--confidence", type=_confidence, default=0.95,
                   help="greedy: share of bootstrap resamples of select in which an addition must improve the "
                        "ensemble (default 0.95; 0 adds on any select gain, the previous rule)")
    e.add_argument("--distinct", action="store_true", help="at most one member per identical configuration")
    e.add_argument("--out", help="artifact directory (default <run_dir>/ensemble)")
    e.add_argument("--tracking-uri")
    e.add_argument("--use-recorded-uri", action="store_true", help=USE_RECORDED_HELP)
    e.set_defaults(fn=cmd_ensemble)


def add_report(sub: Any) -> None:
    """The ``report`` subcommand."""
    rp = sub.add_parser("report", help="write the study's self-contained HTML report and log it to MLflow")
    rp.add_argument("run_dir", help="the study's run directory, or its name (runs/<name>)")
    rp.add_argument("--tracking-uri")
    rp.add_argument("--use-recorded-uri", action="store_true", help=USE_RECORDED_HELP)
    rp.set_defaults(fn=cmd_report)


def add_sync(sub: Any) -> None:
    """The ``sync`` subcommand."""
    sy = sub.add_parser("sync", help="deliver the MLflow calls a study queued while its tracking store was down")
    sy.add_argument("run_dir", help="the study's run directory, or its name (runs/<name>)")
    sy.add_argument("--tracking-uri", help="MLflow tracking URI (default: the run directory's own store)")
    sy.add_argument("--use-recorded-uri", action="store_true", help=USE_RECORDED_HELP)
    sy.set_defaults(fn=cmd_sync)


def cmd_ensemble(args: argparse.Namespace) -> int:
    """``hpo ensemble``: build an ensemble of a study's trials and compare it with the best single trial."""
    from ensembles import build_ensemble

    run_dir = study_dir(args.run_dir)
    if run_dir is None:
        return 2
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    parent = summary.get("parent_run_id")
    try:
        uri = run_dir_tracking_uri(args.tracking_uri or None, summary.get("tracking_uri"), run_dir,
                                   use_recorded=args.use_recorded_uri)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if uri is None:
        print(f"not logged to MLflow: {refused_uri_hint(summary['tracking_uri'], 'summary.json')}", file=sys.stderr)
    rep = build_ensemble(run_dir, method=args.method, combine=args.combine, size=args.top_k, metric=args.metric,
                         temperature=args.temperature, calibrate=args.calibrate, distinct_configs=args.distinct,
                         confidence=args.confidence, out_dir=args.out,
                         tracking_uri=uri, parent_run_id=parent)
    print(f"ensemble ({rep.method}, {rep.combine}) of {len(rep.members)} members: "
          + ", ".join(f"trial {m['trial']} x{m['count']:.3g}" for m in rep.members))
    if rep.best_single_alone:
        print(f"  the best single trial ({rep.best_single['trial']}) is kept alone: no other trial improved it on select"
              + (f" in {rep.confidence:.0%} of bootstrap resamples" if rep.confidence else ""))
    for split in ("select", "audit", "test"):
        ens = {k[len(split) + 1:]: v for k, v in rep.metrics.items() if k.startswith(split + "_")}
        one = {k[len(split) + 1:]: v for k, v in rep.best_single["metrics"].items() if k.startswith(split + "_")}
        print(f"  {split:<6} ensemble: " + ", ".join(f"{k}={v:.4f}" for k, v in ens.items())
              + "   best single: " + ", ".join(f"{k}={v:.4f}" for k, v in one.items()))
    print(f"artifact: {rep.artifact_dir}  mlflow model: {rep.model_uri}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``hpo report``: write the study's HTML report and log it to the study's parent run."""
    from hpo.analysis.report import build_report

    run_dir = resolve_run_dir(args.run_dir)
    if not (run_dir / "summary.json").exists():
        print(f"error: run_dir: {run_dir} holds no finished study (no summary.json)", file=sys.stderr)
        return 2
    path = build_report(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    uri = run_dir_tracking_uri(args.tracking_uri or None, summary.get("tracking_uri"), run_dir,
                               use_recorded=args.use_recorded_uri)
    if uri is None:
        print(f"report: {path} (not logged to MLflow: {refused_uri_hint(summary['tracking_uri'], 'summary.json')})")
        return 0
    try:
        from mlflow.tracking import MlflowClient

        MlflowClient(uri).log_artifact(summary["parent_run_id"], str(path))
        where = f"logged to the parent run {summary['parent_run_id']}"
    except Exception as exc:  # the report itself is written; tracking may be elsewhere or down
        where = f"not logged to MLflow ({type(exc).__name__}: {str(exc)[:120]})"
    print(f"report: {path} ({where})")
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    """Deliver the MLflow calls a study queued while its tracking store was unreachable."""
    import yaml

    from hpo.redaction import redact
    from hpo.tracking import OUTBOX, sync

    run_dir = study_dir(args.run_dir)
    if run_dir is None:
        return 2
    saved = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").exists() else {}
    recorded = ((saved or {}).get("tracking") or {}).get("uri")
    try:
        uri = run_dir_tracking_uri(args.tracking_uri, recorded, run_dir, use_recorded=args.use_recorded_uri)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if uri is None:
        print(f"error: tracking.uri: {refused_uri_hint(recorded, str(run_dir / 'config.yaml'))}", file=sys.stderr)
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
