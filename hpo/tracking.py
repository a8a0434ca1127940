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


def _is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://", "databricks"))


def default_tracking_uri(run_dir: Path) -> str:
    return f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"


def _param_value(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return s[:MAX_PARAM_LEN]


class Tracker:
    """Writes a study and its trials to an MLflow tracking store."""

    def __init__(self, uri: str, experiment: str, artifact_root: Path | None = None, shared: bool = False) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self._mlflow = mlflow
        self.client = MlflowClient(tracking_uri=uri)
        self.shared = shared  # other processes log to the same study: never touch their running runs
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            # A server's default artifact root serves every machine; a local directory only this one.
            location = artifact_root.resolve().as_uri() if artifact_root is not None and not _is_server(uri) else None
            try:
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
            except mlflow.exceptions.MlflowException:
                # Another worker created it between our lookup and our create.
                exp = self.client.get_experiment_by_name(experiment)
                if exp is None:
                    raise
                self.experiment_id = exp.experiment_id
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
            if not self.shared:
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

    def kill_orphans(self) -> None:
        """Trial runs still RUNNING once every trial of the study has finished belonged to dead processes."""
        assert self.parent_run_id is not None
        self._kill_orphans(self.parent_run_id)

    def trial_runs(self) -> dict[int, str]:
        """Trial number -> run id of this study's finished trial runs (the latest run per number)."""
        assert self.parent_run_id is not None
        out: dict[int, tuple[int, str]] = {}
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], max_results=1000, page_token=token,
                filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_run_id}' and tags.`{KIND_TAG}` = 'trial' "
                              "and attributes.status != 'RUNNING'")
            for r in page:
                n = int(r.data.tags[TRIAL_TAG])
                if n not in out or r.info.start_time > out[n][0]:
                    out[n] = (r.info.start_time, r.info.run_id)
            token = page.token
            if not token:
                break
        return {n: v[1] for n, v in out.items()}

    def download_trial_files(self, run_id: str, dest: Path) -> None:
        """A trial's result.json and logits logged by the machine that ran it."""
        import tempfile

        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            got = Path(self._mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="trial", dst_path=tmp,
                                                                 tracking_uri=self.uri))
            for f in got.iterdir():
                f.replace(dest / f.name)

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
