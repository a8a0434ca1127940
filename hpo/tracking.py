"""MLflow tracking: one experiment per study, a parent run per study, a child run per trial.

Uses ``MlflowClient`` rather than the fluent API so that no global "active run"
state is shared with user code, and each call says which run it writes to.
Per-epoch metrics are sent with ``log_batch`` (one call per epoch).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping

from hpo.repro import redact

log = logging.getLogger(__name__)

STUDY_TAG = "hpo.study"
KIND_TAG = "hpo.kind"
TRIAL_TAG = "hpo.trial"
MAX_PARAM_LEN = 6000


def default_tracking_uri(run_dir: Path) -> str:
    return f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"


def _param_value(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return s[:MAX_PARAM_LEN]


class Tracker:
    """Writes a study and its trials to an MLflow tracking store."""

    def __init__(self, uri: str, experiment: str, artifact_root: Path | None = None) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self._mlflow = mlflow
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            location = artifact_root.resolve().as_uri() if artifact_root is not None else None
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        else:
            self.experiment_id = exp.experiment_id
        self.parent_run_id: str | None = None

    # -- study -----------------------------------------------------------------------
    def start_study(self, study: str, params: Mapping[str, Any], tags: Mapping[str, Any]) -> str:
        """Create the study's parent run, or reopen it when the study resumes."""
        from mlflow.entities import Param, RunTag

        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{STUDY_TAG}` = '{study}' and tags.`{KIND_TAG}` = 'study'",
            max_results=1,
        )
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            self._kill_orphans(run_id)
        else:
            run = self.client.create_run(
                self.experiment_id, run_name=study, tags={STUDY_TAG: study, KIND_TAG: "study"}
            )
            run_id = run.info.run_id
            self.client.log_batch(run_id, params=[Param(k, _param_value(redact(v))) for k, v in params.items()])
        self.client.log_batch(run_id, tags=[RunTag(k, _param_value(redact(v))) for k, v in tags.items()])
        self.parent_run_id = run_id
        return run_id

    def _kill_orphans(self, parent_id: str) -> None:
        """Trial runs left RUNNING by a killed process are marked KILLED."""
        for r in self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}' and attributes.status = 'RUNNING'",
        ):
            self.client.set_terminated(r.info.run_id, status="KILLED")

    def end_study(self, metrics: Mapping[str, float], tags: Mapping[str, Any], status: str = "FINISHED") -> None:
        from mlflow.entities import Metric, RunTag

        assert self.parent_run_id is not None
        now = int(time.time() * 1000)
        self.client.log_batch(
            self.parent_run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None],
            tags=[RunTag(k, _param_value(v)) for k, v in tags.items()],
        )
        self.client.set_terminated(self.parent_run_id, status=status)

    def log_study_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        assert self.parent_run_id is not None
        self.client.log_artifact(self.parent_run_id, str(path), artifact_path)

    # -- trials ------------------------------------------------------------------------
    def start_trial(self, number: int, params: Mapping[str, Any], tags: Mapping[str, Any]) -> str:
        from mlflow.entities import Param

        assert self.parent_run_id is not None
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial-{number:04d}",
            tags={"mlflow.parentRunId": self.parent_run_id, KIND_TAG: "trial", TRIAL_TAG: str(number),
                  **{k: _param_value(v) for k, v in tags.items()}},
        )
        run_id = run.info.run_id
        if params:
            self.client.log_batch(run_id, params=[Param(k, _param_value(v)) for k, v in params.items()])
        return run_id

    def log_epoch(self, run_id: str, epoch: int, logs: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = []
        for k, v in logs.items():
            if k.startswith("val_"):
                name = "select_" + k[4:]
            elif k.startswith("audit_"):
                name = k
            else:
                name = "train_" + k
            try:
                metrics.append(Metric(f"epoch_{name}", float(v), now, epoch))
            except (TypeError, ValueError):
                continue
        if metrics:
            self.client.log_batch(run_id, metrics=metrics)

    def end_trial(self, run_id: str, metrics: Mapping[str, float], tags: Mapping[str, Any], failed: bool) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None],
            tags=[RunTag(k, _param_value(v)) for k, v in tags.items()],
        )
        self.client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)
