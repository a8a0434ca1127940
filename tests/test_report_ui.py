"""Seeing the search: the HTML report, the MLflow UI in a real browser, optuna-dashboard."""

from __future__ import annotations

import json
import os
import re
import urllib.request
from pathlib import Path
from typing import Any

import mlflow
import pytest

from .conftest import ROOT, serving

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"  # screenshots kept after the run (git-ignored)


def test_report_is_one_offline_html_file_logged_to_mlflow(finished_study: Any, capsys: pytest.CaptureFixture[str]) -> None:
    cfg, summary = finished_study
    page = Path(summary.report).read_text()
    for heading in ("Optimisation history", "Select against audit", "Parameter importances", "Slices",
                    "Learning curves of the top trials", "Ensemble", "Guards", "Top trials", "Models"):
        assert f"<h2>{heading}" in page, heading
    assert page.count("data:image/png;base64,") >= 7
    assert not re.search(r'(src|href)="https?://', page), "the report must work offline"
    for t in summary.trials[:3]:
        run_id = json.loads((cfg.run_dir / "trials" / f"{t['number']:05d}" / "result.json").read_text())["mlflow_run_id"]
        assert run_id in page
    client = mlflow.tracking.MlflowClient(summary.tracking_uri)
    assert "report.html" in {a.path for a in client.list_artifacts(summary.parent_run_id)}
    from hpo.cli import main

    assert main(["report", str(cfg.run_dir)]) == 0
    assert "logged to the parent run" in capsys.readouterr().out


@pytest.mark.slow
def test_mlflow_ui_lists_parent_trials_and_ensemble_in_a_browser(finished_study: Any, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        from tests.conftest import service_missing

        service_missing("needs Debian's chromium at /usr/bin/chromium: apt-get install chromium (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    cfg, summary = finished_study
    client = mlflow.tracking.MlflowClient(summary.tracking_uri)
    exp_id = client.get_experiment_by_name("shared").experiment_id
    trial_run = client.search_runs([exp_id], filter_string="tags.`hpo.kind` = 'trial'", max_results=1)[0]
    ARTIFACTS.mkdir(exist_ok=True)
    # a model-training experiment (MLflow 3 opens it on its runs, not on the GenAI overview), described
    experiment = client.get_experiment(exp_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    parent = client.get_run(summary.parent_run_id)
    for note in (experiment.tags["mlflow.note.content"], parent.data.tags["mlflow.note.content"]):
        assert f"Best trial {summary.best_trial}" in note and "Guards" in note and summary.ensemble["artifact_dir"] in note
    out = tmp_path / "ui.out"
    with serving(["ui", str(cfg.run_dir)], "/health", tmp_path, out=out) as port, sync_playwright() as p:
        base = f"http://127.0.0.1:{port}/#/experiments/{exp_id}"
        printed = re.search(r"the study's runs: (\S+)", out.read_text())  # `hpo ui` says where the study is
        assert printed and printed.group(1).startswith(f"{base}/runs"), out.read_text()
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(printed.group(1))
        page.get_by_text("shared", exact=True).last.wait_for(timeout=60_000)
        assert "/runs" in page.url, page.url  # stays on the runs table
        page.screenshot(path=str(ARTIFACTS / "mlflow-ui-landing.png"))
        # expand the parent run: its trial runs and the ensemble run are nested under it
        page.locator("button[data-component-id$='runnamecellrenderer.tsx_46']").first.click()
        page.get_by_text("trial-0011").wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "mlflow-ui-runs.png"))
        body = page.inner_text("body")
        (ARTIFACTS / "mlflow-ui-runs.txt").write_text(body)
        names = set(body.split("\n"))
        assert {f"trial-{i:04d}" for i in range(12)} <= names
        assert any(n.startswith("ensemble-") for n in names)
        # the trials' select and audit scores are columns of the runs table
        headers = page.locator("[role='columnheader']").all_inner_texts()
        for column in ("select_accuracy", "audit_accuracy"):
            assert any(column in h for h in headers), f"{column} is not a column of the runs view: {headers}"
        # the runs' own pages show their metrics
        for run_id, expected in ((summary.parent_run_id, ["best_select", "guard_gap", "ensemble_test_accuracy"]),
                                 (trial_run.info.run_id, ["select_accuracy", "audit_accuracy"]),
                                 (summary.ensemble["mlflow_run_id"], ["test_accuracy", "audit_nll"])):
            page.goto(f"{base}/runs/{run_id}")
            page.get_by_text(expected[0], exact=True).first.wait_for(timeout=60_000)
            text = page.inner_text("body")
            for m in expected:
                assert m in text, f"{m} not shown on run {run_id}"
        page.screenshot(path=str(ARTIFACTS / "mlflow-ui-ensemble-run.png"))
        browser.close()
    assert (ARTIFACTS / "mlflow-ui-runs.png").stat().st_size > 10_000


def test_optuna_dashboard_loads_the_study(finished_study: Any, tmp_path: Path) -> None:
    cfg, _ = finished_study
    with serving(["dashboard", str(cfg.run_dir)], "/api/studies", tmp_path) as port:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=10) as r:
            studies = json.loads(r.read())["study_summaries"]
        study = next(s for s in studies if s["study_name"] == "shared")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}", timeout=30) as r:
            detail = json.loads(r.read())
    assert len(detail["trials"]) == 12
