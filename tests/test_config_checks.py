"""Every check a study config passes before anything runs, through ``from_dict`` and ``load``: each bad value is
refused with a ConfigError naming the field (and the accepted edge values pass). No training: these run in
milliseconds (and under mutation testing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hpo.config import StudyConfig, from_dict, load
from hpo.errors import ConfigError


def test_an_empty_config_is_the_default_study() -> None:
    assert from_dict({}) == StudyConfig()


def _refused(raw: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        from_dict(raw)
    return err.value


BAD: list[tuple[str, dict[str, Any], str, str]] = [
    # (id, config, field named, words of the message)
    ("name", {"study": {"name": "-x"}}, "study.name", "'-x' must be 1-100 letters, digits"),
    ("name too long", {"study": {"name": "a" * 101}}, "study.name", "must be 1-100"),
    ("name with slash", {"study": {"name": "a/b"}}, "study.name", "must be 1-100"),
    ("name with newline", {"study": {"name": "ab\n"}}, "study.name", "must be 1-100"),
    ("n_trials", {"study": {"n_trials": 0}}, "study.n_trials", "must be at least 1, got 0"),
    ("seed", {"study": {"seed": -1}}, "study.seed", "must be >= 0, got -1"),
    ("timeout 0", {"study": {"timeout_s": 0}}, "study.timeout_s", "must be a positive number of seconds"),
    ("timeout inf", {"study": {"timeout_s": float("inf")}}, "study.timeout_s", "positive number"),
    ("timeout nan", {"study": {"timeout_s": float("nan")}}, "study.timeout_s", "positive number"),
    ("enqueue empty", {"study": {"enqueue": [{"units": 8}, {}]}}, "study.enqueue[1]", "must be a non-empty mapping"),
    ("enqueue list", {"study": {"enqueue": [[1]]}}, "study.enqueue[0]", "must be a non-empty mapping"),
    ("enqueue key", {"study": {"enqueue": [{1: 2}]}}, "study.enqueue[0]", "parameter names are strings, got 1"),
    ("warm_start", {"study": {"warm_start": "  "}}, "study.warm_start", "must name an earlier study's run directory"),
    ("driver", {"driver": {"name": "smac"}}, "driver.name", "'smac' is not one of optuna, hyperopt, kerastuner"),
    ("driver typo", {"driver": {"name": "optuan"}}, "driver.name", "did you mean 'optuna'?"),
    ("sampler", {"driver": {"name": "hyperopt", "sampler": "cmaes"}}, "driver.sampler", "not one of tpe, anneal, rand"),
    ("pruner", {"driver": {"pruner": "asha"}}, "driver.pruner", "not one of none, median, successive_halving, hyperband"),
    ("storage", {"driver": {"name": "hyperopt", "sampler": "tpe", "storage": "sqlite:///x.db"}}, "driver.storage",
     "a shared storage needs the optuna driver; hyperopt keeps"),
    ("pruner driver", {"driver": {"name": "kerastuner", "sampler": "random", "pruner": "median"}}, "driver.pruner",
     "pruning needs the optuna driver; set pruner: none for kerastuner"),
    ("dataset", {"data": {"dataset": "cifar"}}, "data.dataset", "not one of digits, mnist"),
    ("validation_size digits", {"data": {"validation_size": 100}}, "data.validation_size",
     "applies to mnist only, not 'digits'"),
    ("validation_size low", {"data": {"dataset": "mnist", "validation_size": 1}}, "data.validation_size",
     "must be between 2 and 30000 rows, got 1"),
    ("validation_size high", {"data": {"dataset": "mnist", "validation_size": 30_001}}, "data.validation_size",
     "between 2 and 30000"),
    ("limit_train", {"data": {"limit_train": 9}}, "data.limit_train", "must be at least 10, got 9"),
    ("epochs 0", {"training": {"epochs": 0}}, "training.epochs", "must be an integer of at least 1, or a range"),
    ("epochs bool", {"training": {"epochs": True}}, "training.epochs", "got True"),
    ("batch text", {"training": {"batch_size": "64"}}, "training.batch_size", "must be an integer of at least 1"),
    ("batch float", {"training": {"batch_size": 64.0}}, "training.batch_size", "got 64.0"),
    ("epochs hyperband", {"training": {"epochs": {"min": 1, "max": 4}}, "driver": {"pruner": "hyperband"}},
     "training.epochs", "Hyperband allots each trial its epochs"),
    ("epochs hyperband oracle", {"training": {"epochs": {"min": 1, "max": 4}},
                                 "driver": {"name": "kerastuner", "sampler": "hyperband"}},
     "training.epochs", "Hyperband allots"),
    ("seed_refit searched", {"training": {"batch_size": {"values": [32, 64]}}, "ensemble": {"seed_refit": 2}},
     "ensemble.seed_refit", "searches batch_size; set seed_refit: 0"),
    ("patience", {"training": {"early_stopping_patience": -1}}, "training.early_stopping_patience", "must be >= 0"),
    ("trial timeout", {"training": {"trial_timeout_s": 0}}, "training.trial_timeout_s", "must be > 0 seconds"),
    ("keep_top_models", {"training": {"keep_top_models": 0}}, "training.keep_top_models", "must be at least 1"),
    ("keep_top_models ensemble", {"training": {"keep_top_models": 4}, "ensemble": {"size": 5}},
     "training.keep_top_models", "keeps 4 models but the ensemble may take 5 members"),
    ("folds 1", {"training": {"folds": 1}}, "training.folds", "must be at least 2 folds"),
    ("folds pack", {"training": {"folds": 3}, "executor": {"pack": 2}}, "executor.pack", "are not packed"),
    ("folds hyperband", {"training": {"folds": 3}, "driver": {"pruner": "hyperband"}}, "driver.pruner",
     "the hyperband pruner's rungs count epochs of one model"),
    ("folds seed_refit", {"training": {"folds": 3}, "ensemble": {"seed_refit": 2}}, "ensemble.seed_refit",
     "a cross-validated study (training.folds) pools"),
    ("folds snapshots", {"training": {"folds": 3}, "ensemble": {"snapshot_epochs": [2]}}, "ensemble.snapshot_epochs",
     "snapshots are of one model"),
    ("heartbeat", {"driver": {"heartbeat_s": 0}}, "driver.heartbeat_s", "need heartbeat_s > 0 and grace_s > heartbeat_s"),
    ("grace", {"driver": {"heartbeat_s": 10, "grace_s": 10}}, "driver.grace_s", "got 10.0 and 10.0"),
    ("stale", {"driver": {"stale_trials": "skip"}}, "driver.stale_trials", "not one of fail, retry"),
    ("storage retry", {"driver": {"storage_retry_s": -1}}, "driver.storage_retry_s", "must be >= 0 seconds, got -1.0"),
    ("mode", {"executor": {"mode": "threads"}}, "executor.mode", "not one of auto, inprocess, processes"),
    ("gpus negative", {"executor": {"gpus": [0, -1]}}, "executor.gpus", "must be a list of GPU indices"),
    ("gpus text", {"executor": {"gpus": ["0"]}}, "executor.gpus", "integers >= 0"),
    ("gpus bool", {"executor": {"gpus": [True]}}, "executor.gpus", "GPU indices"),
    ("workers_per_gpu 0", {"executor": {"workers_per_gpu": 0}}, "executor.workers_per_gpu",
     "must be between 1 and 64, got 0"),
    ("cpu_workers 65", {"executor": {"cpu_workers": 65}}, "executor.cpu_workers", "between 1 and 64, got 65"),
    ("threads", {"executor": {"threads_per_worker": 0}}, "executor.threads_per_worker", "must be at least 1 (or null)"),
    ("recycle", {"executor": {"recycle_after": 0}}, "executor.recycle_after", "must be at least 1 (or null), got 0"),
    ("memory", {"executor": {"memory_limit_mb": 255}}, "executor.memory_limit_mb", "must be at least 256 MB"),
    ("start timeout", {"executor": {"start_timeout_s": 0}}, "executor.start_timeout_s", "must be > 0 seconds"),
    ("pack 0", {"executor": {"pack": 0}}, "executor.pack", "1 (off) to 512; got 0"),
    ("pack 513", {"executor": {"pack": 513}}, "executor.pack", "got 513"),
    ("direction", {"objective": {"direction": "up"}}, "objective.direction", "not one of maximize, minimize"),
    ("test metric", {"objective": {"metric": "test_accuracy"}}, "objective.metric",
     "'test_accuracy' names the test split; the driver may only optimise on the select half"),
    ("audit metric", {"objective": {"metric": "audit:loss"}}, "objective.metric", "names the audit split"),
    ("test alone", {"objective": {"metric": "test"}}, "objective.metric", "'test' names the test split"),
    ("audit alone", {"objective": {"metric": "audit"}}, "objective.metric", "names the audit split"),
    ("val metric", {"objective": {"metric": "val_accuracy"}}, "objective.metric", "give the metric without 'val_'"),
    ("method", {"ensemble": {"method": "stack"}}, "ensemble.method", "not one of greedy, top_k, weights"),
    ("combine", {"ensemble": {"combine": "max"}}, "ensemble.combine", "not one of probs, logits, geometric, vote"),
    ("ensemble metric", {"ensemble": {"metric": "auc"}}, "ensemble.metric", "not one of nll, accuracy"),
    ("snapshot last", {"ensemble": {"snapshot_epochs": [3, 10]}}, "ensemble.snapshot_epochs",
     "[10] are not epochs before the last (1 to 9)"),
    ("snapshot 0", {"ensemble": {"snapshot_epochs": [0]}}, "ensemble.snapshot_epochs", "[0] are not epochs"),
    ("snapshot float", {"ensemble": {"snapshot_epochs": [2.0]}}, "ensemble.snapshot_epochs", "[2.0] are not epochs"),
    ("snapshot budget", {"ensemble": {"snapshot_budget_mb": 0}}, "ensemble.snapshot_budget_mb", "must be positive"),
    ("max_per_config", {"ensemble": {"max_per_config": 0}}, "ensemble.max_per_config", "must be positive"),
    ("weights vote", {"ensemble": {"method": "weights", "combine": "vote"}}, "ensemble.combine",
     "weights are fitted for probs, logits or geometric, not vote"),
    ("seed_refit range", {"ensemble": {"seed_refit": 513}}, "ensemble.seed_refit", "between 0 and 512 members, got 513"),
    ("seed_refit negative", {"ensemble": {"seed_refit": -1}}, "ensemble.seed_refit", "between 0 and 512"),
    ("size", {"ensemble": {"size": 0}, "training": {"save_models": False}}, "ensemble.size", "must be at least 1, got 0"),
    ("callback", {"training": {"callbacks": [{"name": "NoSuchCallback"}]}}, "training.callbacks[0].name", "unknown Keras callback"),
    ("gap threshold", {"guards": {"gap_threshold": -0.1}}, "guards.gap_threshold", "must be >= 0, got -0.1"),
    ("bootstrap", {"guards": {"n_bootstrap": 99}}, "guards.n_bootstrap", "at least 100 resamples, got 99"),
    ("confidence low", {"guards": {"confidence": 0.5}}, "guards.confidence", "must lie in (0.5, 1), got 0.5"),
    ("confidence high", {"guards": {"confidence": 1.0}}, "guards.confidence", "must lie in (0.5, 1)"),
    ("reselect_top_k", {"guards": {"reselect_top_k": -1}}, "guards.reselect_top_k", "reselect_top_k must be >= 0"),
    ("reselect_seeds", {"guards": {"reselect_seeds": 0}}, "guards.reselect_seeds", "reselect_seeds >= 1"),
    ("stop_min_trials", {"guards": {"stop_min_trials": 2}}, "guards.stop_min_trials", "must be at least 3, got 2"),
    # types and keys (schema)
    ("unknown section", {"bogus": {}}, "bogus", "unknown key; known: study, driver, data"),
    ("unknown key", {"driver": {"samplr": "tpe"}}, "driver.samplr", "unknown key; did you mean 'sampler'?"),
    ("section not mapping", {"driver": ["optuna"]}, "driver", "must be a mapping of fields, got list"),
    ("int as text", {"study": {"n_trials": "ten"}}, "study.n_trials", "must be an integer, got 'ten'"),
    ("int as bool", {"study": {"n_trials": True}}, "study.n_trials", "must be an integer, got True"),
    ("int as float", {"study": {"seed": 1.0}}, "study.seed", "must be an integer"),
    ("optional int", {"data": {"limit_train": "100"}}, "data.limit_train", "must be an integer, got '100'"),
    ("bool", {"training": {"deterministic": "yes"}}, "training.deterministic", "must be true or false, got 'yes'"),
    ("bool as int", {"plots": {"enabled": 1}}, "plots.enabled", "must be true or false, got 1"),
    ("float as text", {"driver": {"heartbeat_s": "10"}}, "driver.heartbeat_s", "must be a number, got '10'"),
    ("float as bool", {"guards": {"confidence": True}}, "guards.confidence", "must be a number, got True"),
    ("str", {"driver": {"name": 3}}, "driver.name", "must be a string, got 3"),
    ("optional str", {"driver": {"storage": 3}}, "driver.storage", "must be a string, got 3"),
    ("list", {"study": {"enqueue": {"units": 8}}}, "study.enqueue", "must be a list, got dict"),
    ("mapping", {"space": {"params": ["units"]}}, "space.params", "must be a mapping, got list"),
]


@pytest.mark.parametrize("raw, field, words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_bad_value_is_refused_naming_its_field(raw: dict[str, Any], field: str, words: str) -> None:
    err = _refused(raw)
    assert err.field == field, str(err)
    assert words in err.message, err.message


EDGES: list[tuple[str, dict[str, Any]]] = [
    ("name of 100", {"study": {"name": "a" * 100}}),
    ("name chars", {"study": {"name": "9a_b-c.d"}}),
    ("one trial", {"study": {"n_trials": 1, "seed": 0, "timeout_s": 0.5}}),
    ("enqueue", {"study": {"enqueue": [{"units": 8}], "warm_start": "runs/x"}}),
    ("every sampler", {"driver": {"name": "kerastuner", "sampler": "bayesian"}}),
    ("optuna pruner and storage", {"driver": {"pruner": "median", "storage": "sqlite:///x.db"}}),
    ("mnist rows", {"data": {"dataset": "mnist", "validation_size": 2, "limit_train": 10}}),
    ("mnist rows high", {"data": {"dataset": "mnist", "validation_size": 30_000}}),
    ("searched fit", {"training": {"epochs": {"min": 1, "max": 4}, "batch_size": {"values": [16, 32]}}}),
    ("searched epochs and median", {"training": {"epochs": {"min": 1, "max": 4}}, "driver": {"pruner": "median"}}),
    ("one epoch", {"training": {"epochs": 1, "batch_size": 1, "early_stopping_patience": 0,
                                "trial_timeout_s": 0.1}}),
    ("keep_top_models", {"training": {"keep_top_models": 5}, "ensemble": {"size": 5}}),
    ("keep_top_models without ensemble", {"training": {"keep_top_models": 1}, "ensemble": {"enabled": False}}),
    ("keep_top_models without models", {"training": {"keep_top_models": 1, "save_models": False}}),
    ("folds", {"training": {"folds": 2}, "driver": {"pruner": "median"}}),
    ("liveness", {"driver": {"heartbeat_s": 0.1, "grace_s": 0.2, "stale_trials": "retry", "storage_retry_s": 0}}),
    ("executor", {"executor": {"mode": "processes", "gpus": [0, 1], "workers_per_gpu": 64, "cpu_workers": 1,
                               "threads_per_worker": 1, "recycle_after": 1, "memory_limit_mb": 256,
                               "start_timeout_s": 0.1, "pack": 512}}),
    ("no gpus", {"executor": {"gpus": [], "pack": 1}}),
    ("objective", {"objective": {"metric": "loss", "direction": "minimize"}}),
    ("metric named like a split", {"objective": {"metric": "testing_accuracy"}}),
    ("ensemble", {"ensemble": {"method": "weights", "combine": "geometric", "metric": "accuracy",
                               "snapshot_epochs": [1, 9], "snapshot_budget_mb": 0.5, "max_per_config": 1,
                               "seed_refit": 512, "size": 1}}),
    ("top_k vote", {"ensemble": {"method": "top_k", "combine": "vote", "seed_refit": 0}}),
    ("guards", {"guards": {"gap_threshold": 0, "n_bootstrap": 100, "confidence": 0.51, "reselect_top_k": 0,
                           "reselect_seeds": 1, "stop_min_trials": 3}}),
    ("guards high", {"guards": {"confidence": 0.999}}),
    ("callbacks", {"training": {"callbacks": [{"name": "ReduceLROnPlateau", "args": {"patience": 2}}]}}),
    ("null sections", {"study": None, "plots": None}),
    ("float given as int", {"driver": {"heartbeat_s": 5, "grace_s": 30}}),
    ("tensorboard", {"tensorboard": {"enabled": True, "histograms": True}}),
]


@pytest.mark.parametrize("raw", [e[1] for e in EDGES], ids=[e[0] for e in EDGES])
def test_edge_values_are_accepted(raw: dict[str, Any]) -> None:
    from_dict(raw)


def test_values_are_read_with_their_types() -> None:
    cfg = from_dict({"driver": {"heartbeat_s": 5}, "executor": {"gpus": (0, 1)}, "space": {"params": {"u": {"min": 1}}},
                     "study": {"timeout_s": 3, "run_dir": None}})
    assert cfg.driver.heartbeat_s == 5.0 and type(cfg.driver.heartbeat_s) is float
    assert type(cfg.study.timeout_s) is float and cfg.study.run_dir is None
    assert cfg.executor.gpus == [0, 1] and type(cfg.executor.gpus) is list
    assert cfg.space.params == {"u": {"min": 1}} and type(cfg.space.params) is dict


def test_the_first_bad_section_in_check_order_is_named() -> None:
    err = _refused({"guards": {"n_bootstrap": 1}, "study": {"n_trials": 0}, "ensemble": {"size": 0}})
    assert err.field == "study.n_trials"
    err = _refused({"guards": {"n_bootstrap": 1}, "ensemble": {"method": "x"}})
    assert err.field == "ensemble.method"


def test_the_run_directory_and_search_identity() -> None:
    cfg = from_dict({"study": {"name": "abc", "seed": 3}, "training": {"epochs": 4}})
    assert str(cfg.run_dir) == "runs/abc"
    assert str(from_dict({"study": {"run_dir": "/tmp/x"}}).run_dir) == "/tmp/x"
    ident = cfg.search_identity()
    assert ident["seed"] == 3 and ident["driver"] == {"name": "optuna", "sampler": "tpe"}
    assert ident["training"] == {"epochs": 4, "batch_size": 64}
    assert ident["data"] == cfg.to_dict()["data"] and ident["space"] == {"builder": "mlp", "params": {}}
    assert ident["objective"] == {"metric": "accuracy", "direction": "maximize"}
    assert set(ident) == {"data", "space", "objective", "driver", "training", "seed"}
    folded = from_dict({"training": {"folds": 3}}).search_identity()
    assert folded["training"] == {"epochs": 10, "batch_size": 64, "folds": 3}


def test_the_epoch_horizon_of_a_searched_epoch_count() -> None:
    assert from_dict({"training": {"epochs": 7}}).max_epochs == 7
    assert from_dict({"training": {"epochs": {"min": 2, "max": 9}}}).max_epochs == 9
    assert from_dict({"training": {"epochs": {"values": [3, 12, 5]}}}).max_epochs == 12
    assert from_dict({"training": {"epochs": {"min": 2, "max": 64, "log": True}}}).max_epochs == 64


def test_yaml_files_load_or_say_what_is_wrong(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("study:\n  name: fromyaml\n  n_trials: 3\n")
    cfg = load(good)
    assert cfg.study.name == "fromyaml" and cfg.study.n_trials == 3
    assert load(str(good)) == cfg
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load(empty) == StudyConfig()
    cases = {
        "missing.yaml": (None, "config", "file not found: '"),
        "bad.yaml": ("study: [unclosed\n", "config", "is not valid YAML"),
        "list.yaml": ("- a\n- b\n", "config", "must hold a mapping of sections, got list"),
        "badvalue.yaml": ("study:\n  n_trials: 0\n", "study.n_trials", "at least 1"),
    }
    for name, (text, field, words) in cases.items():
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        with pytest.raises(ConfigError) as err:
            load(path)
        assert err.value.field == field and words in err.value.message, str(err.value)
        if name == "missing.yaml":
            assert str(path) in err.value.message
        elif name != "badvalue.yaml":
            assert str(path) in err.value.message


def test_tensorboard_without_its_package_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` fails as when it is not installed
    err = _refused({"tensorboard": {"enabled": True}})
    assert (err.field, err.message) == ("tensorboard.enabled", "needs the tensorboard package: pip install tensorboard")
    from_dict({"tensorboard": {"enabled": False}})


EXACT: list[tuple[dict[str, Any], str, str]] = [
    # the whole message a user reads: field and fix
    ({"ensemble": {"snapshot_budget_mb": 0}}, "ensemble.snapshot_budget_mb",
     "must be positive (snapshot_budget_mb in MB, max_per_config at least 1)"),
    ({"ensemble": {"snapshot_budget_mb": 0.5, "max_per_config": 0}}, "ensemble.max_per_config",
     "must be positive (snapshot_budget_mb in MB, max_per_config at least 1)"),
    ({"ensemble": {"method": "weights", "combine": "vote"}}, "ensemble.combine",
     "weights are fitted for probs, logits or geometric, not vote: choose one of those or method: greedy"),
    ({"executor": {"start_timeout_s": 0}}, "executor.start_timeout_s", "must be > 0 seconds"),
    ({"training": {"folds": 3}, "executor": {"pack": 2}}, "executor.pack",
     "cross-validated trials (training.folds) train one model per fold and are not packed: set executor.pack: 1 or "
     "remove training.folds"),
    ({"training": {"folds": 3}, "driver": {"pruner": "hyperband"}}, "driver.pruner",
     "the hyperband pruner's rungs count epochs of one model, but a cross-validated trial (training.folds) reports k folds one "
     "after another: use pruner: median or none, or remove training.folds"),
    ({"training": {"folds": 3}, "ensemble": {"seed_refit": 2}}, "ensemble.seed_refit",
     "retrains on train and scores on select, which a cross-validated study (training.folds) pools: set seed_refit: "
     "0 (each trial is already a bag of its fold models)"),
    ({"training": {"folds": 3}, "ensemble": {"snapshot_epochs": [2]}}, "ensemble.snapshot_epochs",
     "snapshots are of one model; a cross-validated trial (training.folds) has k: remove snapshot_epochs or "
     "training.folds"),
    ({"guards": {"reselect_seeds": 0}}, "guards.reselect_seeds", "reselect_top_k must be >= 0 and reselect_seeds >= 1"),
    ({"objective": {"metric": "test_accuracy"}}, "objective.metric",
     "'test_accuracy' names the test split; the driver may only optimise on the select half: give a plain metric "
     "name such as 'accuracy' or 'loss'"),
    ({"driver": {"heartbeat_s": 0.5, "grace_s": 0.2}}, "driver.grace_s",
     "need heartbeat_s > 0 and grace_s > heartbeat_s, got 0.5 and 0.2"),
    ({"training": {"trial_timeout_s": 0}}, "training.trial_timeout_s", "must be > 0 seconds"),
    ({"training": {"early_stopping_patience": -1}}, "training.early_stopping_patience", "must be >= 0"),
    ({"driver": {"name": "hyperopt", "sampler": "tpe", "storage": "sqlite:///x.db"}}, "driver.storage",
     "a shared storage needs the optuna driver; hyperopt keeps its state in the run directory (remove "
     "driver.storage)"),
    ({"study": {"warm_start": " "}}, "study.warm_start",
     "must name an earlier study's run directory (runs/<name>), or be null"),
    ({"training": {"epochs": {"min": 1, "max": 4}}, "driver": {"pruner": "hyperband"}}, "training.epochs",
     "Hyperband allots each trial its epochs; give training.epochs a number (the maximum) or choose another "
     "pruner/oracle"),
    ({"training": {"epochs": {"min": 1, "max": 4}, "batch_size": {"values": [32]}}, "ensemble": {"seed_refit": 2}},
     "ensemble.seed_refit", "retrains with one fixed batch size and epochs, but this study searches batch_size, "
                            "epochs; set seed_refit: 0"),
    ({"driver": {"name": "smac"}}, "driver.name", "'smac' is not one of optuna, hyperopt, kerastuner"),
    ({"training": {"batch_size": {"values": [32]}, "epochs": 0}}, "training.epochs",
     "must be an integer of at least 1, or a range/values mapping such as {min: 16, max: 256} or {values: [32, 64]}; "
     "got 0"),
]


@pytest.mark.parametrize("raw, field, message", EXACT, ids=[e[1] + str(i) for i, e in enumerate(EXACT)])
def test_the_whole_message_names_the_field_and_the_fix(raw: dict[str, Any], field: str, message: str) -> None:
    err = _refused(raw)
    assert (err.field, err.message) == (field, message)


def test_a_config_built_in_code_is_checked_like_one_read_from_yaml() -> None:
    from hpo.config import ExecutorSection, validate

    for pack in (True, 2.0):
        with pytest.raises(ConfigError) as err:
            validate(StudyConfig(executor=ExecutorSection(pack=pack)))
        assert err.value.field == "executor.pack" and f"got {pack!r}" in err.value.message
