"""Several objectives and constraints on digits: the Pareto front recomputed from the trials' records, infeasible
trials kept out of the front and the ensemble, the built-in measures, and the bad input refused before any trial."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pytest

from hpo.config import from_dict
from hpo.errors import ConfigError
from hpo.study import run_study

PARAMS_MAX = 3000.0  # one layer of 8 units fits under it; two layers of 64 do not
SMALL = {"params": {"layers": {"min": 1, "max": 2}, "units": {"min": 8, "max": 64, "log": True}}}
TWO = [{"metric": "accuracy", "direction": "maximize"}, {"metric": "params", "direction": "minimize"}]


def _raw(tmp: Path, **sections: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "study": {"name": "mo", "seed": 0, "n_trials": 5, "run_dir": str(tmp / "run"),
                  # one trial surely feasible and one surely not, whatever the sampler proposes
                  "enqueue": [{"layers": 1, "units": 8}, {"layers": 2, "units": 64}]},
        "data": {"dataset": "digits"},
        "space": {"builder": "mlp", **SMALL},
        "training": {"epochs": 1, "batch_size": 128},
        "objective": TWO,
        "constraints": [{"metric": "params", "max": PARAMS_MAX}],
        "ensemble": {"size": 3},
    }
    return raw | sections


@pytest.fixture(scope="module")
def mo_study(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("mo")
    cfg = from_dict(_raw(tmp))
    return cfg, run_study(cfg)


def _records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((run_dir / "trials").glob("*/result.json"))]


def _front(records: list[dict[str, Any]]) -> set[int]:
    """Non-dominated feasible complete trials (accuracy up, params down), recomputed from result.json alone."""
    pts = [(r["number"], r["metrics"]["select_accuracy"], r["measures"]["params"]) for r in records
           if r["state"] == "COMPLETE" and r["measures"]["params"] <= PARAMS_MAX]

    def dominated(a: tuple[int, float, float]) -> bool:
        return any(b[1] >= a[1] and b[2] <= a[2] and (b[1] > a[1] or b[2] < a[2]) for b in pts)

    return {p[0] for p in pts if not dominated(p)}


def test_front_is_recomputable_and_infeasible_trials_stay_out(mo_study: Any) -> None:
    cfg, summary = mo_study
    records = _records(cfg.run_dir)
    complete = [r for r in records if r["state"] == "COMPLETE"]
    assert len(complete) == 5
    for r in complete:  # built-in measures on every trial; the values told are the select score and the measure
        assert r["measures"]["params"] > 0
        assert "latency_ms_per_1k" not in r["measures"]  # timed only when an objective or constraint names it
        assert r["measures"]["epoch_seconds"] > 0
        assert r["values"] == [r["metrics"]["select_accuracy"], r["measures"]["params"]]
        assert r["feasible"] == (r["measures"]["params"] <= PARAMS_MAX)
        assert r["constraints"] == [r["measures"]["params"] - PARAMS_MAX]
    infeasible = {r["number"] for r in complete if not r["feasible"]}
    assert infeasible and len(infeasible) < len(complete)  # the enqueued pair: one of each
    front = {p["number"] for p in summary.pareto_front}
    assert front == _front(records) and not front & infeasible
    saved = json.loads((cfg.run_dir / "pareto_front.json").read_text())
    assert {p["number"] for p in saved["front"]} == front and saved["n_infeasible"] == len(infeasible)
    # the chosen trial: the front's best accuracy
    best = max(summary.pareto_front, key=lambda p: (p["select"]["accuracy"], -p["number"]))
    assert summary.best_trial == best["number"]
    assert summary.best_select == best["select"]["accuracy"] and summary.best_test
    # the ensemble draws from feasible trials only
    assert summary.ensemble and {m["trial"] for m in summary.ensemble["member_records"]}.isdisjoint(infeasible)
    # Optuna's own study: two directions, the constraints its sampler recorded, and its best_trials
    study = optuna.load_study(study_name="mo", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(cfg.run_dir / "optuna.journal"))))
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert all(list(t.constraints.values()) == [t.values[1] - PARAMS_MAX] for t in study.trials)
    assert {t.number for t in study.best_trials} == front


def test_front_in_mlflow_summary_and_report(mo_study: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from hpo.cli.summary import print_summary

    cfg, summary = mo_study
    client = mlflow.tracking.MlflowClient(f"sqlite:///{cfg.run_dir.resolve() / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("mo").experiment_id], max_results=100)
    parent = next(r for r in runs if r.data.tags.get("hpo.kind") == "study")
    front = sorted(p["number"] for p in summary.pareto_front)
    assert parent.data.tags["hpo.pareto_front"] == ",".join(map(str, front))
    assert parent.data.metrics["n_infeasible"] == summary.n_infeasible
    assert parent.data.metrics["chosen_params"] == next(p["select"]["params"] for p in summary.pareto_front
                                                        if p["number"] == summary.best_trial)
    trials = {int(r.data.tags["hpo.trial"]): r for r in runs if r.data.tags.get("hpo.kind") == "trial"}
    for r in _records(cfg.run_dir):
        run = trials[r["number"]]
        assert run.data.metrics["params"] == r["measures"]["params"]
        assert run.data.tags["hpo.feasible"] == str(r["feasible"]).lower()
    assert "params" in summary.guards["per_objective"]  # the second objective's guard entry on the chosen trial
    print_summary(cfg, summary)
    out = capsys.readouterr().out
    assert f"Pareto front ({len(front)} feasible non-dominated trials on select; {summary.n_infeasible}" in out
    assert f" * trial {summary.best_trial}: accuracy=" in out
    html = Path(summary.report).read_text()
    assert "<h2>Pareto front</h2>" in html and "select accuracy" in html and "audit accuracy" in html


def test_nsga2_drives_a_two_objective_study(tmp_path: Path) -> None:
    raw = _raw(tmp_path, driver={"sampler": "nsga2"}, ensemble={"enabled": False}, report={"enabled": False},
               plots={"enabled": False}, objective=[TWO[0], {"metric": "loss", "direction": "minimize"}])
    raw["study"] = raw["study"] | {"n_trials": 3, "enqueue": []}
    del raw["constraints"]
    summary = run_study(from_dict(raw))
    records = [r for r in _records(Path(raw["study"]["run_dir"])) if r["state"] == "COMPLETE"]
    assert len(records) == 3 and all(r["values"] == [r["metrics"]["select_accuracy"], r["metrics"]["select_loss"]]
                                     for r in records)
    assert "feasible" not in summary.trials[0] and summary.n_infeasible == 0
    pts = [(r["number"], r["values"][0], r["values"][1]) for r in records]
    expected = {a[0] for a in pts if not any(b[1] >= a[1] and b[2] <= a[2] and (b[1] > a[1] or b[2] < a[2])
                                             for b in pts)}
    assert {p["number"] for p in summary.pareto_front} == expected
    assert summary.guards["per_objective"]["loss"]["incumbent_check"] is not None  # a model metric: gap tested


@pytest.mark.parametrize("change, field", [
    ({"driver": {"name": "hyperopt"}}, "objective"),
    ({"driver": {"name": "kerastuner", "sampler": "random"}}, "objective"),
    ({"driver": {"pruner": "median"}}, "driver.pruner"),
    ({"objective": [TWO[0], {"metric": "accuracy", "direction": "minimize"}]}, "objective[1].metric"),
    ({"objective": [TWO[1], TWO[0]]}, "objective[0].metric"),
    ({"constraints": [{"metric": "params"}]}, "constraints[0]"),
    ({"driver": {"sampler": "cmaes"}}, "driver.sampler"),
    ({"executor": {"pack": 4}}, "executor.pack"),
])
def test_bad_multi_objective_config_names_the_field(tmp_path: Path, change: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(_raw(tmp_path, **change))
    assert err.value.field == field


def test_constraints_need_optuna(tmp_path: Path) -> None:
    raw = _raw(tmp_path, driver={"name": "hyperopt"}, objective={"metric": "accuracy"})
    with pytest.raises(ConfigError) as err:
        from_dict(raw)
    assert err.value.field == "constraints" and "optuna" in str(err.value)


def test_constraint_on_unknown_metric_is_refused_before_any_trial(tmp_path: Path) -> None:
    cfg = from_dict(_raw(tmp_path, constraints=[{"metric": "auc", "min": 0.9}]))
    with pytest.raises(ConfigError) as err:
        run_study(cfg)
    assert err.value.field == "constraints[0].metric" and "latency_ms_per_1k" in str(err.value)
    assert not (cfg.run_dir / "trials").exists()


def test_one_objective_config_is_unchanged(tmp_path: Path) -> None:
    raw = _raw(tmp_path, objective={"metric": "accuracy", "direction": "maximize"})
    del raw["constraints"]
    cfg = from_dict(raw)
    assert not cfg.multi_objective and cfg.objectives == [cfg.objective]
    d = cfg.to_dict()
    assert d["objective"] == {"metric": "accuracy", "direction": "maximize"} and "constraints" not in d
    assert "more_objectives" not in d and "constraints" not in cfg.search_identity()
    assert from_dict(d) == cfg
    with pytest.raises(ConfigError) as err:  # the internal field is not a config key
        from_dict(raw | {"more_objectives": []})
    assert err.value.field == "more_objectives"


def test_a_study_without_feasible_trials_chooses_nothing(tmp_path: Path) -> None:
    raw = _raw(tmp_path, objective={"metric": "accuracy", "direction": "maximize"},
               constraints=[{"metric": "params", "max": 10}], report={"enabled": False}, plots={"enabled": False})
    raw["study"] = raw["study"] | {"n_trials": 2}
    summary = run_study(from_dict(raw))
    assert summary.n_complete == 2 and summary.n_infeasible == 2
    assert summary.pareto_front == [] and summary.best_trial is None and summary.ensemble is None
    assert summary.guards is None and summary.best_test == {}


def test_search_takes_several_objectives_and_constraints(tmp_path: Path) -> None:
    import keras

    from hpo.data import load_dataset
    from hpo.study import search

    def build(hp: Any) -> Any:
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(hp.Int("units", 4, 32, sampling="log"),
                                                                         activation="relu"), keras.layers.Dense(10)])
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        return model

    s = load_dataset("digits")
    summary = search(build, s.x["train"], s.y["train"], validation_data=(s.x["select"], s.y["select"]),
                     test_data=(s.x["test"], s.y["test"]), name="mo-api", n_trials=2, epochs=1,
                     run_dir=tmp_path / "r", ensemble=False, progress=False,
                     objective=[{"metric": "accuracy", "direction": "maximize"},
                                {"metric": "latency_ms_per_1k", "direction": "minimize"}],
                     constraints=[{"metric": "params", "max": 1000}])
    records = _records(tmp_path / "r")
    assert len(records) == 2 and summary.objectives[1] == {"metric": "latency_ms_per_1k", "direction": "minimize"}
    for r in records:  # units u: 64u + u + 10u + 10 parameters
        u = r["params"]["units"]
        assert r["measures"]["params"] == 75 * u + 10 and r["feasible"] == (75 * u + 10 <= 1000)
        assert r["values"] == [r["metrics"]["select_accuracy"], r["measures"]["latency_ms_per_1k"]]


def test_a_worker_takes_the_objectives_and_constraints_from_the_stored_config(tmp_path: Path) -> None:
    from hpo.drivers.stored import study_fields_only
    from hpo.study.prepare import redacted_config

    cfg = from_dict(_raw(tmp_path))
    joined = from_dict(study_fields_only(redacted_config(cfg)))  # what `hpo worker --study --storage` builds
    assert joined.objectives == cfg.objectives and joined.constraints == cfg.constraints
    assert joined.search_identity() == cfg.search_identity()
