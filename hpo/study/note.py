"""The study's description as the MLflow UI shows it (``mlflow.note.content``, markdown) on its experiment and
parent run: the best trial and its scores, the guards' verdict, the ensemble and where its artifact is."""

from __future__ import annotations

from typing import Any

from hpo.study.summary import StudySummary


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def study_note(summary: StudySummary, *, study: str, metric: str, builder: str, dataset: str) -> str:
    """A few markdown lines describing the finished study."""
    lines = [f"**hpo study `{study}`**: {builder} on {dataset}; {summary.n_complete} complete, "
             f"{summary.n_pruned} pruned, {summary.n_failed} failed trials (runs `trial-NNNN` nested under the "
             f"parent run `{study}`)."]
    if summary.best_trial is not None:
        test = ", ".join(f"{k} {_fmt(v)}" for k, v in summary.best_test.items())
        lines.append(f"- **Best trial {summary.best_trial}** (run `trial-{summary.best_trial:04d}`): select_{metric} "
                     f"{_fmt(summary.best_select)}, audit_{metric} {_fmt(summary.best_audit)}"
                     + (f"; test (locked split): {test}" if test else ""))
    if summary.guards:
        lines.append(f"- **Guards**: {summary.guards['verdict']}")
    if summary.ensemble:
        e = summary.ensemble
        test = ", ".join(f"{k[5:]} {_fmt(v)}" for k, v in e["metrics"].items() if k.startswith("test_"))
        lines.append(f"- **Ensemble** of {len(e['members'])} trials ({', '.join(str(t) for t, _ in e['members'])}): "
                     f"test {test}; artifact `{e['artifact_dir']}`, MLflow model `{e.get('model_uri')}`")
    if summary.report:
        lines.append(f"- Report: `{summary.report}` (also an artifact of the parent run)")
    return "\n".join(lines)
