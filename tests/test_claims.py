"""What the README claims, checked through the user's entry points (``run_study`` as ``hpo run`` calls it, and
``hpo.search``): pruning of ordinary trials, the GP sampler, early stopping with restored weights, the per-trial
time budget, worker recycling, and callbacks given from Python."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import pytest

from tests.conftest import small_config

QUIET = {"ensemble": {"enabled": False}, "plots": {"enabled": False}, "report": {"enabled": False},
         "guards": {"enabled": False}}
# Learning rates from nothing-learnt to good: trials differ enough for a pruner to act on.
WIDE = {"layers": {"fixed": 1}, "units": {"min": 8, "max": 32, "log": True},
        "learning_rate": {"min": 1e-5, "max": 0.05, "log": True}, "batchnorm": {"fixed": False}}


def _results(run_dir: Path) -> dict[int, dict[str, Any]]:
    return {int(p.parent.name): json.loads(p.read_text()) for p in (run_dir / "trials").glob("*/result.json")}


@pytest.mark.slow
@pytest.mark.parametrize("pruner", ["median", "successive_halving", "hyperband"])
def test_pruners_stop_poor_ordinary_trials_early(tmp_path: Path, pruner: str) -> None:
    """Unpacked trials (executor.pack off) under Optuna's median, successive-halving and Hyperband pruners: the poor ones stop
    before their last epoch and are recorded PRUNED in result.json, the engine and MLflow."""
    import optuna

    from hpo.drivers import default_storage
    from hpo.drivers.optuna import resolve_storage
    from hpo.study import run_study

    cfg = small_config(tmp_path, study={"name": f"prune-{pruner}", "n_trials": 10}, space={"params": WIDE},
                       driver={"sampler": "random", "pruner": pruner}, training={"epochs": 6}, **QUIET)
    summary = run_study(cfg)
    results = _results(cfg.run_dir)
    pruned = {n for n, r in results.items() if r["state"] == "PRUNED"}
    assert pruned and summary.n_pruned == len(pruned), {n: (r["state"], r["epochs"]) for n, r in results.items()}
    assert all(results[n]["epochs"] < 6 for n in pruned)
    complete = [r for r in results.values() if r["state"] == "COMPLETE"]
    assert complete and all(r["epochs"] == 6 for r in complete)
    # the pruned were the poor ones: each stopped below the best complete trial's score at the same epoch
    best = max(complete, key=lambda r: r["value"])
    for n in pruned:
        h = results[n]["history"]["val_accuracy"]
        assert h[-1] < best["history"]["val_accuracy"][len(h) - 1], (n, h)
    study = optuna.load_study(study_name=cfg.study.name, storage=resolve_storage(default_storage(cfg.run_dir)))
    assert {t.number for t in study.trials if t.state.name == "PRUNED"} == pruned
    client = mlflow.MlflowClient(summary.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(cfg.study.name).experiment_id],
                              "tags.`hpo.kind` = 'trial'")
    assert {int(r.data.tags["hpo.trial"]) for r in runs if r.data.tags.get("hpo.state") == "PRUNED"} == pruned


def test_gp_sampler_drives_a_study_or_names_what_it_needs(tmp_path: Path) -> None:
    """``sampler: gp`` is Optuna's GPSampler, which needs PyTorch (not a dependency of this package): with it the
    study runs to its end; without it the config is refused naming ``driver.sampler`` before anything is written."""
    import importlib.util

    from hpo.errors import ConfigError
    from hpo.study import run_study

    cfg = small_config(tmp_path, study={"name": "gp", "n_trials": 4}, space={"params": WIDE},
                       driver={"sampler": "gp"}, training={"epochs": 1}, **QUIET)
    if importlib.util.find_spec("torch") is None:
        with pytest.raises(ConfigError) as err:
            run_study(cfg)
        assert err.value.field == "driver.sampler" and "PyTorch" in str(err.value)
        assert not cfg.run_dir.exists()
        return
    import optuna

    from hpo.drivers.optuna.samplers import make_sampler

    assert isinstance(make_sampler("gp", seed=0, space=None), optuna.samplers.GPSampler)  # type: ignore[arg-type]
    assert run_study(cfg).n_complete == 4


def test_early_stopping_restores_the_best_select_epoch(tmp_path: Path) -> None:
    """``training.early_stopping_patience`` stops a trial once select stops improving, and with
    ``restore_best_weights`` the trial is scored (and saved) with its best select epoch's weights."""
    from hpo.study import run_study

    cfg = small_config(tmp_path, study={"name": "es", "n_trials": 3}, driver={"sampler": "random"},
                       space={"params": {"layers": {"fixed": 1}, "units": {"fixed": 32}, "batchnorm": {"fixed": False},
                                         "learning_rate": {"fixed": 0.01}}},
                       training={"epochs": 60, "early_stopping_patience": 1, "restore_best_weights": True}, **QUIET)
    summary = run_study(cfg)
    assert summary.n_complete == 3
    for n, r in _results(cfg.run_dir).items():
        h = r["history"]["val_accuracy"]
        assert r["epochs"] < 60, (n, r["epochs"])
        assert h[-1] <= max(h[:-1])  # it stopped after an epoch that did not improve on the best
        assert r["value"] == pytest.approx(max(h), abs=1e-6), (n, r["value"], h)  # scored at the best epoch


def test_trial_timeout_stops_a_trial_at_an_epoch_end(tmp_path: Path) -> None:
    """``training.trial_timeout_s``: a trial asked for 400 epochs stops at the first epoch end after its budget and
    is recorded with the epochs it trained."""
    from hpo.study import run_study

    cfg = small_config(tmp_path, study={"name": "tt", "n_trials": 2}, driver={"sampler": "random"},
                       training={"epochs": 400, "trial_timeout_s": 2.0}, **QUIET)
    summary = run_study(cfg)
    assert summary.n_complete == 2
    for r in _results(cfg.run_dir).values():
        assert 1 <= r["epochs"] < 400 and len(r["history"]["loss"]) == r["epochs"]
        assert r["duration_s"] < 60


@pytest.mark.slow
def test_worker_processes_are_replaced_after_recycle_after_trials(tmp_path: Path) -> None:
    """``executor.recycle_after: 2`` with one worker: 5 trials run on 3 worker processes, none failed."""
    from hpo.study import run_study

    pids: list[int] = []
    pool_ref: list[Any] = []

    def on_end(result: Any, progress: Any) -> None:
        pids.append(next(iter(pool_ref[0].workers.values())).proc.pid)

    cfg = small_config(tmp_path, study={"name": "recycle", "n_trials": 5}, training={"epochs": 1},
                       executor={"mode": "processes", "cpu_workers": 1, "recycle_after": 2, "gpus": []}, **QUIET)
    summary = run_study(cfg, on_trial_end=on_end, on_pool=pool_ref.append)
    assert summary.n_complete == 5
    # After trials 2 and 4 the worker is retired; the pid seen after a trial is its replacement's from then on.
    assert len(set(pids)) == 3, pids
    assert pids[0] != pids[2] != pids[4]


def test_search_callbacks_instances_are_copied_per_trial_and_factories_called_per_trial(tmp_path: Path) -> None:
    """``hpo.search(..., callbacks=[...])``: an instance given once is a fresh copy in every trial (state never
    leaks between trials); a factory is called with each trial's directory."""
    import keras
    from sklearn.datasets import load_digits

    from hpo import search

    class Counter(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.epochs = 0

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.epochs += 1
            seen.append((self, self.epochs))  # the object itself: kept alive, no later copy can reuse its id

    seen: list[tuple[Any, int]] = []
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")

    def build(hp: Any) -> Any:
        m = keras.Sequential([keras.Input((64,)), keras.layers.Dense(hp.Int("units", 8, 16), activation="relu"),
                              keras.layers.Dense(10)])
        m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        return m

    given = Counter()
    kw: dict[str, Any] = dict(validation_data=(x[1000:1300], y[1000:1300]), test_data=(x[1300:], y[1300:]),
                              n_trials=3, epochs=2, sampler="random", ensemble=False, progress=False)
    search(build, x[:1000], y[:1000], run_dir=tmp_path / "a", callbacks=[given], **kw)
    assert given.epochs == 0  # the user's own object is never trained with
    per_object: dict[int, list[int]] = {}
    for obj, count in seen:
        per_object.setdefault(id(obj), []).append(count)
    assert sorted(per_object.values()) == [[1, 2]] * 3  # three fresh copies, each counting from zero

    dirs: list[str] = []

    def factory(trial_dir: Path) -> list[Any]:
        dirs.append(trial_dir.name)
        return [keras.callbacks.CSVLogger(str(trial_dir / "log.csv"))]

    search(build, x[:1000], y[:1000], run_dir=tmp_path / "b", callbacks=factory, **kw)
    assert sorted(dirs) == ["00000", "00001", "00002"]
    for name in dirs:
        rows = (tmp_path / "b" / "trials" / name / "log.csv").read_text().splitlines()
        assert len(rows) == 3  # header and 2 epochs
