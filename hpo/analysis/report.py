"""``hpo report``: one self-contained HTML page about a study (images embedded, works offline).

Reads only the run directory (summary, trial results, guard report, ensemble manifest,
model plots) and draws with matplotlib: optimisation history, parameter importances
(Optuna's fANOVA evaluator on an in-memory copy of the trials, so every driver gets
them), slices, select-versus-audit scatter, learning curves of the top trials, the
ensemble-size curve, the guard verdicts and a table of the top trials with their
MLflow run ids.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from hpo.objectives import MEASURES
from hpo.redaction import redact
from hpo.results import inside, replace_file

log = logging.getLogger(__name__)
REPORT_FILE = "report.html"


def _img(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"/>'


def _png_file(run_dir: Path, path: str | None, what: str) -> str:
    """An embedded PNG from the run directory; a path outside it (summary.json is data) or a non-PNG is left out."""
    found = inside(run_dir, path, f"summary.json plots.{what}")
    if found is None or not found.is_file():
        return ""
    data = found.read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        log.warning("summary.json plots.%s: %s is not a PNG image; left out of the report", what, found)
        return ""
    return f'<img alt="model" src="data:image/png;base64,{base64.b64encode(data).decode()}"/>'


def _e(value: Any) -> str:
    """``value`` as HTML text: every value from a run directory's files goes through here (they are data)."""
    return html.escape(str(value), quote=True)


def _load_results(run_dir: Path) -> list[dict[str, Any]]:
    out = [json.loads(p.read_text()) for p in sorted((run_dir / "trials").glob("*/result.json"))]
    return sorted(out, key=lambda r: r["number"])


def importances(run_dir: Path, results: Sequence[Mapping[str, Any]], direction: str, seed: int = 0) -> dict[str, float]:
    """fANOVA parameter importances (Optuna's evaluator) over the completed trials."""
    import optuna

    from hpo.drivers.optuna import optuna_distributions
    from hpo.space import SearchSpace

    complete = [r for r in results if r["state"] == "COMPLETE"]
    if len(complete) < 3:
        return {}
    space = SearchSpace([_param_from_description(d) for d in json.loads((run_dir / "space.json").read_text())])
    dists = optuna_distributions(space)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=direction)
    for r in complete:
        params = {k: v for k, v in r["params"].items() if k in dists}
        study.add_trial(optuna.trial.create_trial(params=params, distributions={k: dists[k] for k in params},
                                                  value=r["value"]))
    try:
        return optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed))
    except (ValueError, RuntimeError) as exc:  # e.g. no parameter common to all trials
        log.info("no parameter importances: %s", exc)
        return {}


def _param_from_description(d: Mapping[str, Any]) -> Any:
    from hpo.space import Condition, Param

    conds = tuple(Condition(c["parent"], tuple(c["values"])) for c in d.get("conditions", []))
    return Param(name=d["name"], kind=d["kind"], low=d.get("low"), high=d.get("high"), step=d.get("step"),
                 log=d.get("log", False), values=tuple(d.get("values", ())) or ((d["default"],) if d["kind"] == "fixed" else ()),
                 default=d.get("default"), conditions=conds)


def build_report(run_dir: str | Path) -> Path:
    """Write ``<run_dir>/report.html`` and return its path."""
    import matplotlib

    matplotlib.use("Agg")

    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    study = json.loads((run_dir / "study.json").read_text())
    metric, direction = study["objective"], study["direction"]
    sign = 1 if direction == "maximize" else -1
    results = _load_results(run_dir)
    complete = [r for r in results if r["state"] == "COMPLETE"]
    sections: list[str] = []
    if complete:
        sections += _history_sections(complete, metric, sign, summary)
    sections += _importance_sections(run_dir, results, direction)
    if complete:
        sections += _slice_sections(complete, metric)
    sections += _learning_curve_sections(complete, metric, sign)
    sections += _ensemble_sections(run_dir)
    sections += _front_sections(summary, complete)
    sections += _guard_sections(summary.get("guards"))
    sections.append(_top_trials_section(complete, metric, sign))
    plots = summary.get("plots") or {}
    sections += _model_sections(run_dir, plots if isinstance(plots, Mapping) else {})
    out = run_dir / REPORT_FILE
    replace_file(out, _page(summary, study, sections))
    return out


def _history_sections(complete: Sequence[Mapping[str, Any]], metric: str, sign: int,
                      summary: Mapping[str, Any]) -> list[str]:
    """The optimisation history and the select-against-audit scatter."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    xs = [r["number"] for r in complete]
    sel = [r["value"] for r in complete]
    aud = [r["metrics"].get(f"audit_{metric}") for r in complete]
    best = list(np.maximum.accumulate(np.array(sel) * sign) * sign)
    ax.plot(xs, sel, "o", label=f"select {metric}")
    ax.plot(xs, aud, "x", alpha=0.7, label=f"audit {metric}")
    ax.step(xs, best, where="post", label="best select so far")
    ax.set_xlabel("trial")
    ax.legend(fontsize=8)
    sections = [f"<h2>Optimisation history</h2>{_img(fig)}"]

    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(sel, aud, s=14)
    lo, hi = min(sel + [a for a in aud if a is not None]), max(sel + [a for a in aud if a is not None])
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    corr = summary.get("guards", {}) or {}
    ax.set_title(f"select vs audit (r = {corr.get('correlation') if corr.get('correlation') is None else round(corr['correlation'], 3)})")
    ax.set_xlabel(f"select {metric}")
    ax.set_ylabel(f"audit {metric}")
    sections.append(f"<h2>Select against audit</h2>{_img(fig)}")
    return sections


def _front_sections(summary: Mapping[str, Any], complete: Sequence[Mapping[str, Any]]) -> list[str]:
    """Several objectives or constraints: the Pareto front on select against the first two objectives (every
    complete trial behind it, infeasible ones crossed, the first objective's audit value of each front point
    hollow, the chosen trial starred) and a table of the front with its select and audit values."""
    import matplotlib.pyplot as plt

    front, objectives = summary.get("pareto_front"), summary.get("objectives") or []
    if not isinstance(front, list) or not objectives:
        return []
    names = [str(o.get("metric")) for o in objectives]
    sections = []
    if len(names) >= 2 and front:
        first, second = names[0], names[1]
        fig, ax = plt.subplots(figsize=(6, 4))
        for feasible, marker, label in ((True, "o", "trial"), (False, "x", "infeasible trial")):
            pts = [r["values"][:2] for r in complete if r.get("values") and (r.get("feasible") is not False) == feasible]
            if pts:
                ax.scatter([p[1] for p in pts], [p[0] for p in pts], marker=marker, s=16, c="0.6", label=label)
        pts = sorted(((p["values"][1], p["values"][0], p) for p in front), key=lambda t: (t[0], t[1]))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", c="C0", label="Pareto front (select)")
        audit = [(x, p["audit"].get(first)) for x, _, p in pts if isinstance(p.get("audit"), Mapping)]
        audit = [(x, a) for x, a in audit if a is not None]
        if audit:
            ax.scatter([a[0] for a in audit], [a[1] for a in audit], facecolors="none", edgecolors="C1",
                       label=f"front on audit ({first})")
        chosen = [(x, y) for x, y, p in pts if p["number"] == summary.get("best_trial")]
        if chosen:
            ax.scatter(*zip(*chosen), marker="*", s=180, c="C3", label="chosen trial", zorder=3)
        ax.set_xlabel(second)
        ax.set_ylabel(f"select {first}")
        ax.legend(fontsize=7)
        sections.append(f"<h2>Pareto front</h2>{_img(fig)}")
    audited = [n for n in names if any(n in (p.get("audit") or {}) for p in front)]  # model metrics, not measures
    rows = [[p["number"], *[_num(p["select"].get(n)) for n in names],
             *[_num(p["audit"][n]) if n in (p.get("audit") or {}) else "" for n in audited]] for p in front]
    sections.append(f"<p>{_e(len(front))} trial(s) on the front; chosen trial {_e(summary.get('best_trial'))}; "
                    f"{_e(summary.get('n_infeasible', 0))} complete trial(s) infeasible</p>" + _table(
        ["trial", *[n if n in MEASURES else f"select {n}" for n in names], *[f"audit {n}" for n in audited]], rows))
    if len(names) < 2:
        sections.insert(0, "<h2>Feasible best trials</h2>")
    return sections


def _importance_sections(run_dir: Path, results: Sequence[Mapping[str, Any]], direction: str) -> list[str]:
    """The fANOVA importances as bars (nothing with fewer than three complete trials)."""
    import matplotlib.pyplot as plt

    imp = importances(run_dir, results, direction)
    if not imp:
        return []
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(imp) + 1))
    names = list(imp)[::-1]
    ax.barh(names, [imp[n] for n in names])
    ax.set_xlabel("fANOVA importance")
    return [f"<h2>Parameter importances</h2>{_img(fig)}"]


def _slice_sections(complete: Sequence[Mapping[str, Any]], metric: str) -> list[str]:
    """The select value against each parameter that varied (log x-axis for wide positive ranges)."""
    import matplotlib.pyplot as plt

    names = sorted({k for r in complete for k in r["params"]})
    names = [n for n in names if len({json.dumps(r["params"].get(n), default=str) for r in complete}) > 1]
    if not names:
        return []
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, n in zip(axes.ravel(), names):
        pts = [(r["params"][n], r["value"]) for r in complete if n in r["params"]]
        xv = [p[0] for p in pts]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xv):
            ax.scatter(xv, [p[1] for p in pts], s=10)
            if min(xv) > 0 and max(xv) / max(min(xv), 1e-300) > 50:
                ax.set_xscale("log")
        else:
            cats = sorted({str(v) for v in xv})
            ax.scatter([cats.index(str(v)) for v in xv], [p[1] for p in pts], s=10)
            ax.set_xticks(range(len(cats)), cats, fontsize=7)
        ax.set_title(n, fontsize=9)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return [f"<h2>Slices (select {_e(metric)} by parameter)</h2>{_img(fig)}"]


def _learning_curve_sections(complete: Sequence[Mapping[str, Any]], metric: str, sign: int) -> list[str]:
    """Select (solid) and audit (dashed) curves per epoch of the five best trials."""
    import matplotlib.pyplot as plt

    top = sorted(complete, key=lambda r: -sign * r["value"])[:5]
    if not (top and any(r.get("history") for r in top)):
        return []
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for r in top:
        h = r.get("history", {})
        if f"val_{metric}" in h:
            line, = ax.plot(range(1, len(h[f"val_{metric}"]) + 1), h[f"val_{metric}"], label=f"trial {r['number']} select")
            if f"audit_{metric}" in h:
                ax.plot(range(1, len(h[f"audit_{metric}"]) + 1), h[f"audit_{metric}"], "--", color=line.get_color(),
                        alpha=0.7)
    ax.set_xlabel("epoch (dashed: audit)")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    return [f"<h2>Learning curves of the top trials</h2>{_img(fig)}"]


def _ensemble_sections(run_dir: Path) -> list[str]:
    """The ensemble-size curve and the ensemble against the best single trial (nothing without an ensemble)."""
    import matplotlib.pyplot as plt

    manifest_path = run_dir / "ensemble" / "manifest.json"
    if not manifest_path.exists():
        return []
    sections = []
    man = json.loads(manifest_path.read_text())
    curve = man.get("curve", [])
    key = next((k for k in ("accuracy", "nll") if any(f"select_{k}" in c for c in curve)), None)
    if curve and key:
        fig, ax = plt.subplots(figsize=(5, 3))
        for split in ("select", "audit"):  # never test: the size is not chosen by the locked split
            ax.plot([c["size"] for c in curve], [c.get(f"{split}_{key}") for c in curve], "o-", label=split)
        ax.set_xlabel("ensemble size (members counted with repetition)")
        ax.set_ylabel(key)
        ax.legend(fontsize=8)
        sections.append(f"<h2>Ensemble ({_e(man['method'])}, {_e(man['combine'])})</h2>{_img(fig)}")
    sections.append(_table(["metric", "ensemble", "best single"],
                           [[k, _num(v), _num(man["best_single"]["metrics"].get(k, float("nan")))]
                            for k, v in man["metrics"].items() if k.startswith(("audit_", "test_"))]))
    return sections


def _guard_sections(g: Mapping[str, Any] | None) -> list[str]:
    """The guard report's verdicts as a table (nothing when the study has none)."""
    if not g:
        return []
    rows = [["verdict", g.get("verdict", "")], ["overfit alarm", g.get("overfit")]]
    c = g.get("incumbent_check") or {}
    for k in ("select", "audit", "gap", "gap_se", "threshold"):
        if k in c:
            rows.append([f"incumbent {k}", _num(c[k])])
    tied = g.get("tied") or []
    rows += [["select/audit correlation", g.get("correlation")], ["overtuning", g.get("overtuning")],
             ["tied with the incumbent", ", ".join(map(str, tied if isinstance(tied, list) else [tied])) or "none"],
             ["locked test split uses", g.get("test_uses")]]
    per_objective = g.get("per_objective")
    if isinstance(per_objective, Mapping):  # several objectives: each later objective's guard on the chosen trial
        rows += [[f"objective {name}", p.get("verdict", "") if isinstance(p, Mapping) else p]
                 for name, p in per_objective.items()]
    if isinstance(g.get("restore_best_epoch"), Mapping):
        rows.append(["audit change if the best select epoch were restored",
                     _num(g["restore_best_epoch"].get("audit_change_if_restored"), "+.4f")])
    return ["<h2>Guards</h2>" + _table(["check", "value"], rows)]


def _num(value: Any, spec: str = ".4f") -> str:
    """A number as the report shows it; anything else (a hand-edited file) as its text, escaped later."""
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def _top_trials_section(complete: Sequence[Mapping[str, Any]], metric: str, sign: int) -> str:
    """The fifteen best trials: select and audit values, parameters and MLflow run ids."""
    rows = []
    for r in sorted(complete, key=lambda r: -sign * r["value"])[:15]:
        rows.append([r["number"], _num(r["value"]), _num(r["metrics"].get(f"audit_{metric}", float("nan"))),
                     json.dumps(r["params"], default=str), r.get("mlflow_run_id", "")])
    return "<h2>Top trials</h2>" + _table(
        ["trial", f"select {metric}", f"audit {metric}", "params", "MLflow run id"], rows)


def _model_sections(run_dir: Path, plots: Mapping[str, Any]) -> list[str]:
    """The model plots of the best trial and the ensemble, when they were drawn (inside the run directory)."""
    images = "".join(_png_file(run_dir, plots.get(k), k) for k in ("best_trial", "ensemble"))
    return [f"<h2>Models</h2>{images}"] if images else []


def _page(summary: Mapping[str, Any], study: Mapping[str, Any], sections: Sequence[str]) -> str:
    """The whole HTML page: title, style, the study's one-paragraph header and the sections."""
    metric, direction = study["objective"], study["direction"]
    head = (f"<h1>Study {_e(summary['name'])}</h1><p>{_e(summary['n_complete'])} complete, {_e(summary['n_pruned'])} "
            f"pruned, {_e(summary['n_failed'])} failed; driver {_e(study['driver'])}; objective select "
            f"{_e(metric)} ({_e(direction)}); best trial {_e(summary.get('best_trial'))}; MLflow parent run "
            f"<code>{_e(summary.get('parent_run_id', ''))}</code> in <code>{_e(redact(str(summary.get('tracking_uri', ''))))}</code></p>")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>hpo report: "
        f"{_e(summary['name'])}</title><style>body{{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}"
        "img{max-width:100%}code{font-size:12px}</style></head><body>" + head + "".join(sections) + "</body></html>"
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An HTML table; every header and cell is escaped here (callers pass plain values)."""
    th = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{th}</tr>{body}</table>"
