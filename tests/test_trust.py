"""Trust boundaries (issue 28): a run directory, a shared study's stored config and a summary are data.

Each test starts from a crafted input in a temporary folder: opening it must not run code, and must not
read, upload, write or delete anything outside the run directory."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import hyperopt
import pytest

from hpo.drivers.hyperopt import HyperoptDriver
from hpo.drivers.hyperopt.persist import load_trials, to_vals
from hpo.drivers.hyperopt.space import from_hyperopt
from hpo.errors import ConfigError
from hpo.results import TrialResult, TrialState, result_dict, trial_dir, write_json
from hpo.space import discover


class _Planted:
    """Unpickling this writes a marker file: the proof that loading ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "pwned"))


def _space() -> Any:
    def build(hp: Any) -> None:
        hp.Int("units", 8, 64, step=8)
        hp.Float("lr", 1e-4, 1e-1, sampling="log")
        hp.Int("width", 2, 32, step=2, sampling="log")
        hp.Float("drop", 0.0, 0.5)
        hp.Choice("model", ["a", "b"])
        with hp.conditional_scope("model", ["b"]):
            hp.Boolean("deep")

    return discover(build)


def _drive(drv: HyperoptDriver, n: int, run_dir: Path | None = None) -> list[dict[str, Any]]:
    drv.open({"t": 1})
    seen = []
    for _ in range(n):
        prop = drv.ask()
        assert prop is not None
        res = TrialResult(number=prop.number, params=prop.params, seed=0, state=TrialState.COMPLETE,
                          value=float(prop.params["units"]))
        drv.tell(prop, res)
        if run_dir is not None:
            trial_dir(run_dir, prop.number).mkdir(parents=True)
            write_json(trial_dir(run_dir, prop.number) / "result.json", result_dict(res))
        seen.append(prop.params)
    return seen


def test_a_planted_hyperopt_pickle_is_refused_not_loaded(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    (tmp_path / "hyperopt_trials.pkl").write_bytes(pickle.dumps(_Planted(marker)))
    drv = HyperoptDriver(_space(), direction="minimize", seed=1, save_file=tmp_path / "hyperopt_trials.json")
    with pytest.raises(ConfigError) as err:
        drv.open({"t": 1})
    assert not marker.exists()
    assert err.value.field == "run_dir" and "Delete it" in str(err.value)


def test_a_pickle_in_place_of_the_json_save_file_is_not_loaded(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    (tmp_path / "hyperopt_trials.json").write_bytes(pickle.dumps(_Planted(marker)))
    drv = HyperoptDriver(_space(), direction="minimize", seed=1, save_file=tmp_path / "hyperopt_trials.json")
    with pytest.raises(ConfigError):
        drv.open({"t": 1})
    assert not marker.exists()


def test_hyperopt_saves_json_and_resumes_from_it(tmp_path: Path) -> None:
    space = _space()
    save = tmp_path / "hyperopt_trials.json"
    _drive(HyperoptDriver(space, direction="minimize", seed=3, save_file=save), 4)
    assert json.loads(save.read_text())["format"].startswith("hpo.hyperopt_trials")
    assert len(load_trials(save)._dynamic_trials) == 4
    again = HyperoptDriver(space, direction="minimize", seed=3, save_file=save)
    again.open({"t": 1})
    assert again.n_finished() == 4 and again.ask().number == 4


def test_without_a_save_file_hyperopt_rebuilds_from_the_trial_records(tmp_path: Path) -> None:
    space = _space()
    save = tmp_path / "hyperopt_trials.json"
    seen = _drive(HyperoptDriver(space, direction="minimize", seed=3, save_file=save), 6, run_dir=tmp_path)
    save.unlink()  # e.g. an older run directory whose hyperopt_trials.pkl the user deleted
    again = HyperoptDriver(space, direction="minimize", seed=3, save_file=save)
    again.open({"t": 1})
    assert again.n_finished() == 6
    # the rebuilt documents are Hyperopt's own: its space evaluation gives back each trial's parameters
    for doc, params in zip(again.trials._dynamic_trials, seen):
        vals = {k: v for k, v in doc["misc"]["vals"].items()}
        sample = hyperopt.space_eval(again.expression, hyperopt.base.spec_from_misc({"vals": vals, "idxs": doc["misc"]["idxs"]}))
        assert from_hyperopt(space, sample) == params
        assert to_vals(space, params) is not None
    assert again.ask().number == 6


def test_the_worker_payload_lies_in_a_private_folder_outside_the_run_directory(tmp_path: Path) -> None:
    from hpo.execution.pool import WorkerPool
    from hpo.execution.worker import _load_payload

    pool = WorkerPool([], {"build": "mlp", "run_dir": str(tmp_path)})
    pool.start()
    path = pool._payload_path
    assert path is not None and tmp_path not in path.parents
    assert path.parent.stat().st_mode & 0o777 == 0o700 and path.stat().st_mode & 0o077 == 0
    assert _load_payload(path)["build"] == "mlp"
    pool.close()
    assert not path.parent.exists()
    # a payload offered from a folder others can write to is not loaded
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    marker = tmp_path / "ran"
    (shared / "payload.pkl").write_bytes(pickle.dumps(_Planted(marker)))
    with pytest.raises(Exception, match="0700"):
        _load_payload(shared / "payload.pkl")
    assert not marker.exists()


# -- a shared study's stored config is data -------------------------------------------------------------
def _store(tmp_path: Path, name: str, **changes: Any) -> str:
    """A study in a journal storage whose stored config is ``small_config``'s with ``changes`` (crafted)."""
    import optuna

    from hpo.drivers.optuna import CONFIG_ATTR
    from tests.conftest import small_config

    raw = small_config(tmp_path / "owner", study={"name": name}).to_dict()
    for section, fields in changes.items():
        raw[section] = {**raw.get(section, {}), **fields}
    url = f"journal://{tmp_path / 'shared.journal'}"
    from hpo.drivers.optuna import resolve_storage

    study = optuna.create_study(study_name=name, storage=resolve_storage(url))
    study.set_user_attr(CONFIG_ATTR, json.loads(json.dumps(raw, default=str)))
    return url


@pytest.mark.parametrize("changes, field", [
    ({"space": {"builder": "os:system"}}, "space.builder"),
    ({"training": {"callbacks": [{"name": "builtins:dict"}]}}, "training.callbacks[0].name"),
    ({"training": {"callbacks": [{"name": "BackupAndRestore", "args": {"backup_dir": "/tmp/victim"}}]}},
     "training.callbacks[0].args.backup_dir"),
    ({"training": {"callbacks": [{"name": "CSVLogger", "args": {"filename": "../../../outside.csv"}}]}},
     "training.callbacks[0].args.filename"),
])
def test_hpo_worker_refuses_code_and_outside_paths_from_the_stored_config(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], changes: dict[str, Any], field: str) -> None:
    from hpo.cli import main

    url = _store(tmp_path, "crafted", **changes)
    assert main(["worker", "--study", "crafted", "--storage", url, "--wait", "0", "--quiet"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and field in errors[0] and "Traceback" not in err
    assert not (tmp_path / "victim").exists()


def test_hpo_worker_takes_run_dir_and_tracking_uri_from_its_own_command_line(tmp_path: Path) -> None:
    from hpo.drivers.stored import stored_config

    url = _store(tmp_path, "mine", study={"run_dir": "/tmp/chosen-by-the-database"},
                 tracking={"uri": "http://attacker.invalid:5000", "experiment": "exp"},
                 executor={"memory_limit_mb": 1})
    cfg = stored_config("mine", url)
    assert cfg.study.run_dir is None and cfg.run_dir == Path("runs/mine")
    assert cfg.tracking.uri is None and cfg.tracking.experiment == "exp"
    assert cfg.executor.memory_limit_mb is None
    assert cfg.driver.storage == url


def test_a_callback_path_through_a_symlink_out_of_the_trial_directory_is_refused(tmp_path: Path) -> None:
    from hpo.config.callbacks import from_config

    factory = from_config([{"name": "CSVLogger", "args": {"filename": "logs/epochs.csv"}}])
    assert factory is not None
    trial = tmp_path / "trial"
    trial.mkdir()
    assert factory(trial)[0].filename == str(trial / "logs" / "epochs.csv")
    (trial / "logs").symlink_to(tmp_path)
    with pytest.raises(ConfigError) as err:
        factory(trial)
    assert err.value.field == "training.callbacks[0].args.filename"


# -- paths named by a run directory's files stay inside it ------------------------------------------------
def _ops(path: Path, *ops: dict[str, Any]) -> None:
    path.write_text("".join(json.dumps(op) + "\n" for op in ops))


def test_hpo_sync_uploads_no_file_from_outside_the_run_directory(tmp_path: Path) -> None:
    import mlflow

    from hpo.cli import main
    from hpo.tracking import OUTBOX

    run_dir, secret = tmp_path / "run", tmp_path / "secret.txt"
    run_dir.mkdir()
    secret.write_text("private")
    (run_dir / "linked.txt").symlink_to(secret)  # inside by name, outside once resolved
    (run_dir / "mine.txt").write_text("a file of the study")
    (run_dir / "study.json").write_text(json.dumps({"name": "crafted"}))
    _ops(run_dir / OUTBOX,
         {"op": "experiment", "ref": "offline-e", "name": "crafted", "location": (tmp_path / "elsewhere").as_uri()},
         {"op": "create_run", "ref": "offline-r", "exp": "offline-e", "run_name": "r", "tags": {}, "params": {}},
         {"op": "artifact", "run": "offline-r", "path": str(secret), "artifact_path": "x"},
         {"op": "artifact", "run": "offline-r", "path": str(run_dir / "linked.txt"), "artifact_path": "x"},
         {"op": "artifact", "run": "offline-r", "path": str(run_dir / "mine.txt"), "artifact_path": "x"})
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    assert main(["sync", str(run_dir), "--tracking-uri", uri]) == 0
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("crafted")
    assert not (tmp_path / "elsewhere").exists() and exp.artifact_location.endswith("run/mlartifacts")
    run = client.search_runs([exp.experiment_id])[0]
    assert [a.path for a in client.list_artifacts(run.info.run_id, "x")] == ["x/mine.txt"]


def test_a_tracking_uri_named_by_a_run_directory_is_used_only_when_asked(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """hpo sync on someone's run directory: its config.yaml chooses no destination by itself."""
    import mlflow

    from hpo.cli import main
    from hpo.tracking import OUTBOX

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "study.json").write_text(json.dumps({"name": "crafted"}))
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    (run_dir / "config.yaml").write_text(f"tracking:\n  uri: {elsewhere}\n")
    _ops(run_dir / OUTBOX, {"op": "experiment", "ref": "offline-e", "name": "crafted", "location": None},
         {"op": "create_run", "ref": "offline-r", "exp": "offline-e", "run_name": "r", "tags": {}, "params": {}})
    capsys.readouterr()
    assert main(["sync", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "tracking.uri" in err and "--use-recorded-uri" in err and "--tracking-uri" in err
    assert not (tmp_path / "elsewhere.db").exists(), "nothing was sent to the recorded store"
    assert (run_dir / OUTBOX).read_text().count("\n") == 2, "the queued calls are kept"
    assert main(["sync", str(run_dir), "--use-recorded-uri"]) == 0
    assert mlflow.MlflowClient(elsewhere).get_experiment_by_name("crafted") is not None


def test_keep_top_models_deletes_no_file_outside_the_run_directory(tmp_path: Path) -> None:
    from hpo.study.loop import retain_models

    run_dir, victim = tmp_path / "run", tmp_path / "victim.keras"
    victim.write_text("not the study's")
    mine = trial_dir(run_dir, 1) / "model.keras"
    mine.parent.mkdir(parents=True)
    mine.write_text("model")
    results = {0: {"number": 0, "state": "COMPLETE", "value": 0.9, "model_path": None},
               1: {"number": 1, "state": "COMPLETE", "value": 0.5, "model_path": str(mine)},
               2: {"number": 2, "state": "COMPLETE", "value": 0.1, "model_path": str(victim)}}
    results[0]["model_path"] = str(trial_dir(run_dir, 0) / "model.keras")
    retain_models(run_dir, results, keep=1, direction="maximize")
    assert victim.exists() and not mine.exists()


def test_a_symlinked_config_yaml_is_replaced_not_followed(tmp_path: Path) -> None:
    from hpo.results import replace_file

    run_dir, target = tmp_path / "run", tmp_path / "bashrc"
    run_dir.mkdir()
    target.write_text("untouched")
    (run_dir / "config.yaml").symlink_to(target)
    (run_dir / "space.json.tmp").symlink_to(target)  # the old write_json's fixed temporary name
    replace_file(run_dir / "config.yaml", "study: {}\n")
    write_json(run_dir / "space.json", {"a": 1})
    assert target.read_text() == "untouched"
    assert not (run_dir / "config.yaml").is_symlink() and (run_dir / "config.yaml").read_text() == "study: {}\n"
    assert oct((run_dir / "config.yaml").stat().st_mode & 0o777) != oct(0o600)


SCRIPT = "<script>alert(1)</script>"


def test_report_escapes_every_summary_field_and_embeds_no_file_from_outside(tmp_path: Path) -> None:
    from hpo.analysis.report import build_report

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 64
    (tmp_path / "outside.png").write_bytes(png + b"SECRET-OUTSIDE")
    (run_dir / "inside.png").write_bytes(png + b"INSIDE")
    (run_dir / "study.json").write_text(json.dumps({"name": SCRIPT, "direction": SCRIPT, "objective": SCRIPT,
                                                   "driver": SCRIPT}))
    guards = {"verdict": SCRIPT, "overfit": SCRIPT, "correlation": SCRIPT, "overtuning": SCRIPT, "tied": [SCRIPT],
              "test_uses": SCRIPT, "incumbent_check": {"select": SCRIPT, "gap": 0.1},
              "restore_best_epoch": {"audit_change_if_restored": SCRIPT}}
    (run_dir / "summary.json").write_text(json.dumps({
        "name": SCRIPT, "n_complete": SCRIPT, "n_pruned": SCRIPT, "n_failed": SCRIPT, "best_trial": SCRIPT,
        "parent_run_id": SCRIPT, "tracking_uri": SCRIPT, "guards": guards,
        "plots": {"best_trial": str(tmp_path / "outside.png"), "ensemble": str(run_dir / "inside.png")}}))
    page = build_report(run_dir).read_text()
    assert "<script" not in page.lower() and "&lt;script&gt;" in page
    import base64

    assert base64.b64encode(png + b"INSIDE").decode() in page
    assert base64.b64encode(png + b"SECRET-OUTSIDE").decode() not in page


@pytest.mark.parametrize("host, warned", [("127.0.0.1", False), ("localhost", False), ("::1", False),
                                          ("0.0.0.0", True), ("192.168.1.5", True), ("myhost", True)])
def test_a_server_bound_beyond_loopback_warns_once_naming_what_has_no_login(
        host: str, warned: bool, capsys: pytest.CaptureFixture[str]) -> None:
    from hpo.cli.serve import warn_if_exposed

    assert warn_if_exposed(host, "optuna-dashboard") is warned
    err = capsys.readouterr().err
    assert (err.count("\n") == 1 and "optuna-dashboard" in err and "no authentication" in err) if warned else err == ""


# -- passwords ------------------------------------------------------------------------------------------
def test_a_storage_that_cannot_be_reached_is_one_error_line_without_the_password(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from hpo.cli import main
    from tests.conftest import small_config

    cfg = small_config(tmp_path, study={"n_trials": 1})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(json.loads(json.dumps(cfg.to_dict(), default=str))))
    url = "postgresql://u:userinfo-pw@127.0.0.1:1/db?password=query-pw&sslpassword=ssl-pw"
    assert main(["run", str(path), "--storage", url, "--quiet"]) == 2
    out = capsys.readouterr()
    errors = [line for line in out.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: driver.storage:") and "Traceback" not in out.err
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p != path]
    for secret in ("userinfo-pw", "query-pw", "ssl-pw"):
        assert secret not in out.out + out.err
        assert not [p for p in files if secret.encode() in p.read_bytes()]


def test_postgresql_passwords_reach_no_file_record_attribute_log_or_command_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A storage URL with a password in its userinfo and in its query, through a whole study with a worker
    process: neither password in any file of the run directory (config, summary, the MLflow store's records),
    the Optuna study's attributes, a log record, or any process's command line while trials run."""
    import logging
    import subprocess
    import uuid

    import optuna

    from hpo.study import run_study
    from tests.conftest import small_config

    from tests.conftest import postgres_url

    pg = postgres_url()  # trust auth on this machine: the passwords are not checked
    secrets = ("userinfo-s3cret", "query-s3cret")
    url = pg.replace("://root@", f"://root:{secrets[0]}@", 1) + f"?password={secrets[1]}"
    assert secrets[0] in url
    name = f"pw-{uuid.uuid4().hex[:6]}"
    cfg = small_config(tmp_path, study={"name": name, "n_trials": 2}, driver={"storage": url},
                       training={"epochs": 1}, executor={"mode": "processes", "cpu_workers": 1},
                       ensemble={"enabled": False})
    commands: list[str] = []

    def look_at_processes(result: Any, progress: Any) -> None:
        commands.append(subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout)

    with caplog.at_level(logging.DEBUG):
        summary = run_study(cfg, on_trial_end=look_at_processes)
    try:
        assert summary.n_complete == 2 and commands
        leaks = [str(p) for p in cfg.run_dir.rglob("*") if p.is_file()
                 and any(s.encode() in p.read_bytes() for s in secrets)]
        assert not leaks, f"a password is in {leaks}"
        study = optuna.load_study(study_name=name, storage=pg)
        attrs = json.dumps([study.user_attrs, study._storage.get_study_system_attrs(study._study_id)]
                           + [[t.user_attrs, t.system_attrs] for t in study.get_trials()], default=str)
        assert not any(s in attrs for s in secrets)
        assert not any(s in r.getMessage() for r in caplog.records for s in secrets)
        assert not any(s in c for c in commands for s in secrets)
    finally:
        optuna.delete_study(study_name=name, storage=pg)
