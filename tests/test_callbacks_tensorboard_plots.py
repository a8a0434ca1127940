"""TensorBoard logs with HParams, user callbacks in every trial, model plots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import keras
import mlflow
import pytest

from hpo.errors import ConfigError
from hpo.study import run_study

from .conftest import ROOT, serving, small_config


class EpochRecorder(keras.callbacks.Callback):
    """A custom callback named in a config: appends every epoch it sees to a file."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        with open(self.path, "a") as f:
            f.write(f"{epoch}\n")


@pytest.fixture(scope="module")
def tb_study(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("tb")
    cfg = small_config(
        tmp, study={"name": "tb", "n_trials": 2}, training={"epochs": 3, "callbacks": [
            {"name": "ReduceLROnPlateau", "args": {"monitor": "val_loss", "factor": 0.5, "patience": 0, "min_delta": 100.0}},
            {"name": "ModelCheckpoint", "args": {"filepath": "checkpoint.keras"}},
            {"name": "tests.test_callbacks_tensorboard_plots:EpochRecorder", "args": {"path": "{trial_dir}/epochs.txt"}},
        ]},
        tensorboard={"enabled": True, "histograms": True}, ensemble={"method": "top_k", "size": 2})
    return cfg, run_study(cfg)


def test_tensorboard_event_files_hold_scalars_and_hparams(tb_study: Any) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    cfg, summary = tb_study
    root = cfg.run_dir / "tensorboard"
    exp = EventAccumulator(str(root), size_guidance={"tensors": 0})
    exp.Reload()
    content = exp.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {h.name for h in experiment.hparam_infos} >= {"layers", "units", "learning_rate"}
    assert {m.name.tag for m in experiment.metric_infos} >= {"select_accuracy", "audit_accuracy"}
    for t in summary.trials:
        acc = EventAccumulator(str(root / f"trial-{t['number']:05d}"), size_guidance={"scalars": 0, "histograms": 0})
        acc.Reload()
        tags = acc.Tags()
        assert {"epoch_select_accuracy", "epoch_train_loss", "epoch_audit_accuracy", "select_accuracy",
                "audit_accuracy"} <= set(tags["scalars"])
        assert [e.step for e in acc.Scalars("epoch_select_accuracy")] == [0, 1, 2]
        assert acc.Scalars("select_accuracy")[0].value == pytest.approx(t["value"], abs=1e-6)
        assert tags["histograms"], "weight histograms were asked for"
        plugin = acc.PluginTagToContent("hparams")
        start = plugin_data_pb2.HParamsPluginData.FromString(plugin["_hparams_/session_start_info"]).session_start_info
        assert start.hparams["units"].number_value == t["params"]["units"]
        end = plugin_data_pb2.HParamsPluginData.FromString(plugin["_hparams_/session_end_info"]).session_end_info
        assert end.status == 1  # STATUS_SUCCESS


def test_user_callbacks_run_fresh_in_every_trial(tb_study: Any) -> None:
    cfg, summary = tb_study
    for t in summary.trials:
        trial_dir = cfg.run_dir / "trials" / f"{t['number']:05d}"
        result = json.loads((trial_dir / "result.json").read_text())
        lr = result["history"]["learning_rate"]
        assert lr[-1] < lr[0], "ReduceLROnPlateau did not lower the learning rate"
        assert (trial_dir / "epochs.txt").read_text().split() == ["0", "1", "2"]
        assert (trial_dir / "checkpoint.keras").exists()


@pytest.mark.parametrize("spec, field", [
    ({"name": "ReduceLROnPlateu"}, "training.callbacks[0].name"),
    ({"name": "EarlyStopping", "args": {"patiance": 2}}, "training.callbacks[0].args"),
    ({"name": "ModelCheckpoint", "args": {"filepath": "../../escape.keras"}}, "training.callbacks[0].args.filepath"),
    ({"name": "builtins:dict"}, "training.callbacks[0].name"),
    # every path-like argument of any callback stays in the trial directory (issue 28)
    ({"name": "BackupAndRestore", "args": {"backup_dir": "/tmp/elsewhere"}}, "training.callbacks[0].args.backup_dir"),
    ({"name": "CSVLogger", "args": {"filename": "../../log.csv"}}, "training.callbacks[0].args.filename"),
    ({"name": "TensorBoard", "args": {"log_dir": "~/tb"}}, "training.callbacks[0].args.log_dir"),
    ({"name": "CSVLogger", "args": {"filename": "log.csv", "separator": "/etc/x"}},
     "training.callbacks[0].args.separator"),
    ({"name": "EarlyStopping", "when": 1}, "training.callbacks[0].when"),
])
def test_bad_callbacks_are_refused_up_front(tmp_path: Path, spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        small_config(tmp_path, training={"callbacks": [spec]})
    assert err.value.field == field


def test_best_trial_and_ensemble_are_plotted_and_logged(tb_study: Any) -> None:
    cfg, summary = tb_study
    assert summary.plots and summary.plots["message"] is None
    for key in ("best_trial", "ensemble"):
        data = Path(summary.plots[key]).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    client = mlflow.tracking.MlflowClient(summary.tracking_uri)
    names = {a.path for a in client.list_artifacts(summary.parent_run_id, "plots")}
    assert names == {"plots/best_trial.png", "plots/ensemble.png"}


def test_without_graphviz_plots_give_one_clear_line(tmp_path: Path) -> None:
    script = (
        "import keras\nfrom pathlib import Path\nfrom hpo.analysis.plots import plot_model_file\n"
        "m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])\n"
        f"p, msg = plot_model_file(m, Path({str(tmp_path / 'm.png')!r}))\nprint(repr(p)); print(msg)\n"
    )
    env = {**os.environ, "PATH": str(tmp_path), "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-2] == "None" and "Graphviz" in lines[-1]


def test_hpo_tensorboard_serves_runs_and_hparams(tb_study: Any, tmp_path: Path) -> None:
    cfg, summary = tb_study
    with serving(["tensorboard", str(cfg.run_dir)], "/data/runs", tmp_path) as port:
        deadline = time.monotonic() + 60
        while True:  # TensorBoard loads event files in the background
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=10) as r:
                runs = json.loads(r.read())
            if len(runs) >= 3 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert {f"trial-{t['number']:05d}" for t in summary.trials} <= set(runs)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/data/plugin/hparams/experiment",
                                     data=json.dumps({"experimentName": ""}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            experiment = json.loads(r.read())
    assert {h["name"] for h in experiment["hparamInfos"]} >= {"units", "learning_rate"}
    assert {m["name"]["tag"] for m in experiment["metricInfos"]} >= {"select_accuracy", "audit_accuracy"}
