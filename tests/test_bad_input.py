"""Bad input stops a study before any trial with one ConfigError naming the field, and writes nothing:
no run directory, no tracking store, no study storage. Also the safety rules: run paths cannot escape,
model files load in Keras' safe mode, servers bind to 127.0.0.1.

(The config cases of tests/test_config.py::BAD and the hypothesis tests of tests/test_hardening.py are not
repeated here; experiments/RELIABILITY.md lists every kind with the test that covers it.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpo.cli import build_parser, main
from hpo.config import NAME_RE, from_dict, load
from hpo.data import Head, load_digits_splits
from hpo.errors import ConfigError
from hpo.space import SearchSpace, discover, validate_param
from hpo.study import run_study, search

from .conftest import small_config

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])


def _stores(tmp: Path) -> dict[str, Any]:
    """Config sections that put the tracking store and the study storage outside the run directory."""
    return {"tracking": {"uri": f"sqlite:///{tmp / 'stores' / 'mlflow.db'}"},
            "driver": {"storage": f"sqlite:///{tmp / 'stores' / 'optuna.db'}"}}


def _assert_nothing_written(tmp: Path) -> None:
    written = [p for p in tmp.rglob("*") if p.name not in ("bad.yaml",) and not p.name.startswith(".hypothesis")]
    assert not written, f"bad input wrote {written}"


# -- config files ------------------------------------------------------------------------------
CONFIG_CASES = [
    # (kind, patch, field)
    ("study name escaping the runs directory", {"study": {"name": "../evil"}}, "study.name"),
    ("study name with a path separator", {"study": {"name": "a/b"}}, "study.name"),
    ("hidden study name", {"study": {"name": ".hidden"}}, "study.name"),
    ("objective naming the audit split", {"objective": {"metric": "audit_accuracy"}}, "objective.metric"),
    ("objective with the val_ prefix", {"objective": {"metric": "val_accuracy"}}, "objective.metric"),
    ("metric the model does not report", {"objective": {"metric": "mae"}}, "objective.metric"),
    ("empty choice list", {"space": {"params": {"activation": {"values": []}}}}, "space.params.activation.values"),
    ("repeated choice values", {"space": {"params": {"activation": {"values": ["relu", "relu"]}}}},
     "space.params.activation"),
    ("infinite bound", {"space": {"params": {"units": {"min": float("inf"), "max": 64}}}}, "space.params.units.min"),
    ("zero step", {"space": {"params": {"units": {"step": 0}}}}, "space.params.units"),
    ("fractional bound of an integer", {"space": {"params": {"layers": {"min": 1.5, "max": 2}}}},
     "space.params.layers.min"),
    ("log range below 0", {"space": {"params": {"learning_rate": {"min": -0.1, "max": 0.1}}}},
     "space.params.learning_rate"),
    ("fixed value outside the declared range", {"space": {"params": {"units": {"fixed": 5000}}}},
     "space.params.units.fixed"),
    ("fixed value not a declared choice", {"space": {"params": {"activation": {"fixed": "swish"}}}},
     "space.params.activation.fixed"),
    ("values with an undeclared choice", {"space": {"params": {"activation": {"values": ["relu", "swish"]}}}},
     "space.params.activation.values"),
    ("fixed boolean given as text", {"space": {"params": {"batchnorm": {"fixed": "no"}}}},
     "space.params.batchnorm.fixed"),
    ("worker memory cap too small", {"executor": {"memory_limit_mb": 10}}, "executor.memory_limit_mb"),
    ("negative GPU index", {"executor": {"gpus": [-1]}}, "executor.gpus"),
    ("unknown executor mode", {"executor": {"mode": "threads"}}, "executor.mode"),
    ("ensemble of 0 members", {"ensemble": {"size": 0}}, "ensemble.size"),
    ("fewer kept models than ensemble members", {"training": {"keep_top_models": 1}}, "training.keep_top_models"),
    ("batch size 0", {"training": {"batch_size": 0}}, "training.batch_size"),
    ("negative seed", {"study": {"seed": -1}}, "study.seed"),
    ("grace shorter than the heartbeat", {"driver": {"heartbeat_s": 5, "grace_s": 1}}, "driver.grace_s"),
    ("confidence outside (0.5, 1)", {"guards": {"confidence": 1.5}}, "guards.confidence"),
    ("too little training data", {"data": {"limit_train": 5}}, "data.limit_train"),
    ("MNIST-only option on digits", {"data": {"validation_size": 100}}, "data.validation_size"),
]


@pytest.mark.parametrize("kind, patch, field", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_names_the_field_and_no_store_is_created(tmp_path: Path, kind: str, patch: dict[str, Any],
                                                            field: str, capsys: pytest.CaptureFixture[str]) -> None:
    raw = small_config(tmp_path).to_dict()
    for section, values in {**_stores(tmp_path), **patch}.items():
        raw[section] = {**raw[section], **values}
    if "driver" in patch:
        raw["driver"]["storage"] = _stores(tmp_path)["driver"]["storage"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as err:
        run_study(load(path))
    assert err.value.field == field, str(err.value)
    assert main(["run", str(path), "--quiet"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}:"), lines
    _assert_nothing_written(tmp_path)


# -- the script API's data ----------------------------------------------------------------------
def _builder(hp: Any) -> keras.Model:
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(hp.Int("units", 2, 8), activation="relu"),
                          keras.layers.Dense(3)])
    m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return m


def _data(n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((n, 4)).astype("float32"), (np.arange(n) % 3).astype("int64")


def _search(tmp: Path, build: Callable[..., Any] = _builder, x: Any = None, y: Any = None, val: Any = None,
            test: Any = None, **kw: Any) -> Any:
    x0, y0 = _data()
    return search(build, x0 if x is None else x, y0 if y is None else y,
                  validation_data=(x0, y0) if val is None else val, test_data=(x0, y0) if test is None else test,
                  run_dir=tmp / "run", tracking_uri=f"sqlite:///{tmp / 'stores' / 'mlflow.db'}",
                  storage=f"sqlite:///{tmp / 'stores' / 'optuna.db'}", n_trials=1, epochs=1, ensemble=False, **kw)


X, Y = _data()
X_NAN = X.copy()
X_NAN[5, 2] = np.nan
X_INF = X.copy()
X_INF[7, 0] = np.inf


def _dup_other_range(hp: Any) -> keras.Model:
    hp.Int("units", 10, 20)
    return _builder(hp)


def _dup_other_kind(hp: Any) -> keras.Model:
    hp.Choice("units", ["a", "b"])
    return _builder(hp)


def _log_from_zero(hp: Any) -> keras.Model:
    hp.Float("lr", 0.0, 0.1, sampling="log")
    return _builder(hp)


def _inverted(hp: Any) -> keras.Model:
    hp.Int("width", 9, 3)
    return _builder(hp)


def _empty_choice(hp: Any) -> keras.Model:
    hp.Choice("act", [])
    return _builder(hp)


def _returns_none(hp: Any) -> None:
    hp.Int("units", 2, 8)
    return None


DATA_CASES = [
    # (kind, search kwargs, field)
    ("NaN in the training inputs", {"x": X_NAN}, "data.train.x"),
    ("infinity in the validation inputs", {"val": (X_INF, Y)}, ("data.select.x", "data.audit.x")),
    ("NaN in regression labels", {"y": np.full(60, np.nan, "float32")}, "data.train.y"),
    ("infinity in the test inputs", {"test": (X_INF, Y)}, "data.test.x"),
    ("labels outside the classes in the test split", {"test": (X, Y + 3)}, "data.test.y.output"),
    ("negative labels", {"y": Y - 1, "heads": [Head("output", "multiclass", 3)]}, "data.train.y.output"),
    ("binary labels other than 0/1", {"y": Y, "heads": [Head("output", "binary", 1)]}, "data.train.y.output"),
    ("inputs and labels of different lengths", {"y": Y[:50]}, "y"),
    ("validation inputs and labels of different lengths", {"val": (X, Y[:40])}, "validation_data"),
    ("test inputs and labels of different lengths", {"test": (X[:30], Y)}, "data.test"),
    ("inputs of the wrong width", {"x": X[:, :3], "val": (X[:, :3], Y), "test": (X[:, :3], Y)}, "data"),
    ("one-dimensional inputs", {"x": X[:, 0], "val": (X[:, 0], Y), "test": (X[:, 0], Y)}, "data"),
    ("a single validation row", {"val": (X[:1], Y[:1])}, "validation_data"),
    ("one name declared twice with different ranges", {"build": _dup_other_range}, "space.units"),
    ("one name declared twice with different kinds", {"build": _dup_other_kind}, "space.units"),
    ("log range touching 0 in the builder", {"build": _log_from_zero}, "space.builder"),
    ("inverted range in the builder", {"build": _inverted}, "space.builder"),
    ("empty choice in the builder", {"build": _empty_choice}, "space.builder"),
    ("builder returning None", {"build": _returns_none}, "space.builder"),
    ("unknown objective metric", {"objective": "auc"}, "objective.metric"),
    ("objective naming the test split", {"objective": "test_accuracy"}, "objective.metric"),
    ("unknown driver", {"driver": "smac"}, "driver.name"),
    ("unknown direction", {"direction": "up"}, "objective.direction"),
]


@pytest.mark.parametrize("kind, kw, field", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data_or_builder_is_refused_before_any_trial(tmp_path: Path, kind: str, kw: dict[str, Any],
                                                         field: str | tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as err:
        _search(tmp_path, **kw)
    assert err.value.field in ((field,) if isinstance(field, str) else field), str(err.value)
    assert err.value.message
    _assert_nothing_written(tmp_path)


corruptions = st.sampled_from(["nan", "inf", "-inf", "label_high", "label_negative", "short_labels"])


@FAST
@given(split=st.sampled_from(["train", "validation", "test"]), how=corruptions, row=st.integers(0, 59),
       col=st.integers(0, 3))
def test_any_corrupted_array_gives_one_error_naming_it(tmp_path_factory: pytest.TempPathFactory, split: str, how: str,
                                                       row: int, col: int) -> None:
    tmp = tmp_path_factory.mktemp("corrupt")
    parts = {"train": list(_data()), "validation": list(_data()), "test": list(_data())}
    x, y = parts[split]
    x, y = x.copy(), y.copy()
    if how in ("nan", "inf", "-inf"):
        x[row, col] = float(how)
    elif how == "label_high":
        y[row] = 3 + col
    elif how == "label_negative":
        y[row] = -1 - col
    else:
        y = y[: row % 59]
    parts[split] = [x, y]
    heads = [Head("output", "multiclass", 3)]
    with pytest.raises(ConfigError) as err:
        search(_builder, parts["train"][0], parts["train"][1], validation_data=tuple(parts["validation"]),
               test_data=tuple(parts["test"]), heads=heads, run_dir=tmp / "run",
               tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}", n_trials=1, epochs=1, ensemble=False)
    named = {"train": ("data.train", "y"), "validation": ("data.select", "data.audit", "validation_data"),
             "test": ("data.test",)}[split]
    assert err.value.field.startswith(named), (split, how, err.value.field)
    assert not list(tmp.iterdir()), "bad data wrote files"


numbers = st.one_of(st.integers(-5, 50), st.floats(-5, 50, allow_nan=False), st.just(0), st.just(0.0))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["Int", "Float"]), low=numbers, high=numbers, step=st.one_of(st.none(), numbers),
       sampling=st.sampled_from(["linear", "log", "reverse_log"]))
def test_any_declared_range_gives_a_valid_space_or_one_config_error(kind: str, low: Any, high: Any, step: Any,
                                                                    sampling: str) -> None:
    """Property: whatever range a builder declares, discovery yields a valid space or one ConfigError on space.*"""
    def build(hp: Any) -> keras.Model:
        if kind == "Int":
            hp.Int("p", int(low), int(high), step=None if step is None else int(step), sampling=sampling)
        else:
            hp.Float("p", float(low), float(high), step=step, sampling=sampling)
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])

    try:
        space = discover(build, None, what="space.builder")
    except ConfigError as exc:
        assert exc.field.startswith("space."), exc.field
        return
    assert isinstance(space, SearchSpace)
    p = space["p"]
    validate_param(p, "p")
    assert p.low <= p.default <= p.high and p.low < p.high
    if p.log:
        assert p.low > 0


def test_bad_data_in_a_config_run_writes_no_store(tmp_path: Path) -> None:
    """The config path (run_study with the user's own splits) checks data before opening any store."""
    s = load_digits_splits()
    s.x["audit"] = s.x["audit"].copy()
    s.x["audit"][0, 0] = np.nan
    cfg = small_config(tmp_path, **_stores(tmp_path))
    with pytest.raises(ConfigError) as err:
        run_study(cfg, splits=s)
    assert err.value.field == "data.audit.x"
    _assert_nothing_written(tmp_path)


# -- safety ------------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_any_accepted_study_name_keeps_its_run_directory_inside_runs(name: str) -> None:
    """Run directories (and every trial and artifact path under them) are built from the study name."""
    try:
        cfg = from_dict({"study": {"name": name}})
    except ConfigError as exc:
        assert exc.field == "study.name"
        assert not NAME_RE.fullmatch(name)  # as the config checks: `$` alone lets a final newline through
        return
    runs = Path("runs").resolve()
    assert cfg.run_dir.resolve().parent == runs
    assert (cfg.run_dir / "trials" / "00000").resolve().is_relative_to(runs / name)


def test_a_model_file_with_a_lambda_layer_is_refused_by_safe_mode(tmp_path: Path) -> None:
    """Model files (trial models, ensemble artifacts) are loaded with safe_mode=True: no code in them runs."""
    from ensembles.artifact import load_ensemble

    marker = tmp_path / "pwned"
    inp = keras.Input((4,))
    out = keras.layers.Lambda(lambda t: t * 2.0)(inp)
    evil = tmp_path / "ensemble"
    evil.mkdir()
    keras.Model(inp, out).save(evil / "ensemble.keras")
    with pytest.raises(ValueError, match="safe_mode"):
        load_ensemble(evil)
    assert not marker.exists()


@pytest.mark.parametrize("command, extra", [("ui", []), ("tensorboard", []), ("dashboard", [])])
def test_servers_bind_to_loopback_unless_told_otherwise(command: str, extra: list[str]) -> None:
    args = build_parser().parse_args([command, "runs/x", *extra])
    assert args.host == "127.0.0.1"
    assert build_parser().parse_args([command, "runs/x", "--host", "0.0.0.0"]).host == "0.0.0.0"


def test_config_reader_refuses_python_tags_and_the_hpo_sync_reader_too(tmp_path: Path) -> None:
    """Every YAML the package reads goes through safe_load: hpo sync reads the run's saved config.yaml."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "study.json").write_text("{}")
    marker = tmp_path / "pwned"
    (run / "config.yaml").write_text(f"tracking: !!python/object/apply:os.system ['touch {marker}']\n")
    (run / "mlflow_outbox.jsonl").write_text("")
    with pytest.raises(yaml.YAMLError):
        main(["sync", str(run)])
    assert not marker.exists()
