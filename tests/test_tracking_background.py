"""MLflow writes of a trial go through a background thread: a slow store never holds up training,
order is kept, run ids resolve, and a refused call still fails loudly."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from hpo.tracking import LOCAL_PREFIX, Tracker


class _Slow:
    """The real MlflowClient, with every call made ``delay_s`` slower (a remote server far away); records the
    thread each call runs on."""

    def __init__(self, real: Any, delay_s: float) -> None:
        self.real, self.delay_s = real, delay_s
        self.threads: list[str] = []

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self.real, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.threads.append(threading.current_thread().name)
            time.sleep(self.delay_s)
            return fn(*args, **kwargs)

        return call


def _tracker(tmp_path: Path, name: str) -> tuple[Tracker, str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return Tracker(uri, name, artifact_root=tmp_path / "mlartifacts", run_dir=tmp_path), uri


def test_a_slow_store_does_not_hold_up_a_trial_and_everything_arrives_in_order(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPO_MLFLOW_WRITER", "thread")  # the thread makes the calls itself (through the slow client)
    tracker, uri = _tracker(tmp_path, "slow")
    parent = tracker.start_study("slow", params={"seed": 0}, tags={})
    ref = tracker.start_trial(0, {"units": 8}, tags={"hpo.seed": 1})  # created before the trial trains
    slow = _Slow(tracker.client, delay_s=0.2)
    tracker.client = slow
    t0 = time.monotonic()
    for epoch in range(3):
        tracker.log_epoch(ref, epoch, {"loss": 1.0 - epoch / 10, "val_accuracy": 0.5 + epoch / 10})
    tracker.end_trial(ref, {"select_accuracy": 0.7}, {"hpo.state": "COMPLETE"}, failed=False)
    handed_over = time.monotonic() - t0
    # Synchronously: the epochs with the final metrics in one batch, then terminate = 2 x 0.2 s.
    assert handed_over < 0.2, f"the trial waited {handed_over:.2f} s for the store"
    run_id = tracker.run_id(ref)
    assert not run_id.startswith(LOCAL_PREFIX)
    tracker.end_study({"n_complete": 1}, {"hpo.status": "finished"})
    assert len(slow.threads) >= 2 and all(t == "hpo-mlflow" for t in slow.threads[:2]), slow.threads

    client = mlflow.MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.params["units"] == "8" and run.data.metrics["select_accuracy"] == 0.7
    history = client.get_metric_history(run_id, "epoch_select_accuracy")
    assert [(m.step, round(m.value, 6)) for m in sorted(history, key=lambda m: m.step)] == [(0, 0.5), (1, 0.6), (2, 0.7)]
    assert client.get_run(parent).info.status == "FINISHED"


def test_a_call_the_store_refuses_in_the_background_is_raised_at_the_next_wait(tmp_path: Path) -> None:
    tracker, _ = _tracker(tmp_path, "refused")
    tracker.start_study("refused", params={}, tags={})
    ref = tracker.start_trial(0, {}, tags={})
    tracker.wait()
    # A metric name MLflow rejects (400 INVALID_PARAMETER_VALUE): not transient, so not queued for later.
    tracker.end_trial(ref, {"bad/../name": 1.0}, {}, failed=False)
    with pytest.raises(MlflowException):
        tracker.wait()
    tracker.wait()  # raised once
    assert tracker.pending == 0


def test_closing_delivers_what_was_handed_over_and_the_thread_restarts_when_used_again(tmp_path: Path) -> None:
    tracker, uri = _tracker(tmp_path, "restart")
    tracker.start_study("restart", params={}, tags={})
    first = tracker.start_trial(0, {}, tags={})
    tracker.close()
    assert not any(t.name == "hpo-mlflow" and t.is_alive() for t in threading.enumerate() if t is tracker._thread)
    second = tracker.start_trial(1, {}, tags={})
    tracker.end_trial(second, {"select_accuracy": 0.5}, {}, failed=False)
    tracker.end_trial(first, {"select_accuracy": 0.4}, {}, failed=False)
    tracker.end_study({}, {})
    client = mlflow.MlflowClient(uri)
    assert {client.get_run(tracker.run_id(r)).info.status for r in (first, second)} == {"FINISHED"}


class _Recorder(_Slow):
    """The real MlflowClient, recording which of its methods this process called."""

    def __init__(self, real: Any) -> None:
        super().__init__(real, 0.0)
        self.names: list[str] = []

    def __getattr__(self, name: str) -> Any:
        self.names.append(name)
        return super().__getattr__(name)


def test_a_trials_writes_are_made_by_the_writer_process_not_by_the_studys_interpreter(tmp_path: Path) -> None:
    from hpo.tracking import handover as mlflow_writer

    tracker, uri = _tracker(tmp_path, "writer")
    tracker.start_study("writer", params={}, tags={})
    ref = tracker.start_trial(0, {"units": 8}, tags={})
    recorder = _Recorder(tracker.client)
    tracker.client = recorder
    for epoch in range(3):
        tracker.log_epoch(ref, epoch, {"loss": 1.0 - epoch / 10, "val_accuracy": 0.5 + epoch / 10})
    tracker.log_artifact(ref, _file(tmp_path / "notes.txt", "hello"))
    tracker.end_trial(ref, {"select_accuracy": 0.7}, {"hpo.state": "COMPLETE"}, failed=False)
    tracker.wait()
    # Epochs, final metrics, the file and the end status went to the writer process: none through this process.
    assert not {"log_batch", "set_terminated", "log_artifact"} & set(recorder.names), recorder.names
    writer = mlflow_writer.shared_writer()
    assert writer is not None and writer.alive and writer.pid != os.getpid()

    client = mlflow.MlflowClient(uri)
    run = client.get_run(tracker.run_id(ref))
    assert run.info.status == "FINISHED" and run.data.metrics["select_accuracy"] == 0.7
    assert run.data.tags["hpo.state"] == "COMPLETE"
    history = client.get_metric_history(run.info.run_id, "epoch_select_accuracy")
    assert sorted((m.step, round(m.value, 6)) for m in history) == [(0, 0.5), (1, 0.6), (2, 0.7)]
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["notes.txt"]


def _file(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_when_the_writer_process_dies_the_calls_are_made_in_the_thread_and_none_is_lost(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from hpo.tracking import handover as mlflow_writer

    monkeypatch.setattr(mlflow_writer, "_FAILED_PIDS", set())  # this test's failure stays in this test
    tracker, uri = _tracker(tmp_path, "writer-dies")
    tracker.start_study("writer-dies", params={}, tags={})
    first = tracker.start_trial(0, {}, tags={})
    tracker.end_trial(first, {"select_accuracy": 0.4}, {}, failed=False)
    tracker.wait()
    writer = mlflow_writer.shared_writer()
    assert writer is not None
    os.kill(writer.pid, signal.SIGKILL)
    writer._proc.wait()
    with caplog.at_level("WARNING", logger="hpo.tracking.handover"):
        second = tracker.start_trial(1, {}, tags={})
        tracker.log_epoch(second, 0, {"loss": 0.3})
        tracker.end_trial(second, {"select_accuracy": 0.6}, {}, failed=False)
        tracker.end_study({"n_complete": 2}, {})
    assert "MLflow writes go back to the study's own thread" in caplog.text
    assert mlflow_writer.shared_writer() is None  # this process writes from the thread from now on
    assert tracker.pending == 0
    client = mlflow.MlflowClient(uri)
    runs = {r: client.get_run(tracker.run_id(r)) for r in (first, second)}
    assert [runs[r].data.metrics["select_accuracy"] for r in (first, second)] == [0.4, 0.6]
    assert {r.info.status for r in runs.values()} == {"FINISHED"}
    assert [m.value for m in client.get_metric_history(runs[second].info.run_id, "epoch_train_loss")] == [0.3]
    assert client.get_run(tracker.parent_run_id).info.status == "FINISHED"
