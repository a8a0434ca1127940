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
