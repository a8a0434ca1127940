"""New embedded MLflow stores start from a cached migrated schema, and behave like ones MLflow migrated."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpo.tracking.schema import seed_sqlite_store, template_path
from hpo.tracking import Tracker


def _tracker(d: Path, name: str) -> Tracker:
    d.mkdir(parents=True, exist_ok=True)
    return Tracker(f"sqlite:///{d / 'mlflow.db'}", name, artifact_root=d / "artifacts", run_dir=d)


def test_second_store_is_a_copy_that_works_like_a_migrated_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPO_CACHE_DIR", str(tmp_path / "cache"))
    first = _tracker(tmp_path / "a", "first")
    assert template_path().exists()  # built by MLflow's own migration on the first store
    run = first.client.create_run(first.experiment_id)
    first.client.log_param(run.info.run_id, "lr", "0.1")

    assert seed_sqlite_store(f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}") is True
    second = _tracker(tmp_path / "b", "second")
    # Nothing of the first store leaked into the template or the copy; MLflow made its default experiment.
    names = {e.name for e in second.client.search_experiments()}
    assert names == {"Default", "second"}
    exp = second.client.get_experiment(second.experiment_id)
    assert exp.artifact_location == (tmp_path / "b" / "artifacts").resolve().as_uri()
    run2 = second.client.create_run(second.experiment_id)
    second.client.log_param(run2.info.run_id, "units", "64")
    second.client.log_metric(run2.info.run_id, "val_accuracy", 0.9, step=0)
    second.client.set_terminated(run2.info.run_id)
    got = second.client.get_run(run2.info.run_id)
    assert got.data.params == {"units": "64"} and got.data.metrics == {"val_accuracy": 0.9}
    assert got.info.status == "FINISHED"
    assert first.client.get_run(run.info.run_id).data.params == {"lr": "0.1"}


def test_an_existing_store_is_never_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPO_CACHE_DIR", str(tmp_path / "cache"))
    tr = _tracker(tmp_path / "a", "keep")
    run_id = tr.client.create_run(tr.experiment_id).info.run_id
    assert seed_sqlite_store(f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}") is False
    again = _tracker(tmp_path / "a", "keep")
    assert again.client.get_run(run_id).info.run_id == run_id


def test_an_unusable_cache_leaves_the_store_to_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory would be")
    monkeypatch.setenv("HPO_CACHE_DIR", str(blocker))
    assert seed_sqlite_store(f"sqlite:///{tmp_path / 'x' / 'mlflow.db'}") is False
    tr = _tracker(tmp_path / "x", "plain")
    assert tr.client.get_experiment(tr.experiment_id).name == "plain"
