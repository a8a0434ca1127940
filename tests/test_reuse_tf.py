"""Compiled models reused across trials under TensorFlow (issue 23): a trial on the kept, already traced model of
its architecture ends exactly as a freshly built and traced model would, and a study gives the same results with
reuse on and off (``HPO_REUSE_COMPILED``). Runs under the test session's backend (TensorFlow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from hpo.execution import reuse
from hpo.execution.reuse_policy import SWITCH, evict, reuse_enabled, state_mb

from .conftest import small_config

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the TensorFlow path")


@pytest.fixture(autouse=True)
def _no_kept_models() -> Any:
    reuse.clear_twins()
    yield
    reuse.clear_twins()


def _prepared() -> tuple[Any, Any, Any]:
    from hpo.config import from_dict
    from hpo.study.prepare import prepare

    cfg = from_dict({"study": {"name": "s"}, "data": {"dataset": "digits"}, "space": {"builder": "mlp"},
                     "training": {"epochs": 3}})
    return prepare(cfg)


def _trial(prepared: tuple[Any, Any, Any], tmp: Path, number: int, seed: int, **params: Any) -> Any:
    from hpo.execution.trial import TrialSettings, run_trial

    build, splits, space = prepared
    r = run_trial(number=number, params={**space.defaults(), "units": 40, "dropout": 0.25, **params}, seed=seed,
                  build=build, space=space, splits=splits, settings=TrialSettings(epochs=3, save_models=False),
                  trial_dir=tmp / str(number))
    assert r.state.name == "COMPLETE", r.error
    return r


def _kept() -> Any:
    assert len(reuse._TWINS) == 1
    return next(iter(reuse._TWINS.values()))


def test_reused_traced_model_trains_to_the_weights_of_a_fresh_one(tmp_path: Path) -> None:
    prepared = _prepared()
    _trial(prepared, tmp_path, 0, seed=7, learning_rate=1e-3)
    twin = _kept()
    traced = twin.train_function
    # another seed (initial weights, dropout masks, shuffling) and learning rate, the same architecture
    reused = _trial(prepared, tmp_path, 1, seed=11, learning_rate=3e-3)
    assert _kept() is twin and twin.train_function is traced  # trained by the kept model, nothing traced again
    reused_weights = [keras.ops.convert_to_numpy(v) for v in twin.variables]
    reused_steps = int(twin.optimizer.iterations.numpy())
    reuse.clear_twins()
    fresh = _trial(prepared, tmp_path, 2, seed=11, learning_rate=3e-3)  # built and traced for this trial
    model = _kept()
    assert model is not twin
    assert reused_steps == int(model.optimizer.iterations.numpy()) > 0  # one trial's steps, not two trials'
    assert len(reused_weights) == len(model.variables)  # seed generator states included
    for a, b in zip(reused_weights, model.variables):
        np.testing.assert_allclose(a, keras.ops.convert_to_numpy(b), rtol=0, atol=1e-6)
    assert reused.history == fresh.history and reused.value == fresh.value
    with np.load(reused.predictions_path) as r, np.load(fresh.predictions_path) as f:
        for key in f.files:
            np.testing.assert_allclose(r[key], f[key], rtol=0, atol=1e-6)


def _study(tmp: Path, monkeypatch: pytest.MonkeyPatch, switch: str) -> tuple[list[dict[str, Any]], set[int]]:
    from hpo.study import run_study

    monkeypatch.setenv(SWITCH, switch)
    kept: set[int] = set()
    # one architecture, dropout on; only the learning rate is searched, so every trial after the first may reuse
    cfg = small_config(tmp, study={"name": f"reuse-{switch}", "n_trials": 3, "seed": 3},
                       space={"builder": "mlp", "params": {
                           "layers": {"fixed": 2}, "units": {"fixed": 24}, "activation": {"fixed": "relu"},
                           "dropout": {"fixed": 0.2}, "batchnorm": {"fixed": False}, "use_l2": {"fixed": False},
                           "optimizer": {"fixed": "adam"}}},
                       ensemble={"enabled": False})
    run_study(cfg, on_trial_end=lambda r, p: kept.update(id(m) for m in reuse._TWINS.values()))
    trials = []
    for path in sorted((tmp / "run" / "trials").glob("*/result.json"), key=lambda p: int(p.parent.name)):
        res = json.loads(path.read_text())
        with np.load(res["predictions_path"]) as f:
            res["predictions"] = {k: f[k] for k in f.files}
        trials.append(res)
    return trials, kept


def test_a_study_gives_the_same_results_with_reuse_on_and_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on, kept_on = _study(tmp_path / "on", monkeypatch, "on")
    reuse.clear_twins()
    off, kept_off = _study(tmp_path / "off", monkeypatch, "off")
    assert not reuse_enabled()
    assert len(kept_on) == 1 and not kept_off  # on: one model trained all three trials; off: none kept
    assert len(on) == len(off) == 3
    assert len({json.dumps(t["params"]["learning_rate"]) for t in on}) == 3
    for a, b in zip(on, off):
        assert a["params"] == b["params"] and a["seed"] == b["seed"] and a["state"] == b["state"] == "COMPLETE"
        assert a["history"] == b["history"] and a["value"] == b["value"]
        for key in b["predictions"]:
            np.testing.assert_allclose(a["predictions"][key], b["predictions"][key], rtol=0, atol=1e-6)


def test_kept_models_stay_within_their_count_and_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    from collections import OrderedDict

    def model(units: int) -> keras.Model:
        i = keras.Input((100,))
        return keras.Model(i, keras.layers.Dense(units)(i))

    m = model(1000)  # 100 x 1000 + 1000 float32 = 0.39 MB
    assert state_mb(m) == pytest.approx(101_000 * 4 / 2**20)
    kept: OrderedDict[str, Any] = OrderedDict((str(k), model(1000)) for k in range(5))
    evict(kept, 4)
    assert list(kept) == ["1", "2", "3", "4"]  # the least recently used first
    monkeypatch.setenv("HPO_REUSE_MAX_MB", "1.0")
    evict(kept, 4)
    assert list(kept) == ["3", "4"]
    monkeypatch.setenv("HPO_REUSE_MAX_MB", "0.1")
    evict(kept, 4)
    assert not kept  # a model alone over the budget is not kept
