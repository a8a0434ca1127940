"""The tracker: one MLflow experiment per study, a parent run per study, a child run per trial.

Uses ``MlflowClient`` rather than the fluent API so that no global "active run" state is shared with
user code, and each call says which run it writes to. Per-epoch metrics are sent with ``log_batch``
(batched, :meth:`Tracker.log_epoch`). A study never stops because its tracking store is unreachable:
every call is an op (:mod:`hpo.tracking.ops`) delivered by the transport (:mod:`hpo.tracking.transport`),
queued in the outbox when the store cannot take it. A worker of a shared study waits for each trial's
end before its next trial: the study's owner reads those runs.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from hpo.metric_names import split_name
from hpo.redaction import redact
from hpo.tracking.client import is_server, quick_http
from hpo.tracking.ops import (KIND_TAG, NOTE_TAG, SHARED_VIEW_PREFIX, TRIAL_TAG, VIEW_KEY, Unmapped,
                              is_transient, param_value)
from hpo.tracking.transport import Transport

log = logging.getLogger(__name__)


class Tracker(Transport):
    """Writes a study and its trials to an MLflow tracking store; queues what it cannot deliver."""

    def __init__(self, uri: str, experiment: str, artifact_root: Path | None = None, shared: bool = False,
                 run_dir: Path | None = None, probe_s: float = 10.0, retry_pause_s: float = 0.5,
                 background: bool = True) -> None:
        self.shared = shared  # other processes log to the same study: never touch their running runs
        self._epochs: dict[str, list[list[Any]]] = {}  # run id -> epoch metrics not sent yet (log_epoch)
        self._epochs_sent: dict[str, float] = {}
        super().__init__(uri, run_dir if run_dir is not None else (artifact_root.parent if artifact_root else None),
                         probe_s=probe_s, retry_pause_s=retry_pause_s, background=background)
        # A server's default artifact root serves every machine; a local directory only this one.
        location = artifact_root.resolve().as_uri() if artifact_root is not None and not is_server(uri) else None
        self.experiment_id = self.send({"op": "experiment", "name": experiment, "location": location}, creates=True)
        self.parent_run_id: str | None = None

    def undelivered_message(self) -> str | None:
        """The line a summary prints while calls wait in the outbox (None when there are none)."""
        self.wait()
        return self.outbox.undelivered_message()

    def healthy(self) -> bool:
        """True when nothing waits in the outbox (after one attempt to deliver it)."""
        self.wait()
        if self.outbox.pending:
            self.flush()
        return not self.outbox.pending

    # -- study -----------------------------------------------------------------------
    def start_study(self, study: str, params: Mapping[str, Any], tags: Mapping[str, Any]) -> str:
        """Create the study's parent run, or reopen it when the study resumes."""
        run_id = self.send({"op": "start_study", "exp": self.experiment_id, "study": study,
                            "params": {k: param_value(redact(v)) for k, v in params.items()},
                            "tags": {k: param_value(redact(v)) for k, v in tags.items()},
                            "kill_orphans": not self.shared}, creates=True)
        self.parent_run_id = run_id
        return run_id

    def kill_orphans(self) -> None:
        """Trial runs still RUNNING once every trial of the study has finished belonged to dead processes."""
        assert self.parent_run_id is not None
        self.send({"op": "kill_orphans", "exp": self.experiment_id, "parent": self.parent_run_id})

    def trial_runs(self) -> dict[int, str]:
        """Trial number -> run id of this study's finished trial runs (the latest run per number).

        Empty (with a warning) when the store cannot be read now."""
        assert self.parent_run_id is not None
        self.wait()
        try:
            with quick_http():
                return self._trial_runs(self.resolve(self.experiment_id), self.resolve(self.parent_run_id))
        except Exception as exc:
            if not (is_transient(exc) or isinstance(exc, Unmapped)):
                raise
            log.warning("the trials of other workers cannot be read from MLflow now (%s)", redact(str(exc))[:200])
            return {}

    def _trial_runs(self, experiment_id: str, parent_id: str) -> dict[int, str]:
        out: dict[int, tuple[int, str]] = {}
        token = None
        while True:
            page = self.client.search_runs(
                [experiment_id], max_results=1000, page_token=token,
                filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}' and tags.`{KIND_TAG}` = 'trial' "
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

        import mlflow

        self.wait()
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp, quick_http():
            got = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="trial", dst_path=tmp,
                                                           tracking_uri=self.uri))
            for f in got.iterdir():
                f.replace(dest / f.name)

    def end_study(self, metrics: Mapping[str, float], tags: Mapping[str, Any], status: str = "FINISHED") -> None:
        """Log the study's final metrics and tags, end its run, and deliver everything handed over."""
        assert self.parent_run_id is not None
        self._log_batch(self.parent_run_id, metrics, tags)
        self.send({"op": "terminate", "run": self.parent_run_id, "status": status})
        self.close()

    def describe_experiment(self, markdown: str, columns: Sequence[str] = ()) -> None:
        """The experiment's description in the MLflow UI (its ``mlflow.note.content`` tag) and the view of its runs
        that ``hpo ui`` opens (:data:`VIEW_KEY`), ``columns`` (metric names) shown."""
        self.send({"op": "experiment_tag", "exp": self.experiment_id, "key": NOTE_TAG, "value": param_value(markdown)})
        # MLflow 3's runs table shows no metric columns until a user picks them; a shared view (the UI's own
        # "share" format: an experiment tag holding the table's state as JSON) opens with them.
        view = {"selectedColumns": [f"metrics.`{c}`" for c in columns]}
        self.send({"op": "experiment_tag", "exp": self.experiment_id, "key": SHARED_VIEW_PREFIX + VIEW_KEY,
                   "value": json.dumps(view)})

    def log_study_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        assert self.parent_run_id is not None
        self.log_artifact(self.parent_run_id, path, artifact_path)

    # -- trials ------------------------------------------------------------------------
    def start_trial(self, number: int, params: Mapping[str, Any], tags: Mapping[str, Any]) -> str:
        """Create a trial's run under the study's run (before it trains); returns its id or local id."""
        assert self.parent_run_id is not None
        run_id = self.send({
            "op": "create_run", "exp": self.experiment_id, "run_name": f"trial-{number:04d}",
            "tags": {"mlflow.parentRunId": self.parent_run_id, KIND_TAG: "trial", TRIAL_TAG: str(number),
                     **{k: param_value(v) for k, v in tags.items()}},
            "params": {k: param_value(v) for k, v in params.items()},
        }, creates=True)
        # The first epochs wait EPOCH_FLUSH_S too: a trial shorter than that sends its epochs once, at its end.
        self._epochs_sent[run_id] = time.monotonic()
        return run_id

    # Per-epoch metrics reach the store at most this often per run, and at the trial's end. Each flush is a
    # log_batch call: ~15 ms of SQLAlchemy work on the embedded SQLite store (in the writer process, or in the
    # background thread, holding the interpreter lock, where there is none), CPU time a 2-core machine also
    # needs for training. Every 2 s keeps that under 1% of a trial's time and the MLflow UI still follows a
    # long trial.
    EPOCH_FLUSH_S = 2.0
    MAX_BATCH = 1000  # MLflow's log_batch limit on metrics per call

    def log_epoch(self, run_id: str, epoch: int, logs: Mapping[str, float], prefix: str = "") -> None:
        """Queue one epoch's metrics (``epoch_select_*``, ``epoch_audit_*``, ``epoch_train_*``, each after
        ``prefix``, e.g. ``fold_2/``) for ``run_id``.

        Epochs are written in batches: one ``log_batch`` per epoch cost ~12 ms on the embedded SQLite
        store (a transaction each), 0.36 s per 30-epoch trial. A batch goes out once ``EPOCH_FLUSH_S`` has
        passed since the run's start or its last batch, so the MLflow UI still follows a trial live, and
        the rest with the trial's final metrics at ``end_trial``; each metric keeps its own epoch step and
        timestamp."""
        now = int(time.time() * 1000)
        buf = self._epochs.setdefault(run_id, [])
        for k, v in logs.items():
            try:
                buf.append([f"{prefix}epoch_{split_name(k)}", float(v), now, epoch])
            except (TypeError, ValueError):
                continue
        if time.monotonic() - self._epochs_sent.get(run_id, 0.0) >= self.EPOCH_FLUSH_S:
            self.flush_epochs(run_id)

    def flush_epochs(self, run_id: str) -> None:
        """Send ``run_id``'s queued epoch metrics now."""
        buf = self._epochs.pop(run_id, [])
        self._epochs_sent[run_id] = time.monotonic()
        for i in range(0, len(buf), self.MAX_BATCH):
            self.send({"op": "log_batch", "run": run_id, "metrics": buf[i:i + self.MAX_BATCH], "tags": {}})

    def _log_batch(self, run_id: str, metrics: Mapping[str, float | None], tags: Mapping[str, Any],
                   before: Sequence[list[Any]] = ()) -> None:
        """One ``log_batch`` call (more past MAX_BATCH metrics) with ``before`` (queued epoch metrics) first."""
        now = int(time.time() * 1000)
        rows = [*before, *([k, float(v), now, 0] for k, v in metrics.items() if v is not None)]
        starts = range(0, len(rows), self.MAX_BATCH) if rows else [0]
        for i in starts:
            last = i == starts[-1]
            self.send({"op": "log_batch", "run": run_id, "metrics": rows[i:i + self.MAX_BATCH],
                       "tags": {k: param_value(v) for k, v in tags.items()} if last else {}})

    def tag_run(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Set tags on a run, open or ended."""
        self._log_batch(run_id, {}, tags)

    def end_trial(self, run_id: str, metrics: Mapping[str, float], tags: Mapping[str, Any], failed: bool) -> None:
        """Log a trial's final metrics and tags (with its epochs not sent yet) and end its run."""
        self._epochs_sent.pop(run_id, None)
        # The epochs not sent yet and the final metrics and tags in one call: each call is a transaction.
        self._log_batch(run_id, metrics, tags, before=self._epochs.pop(run_id, []))
        self.send({"op": "terminate", "run": run_id, "status": "FAILED" if failed else "FINISHED"})

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        """Upload a file to a run (in the background; an upload that fails waits in the outbox)."""
        self.send({"op": "artifact", "run": run_id, "path": str(Path(path).resolve()),
                   "artifact_path": artifact_path})
