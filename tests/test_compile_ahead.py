"""Under JAX a study of dense stacks compiles its supernet's train step while it opens (hpo.execution.ahead): the
first trial finds it compiled, and every trial trains exactly as when the first trial compiles it itself."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.jax_script import run_jax_script

JAX_SCRIPT = textwrap.dedent("""
    import json, os, time
    from pathlib import Path
    from jax import monitoring
    events = []
    monitoring.register_event_duration_secs_listener(
        lambda e, d, **k: events.append((time.monotonic(), k.get("fun_name")))
        if e == "/jax/core/compile/backend_compile_duration" else None)
    import hpo.study.trials as trials_mod
    from hpo.config import load
    from hpo.execution.templates import clear_templates
    from hpo.study import run_study
    from hpo.study.prepare import clear_prepared, compile_ahead_of_trials, prepare

    windows = []
    inner = trials_mod.run_trial

    def timed(**kw):
        t0 = time.monotonic()
        result = inner(**kw)
        windows.append((t0, time.monotonic()))
        return result

    trials_mod.run_trial = timed

    def config(name, **training):
        cfg = load(str(ROOT / "experiments" / "quickstart.yaml"))  # the README's search, shorter
        cfg.study.name, cfg.study.run_dir, cfg.study.n_trials = name, str(Path(name).resolve()), 4
        cfg.training.epochs, cfg.ensemble.enabled = 3, False
        for k, v in training.items():
            setattr(cfg.training, k, v)
        return cfg

    def study(name):
        events.clear(); windows.clear()
        run_study(config(name))
        start = windows[0][0]
        trials = [[f for t, f in events if a <= t < b] for a, b in windows]
        results = [json.loads(p.read_text()) for p in sorted(Path(name, "trials").glob("*/result.json"))]
        return {"startup": [f for t, f in events if t < start], "trials": trials,
                "values": [r["value"] for r in results], "params": [r["params"] for r in results]}

    from hpo.execution.ahead import MIN_CORES, enabled
    out = {"auto": enabled(), "cores": len(os.sched_getaffinity(0)), "min_cores": MIN_CORES}
    os.environ["HPO_COMPILE_AHEAD"] = "on"  # whatever the cores of the machine running this test
    out["ahead"] = study("ahead")
    # what a study that cannot use it does not start: packs or workers, folds, callbacks
    build, splits, space = prepare(config("other"))
    clear_templates()  # the first study's supernet is kept: compile_ahead would start nothing anyway
    out["not_in_process"] = compile_ahead_of_trials(config("x"), build, splits, space, in_process=False)
    out["folds"] = compile_ahead_of_trials(config("x", folds=3), build, splits, space, in_process=True)
    out["callbacks"] = compile_ahead_of_trials(config("x"), build, splits, space, in_process=True,
                                               callbacks=lambda d: [])
    out["in_process"] = compile_ahead_of_trials(config("x"), build, splits, space, in_process=True)
    from hpo.execution.ahead import wait
    from hpo.execution.templates import _TEMPLATES
    for entry in _TEMPLATES.values():  # its compilation ends before the next study starts counting
        wait(entry.ready)
    clear_templates(); clear_prepared()
    os.environ["HPO_COMPILE_AHEAD"] = "off"
    out["off"] = study("off")
    print("RESULT" + json.dumps(out))
""").replace("ROOT / ", f"Path({str(Path(__file__).resolve().parent.parent)!r}) / ")


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_jax_script(JAX_SCRIPT, tmp_path_factory.mktemp("ahead"))


def test_the_supernet_train_step_compiles_once_before_the_first_trial(jax_run: dict[str, Any]) -> None:
    ahead = jax_run["ahead"]
    # start-up compiles one function, the train step of the supernet of the space's largest model
    assert ahead["startup"] == ["jit(train_step)"], ahead["startup"]
    # the first trial finds it compiled: it compiles only its scoring program; the others nothing
    assert ahead["trials"][0] == ["jit(score_and_predict)"], ahead["trials"]
    assert all(t == [] for t in ahead["trials"][1:]), ahead["trials"]
    # without it, the first trial compiles that train step itself (the cost moved, not removed)
    off = jax_run["off"]
    assert off["startup"] == [] and sorted(off["trials"][0]) == ["jit(score_and_predict)", "jit(train_step)"], off


def test_trials_train_exactly_as_when_the_first_trial_compiles(jax_run: dict[str, Any]) -> None:
    ahead, off = jax_run["ahead"], jax_run["off"]
    assert len({json.dumps(p, sort_keys=True) for p in ahead["params"]}) == 4  # distinct configurations
    assert ahead["params"] == off["params"]
    assert ahead["values"] == off["values"]


def test_by_default_it_compiles_ahead_only_where_cores_are_left_for_it(jax_run: dict[str, Any]) -> None:
    # on two cores the study's main thread and MLflow writer process use them both while it opens
    assert jax_run["auto"] == (jax_run["cores"] >= jax_run["min_cores"] >= 3), jax_run


def test_studies_whose_trials_train_elsewhere_compile_nothing_ahead(jax_run: dict[str, Any]) -> None:
    assert not jax_run["not_in_process"] and not jax_run["folds"] and not jax_run["callbacks"]
    assert jax_run["in_process"]  # the same study, its trials in this process, one at a time
