"""Before a study writes anything: load the data, discover and override the space, build one model as a
preflight check, and write the study's own files once it may."""

from __future__ import annotations

import io
import json
import types
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from hpo.config import StudyConfig
from hpo.data import Splits, check_labels, leaves, load_dataset, take
from hpo.errors import ConfigError
from hpo.execution.forward import has_program, reported_names
from hpo.execution.trial import make_model
from hpo.execution.lazy_tensorflow import keep_tensorflow_unloaded
from hpo.execution.xla import enable_compilation_cache, host_initialisers
from hpo.redaction import redact
from hpo.results import replace_file, write_json
from hpo.space import Builder, SearchSpace, apply_overrides, discover
from hpo.space.builders import get_builder
from hpo.space.fit_params import declare_fit, searched_fit_params, with_fit_params


def prepare(cfg: StudyConfig, build: Builder | None = None, splits: Splits | None = None) -> tuple[Builder, Splits, SearchSpace]:
    """Load data, discover and override the space, and build one model as a preflight check."""
    if build is None:
        build = get_builder(cfg.space.builder)
    if splits is None:
        splits = load_dataset(cfg.data.dataset, path=cfg.data.path, seed=cfg.data.split_seed,
                              limit_train=cfg.data.limit_train, validation_size=cfg.data.validation_size)
    check_labels(splits)
    enable_compilation_cache()
    keep_tensorflow_unloaded()
    key = _prepared_key(build, splits, cfg)
    hit = _PREPARED.get(key) if key is not None else None
    if hit is not None and hit[0] is build:
        return build, splits, hit[1]
    # Discover through make_model so that the space's compile choices of a builder that does not
    # compile its own model are part of the space.
    with host_initialisers():  # under JAX, building a model compiles nothing (hpo.execution.xla)
        space = discover(lambda hp, spec: _declare(build, hp, spec), splits.spec, what="space.builder")
        if cfg.space.params:
            space = apply_overrides(space, cfg.space.params)
        space = with_fit_params(space, searched_fit_params(cfg.training))
        _preflight(build, space, splits, _model_metrics(cfg))
    if key is not None:
        while len(_PREPARED) >= 8:
            _PREPARED.pop(next(iter(_PREPARED)))
        _PREPARED[key] = (build, space)
    return build, splits, space


def _declare(build: Builder, hp: Any, spec: Any) -> Any:
    """One discovery build: the model, then (a KerasTuner HyperModel's) ``fit`` declarations without training."""
    model = make_model(build, hp, spec)
    declare_fit(build, hp, model)
    return model


# Spaces already discovered and checked in this process: a study that runs again with the same builder
# function, data and overrides (a notebook, a benchmark, `search` called in a loop) skips its discovery
# builds and preflight (0.3-0.4 s for the `mlp` builder on 2 cores). Only plain functions are keyed, by
# identity: a redefined function is a new key; a HyperModel or other object whose attributes may change
# between studies is discovered every time. clear_prepared() forgets them all.
_PREPARED: dict[tuple[Any, ...], tuple[Builder, SearchSpace]] = {}


def clear_prepared() -> None:
    """Forget the discovered spaces this process keeps (for a builder function whose declarations depend
    on state that changed since its last study)."""
    _PREPARED.clear()


def _prepared_key(build: Builder, splits: Splits, cfg: StudyConfig) -> tuple[Any, ...] | None:
    if not isinstance(build, types.FunctionType):
        return None
    try:
        cells = tuple(id(c.cell_contents) for c in build.__closure__ or ())
    except ValueError:  # a closure variable not assigned yet
        return None
    return (id(build), build.__code__, build.__defaults__, repr(build.__kwdefaults__), cells, repr(splits.spec),
            repr(sorted(splits.hashes.items())), json.dumps(cfg.space.params, sort_keys=True, default=str),
            json.dumps([cfg.training.epochs, cfg.training.batch_size], sort_keys=True, default=str),
            tuple(_model_metrics(cfg).items()))


def _model_metrics(cfg: StudyConfig) -> dict[str, str]:
    """The model metrics the config names, each with the field that names it: the objectives' and the
    constraints' (built-in measures are not the model's)."""
    from hpo.objectives import MEASURES

    many = cfg.multi_objective
    out = {f"objective[{i}].metric" if many else "objective.metric": o.metric for i, o in enumerate(cfg.objectives)}
    out |= {f"constraints[{i}].metric": c.metric for i, c in enumerate(cfg.constraints)}
    return {where: m for where, m in out.items() if m not in MEASURES}


def _preflight(build: Builder, space: SearchSpace, splits: Splits, metrics: dict[str, str]) -> None:
    """Build the default model and score two rows (under JAX, trace the scoring without compiling it): wrong
    shapes or an unknown metric stop here."""
    import keras

    try:
        model = make_model(build, space.hyperparameters_for(space.defaults()), splits.spec)
        idx = np.arange(min(2, splits.size("select")))
        x, y = take(splits.x["select"], idx), take(splits.y["select"], idx)
        if has_program(model):  # JAX: the trials' scoring program traced, nothing compiled
            reported = reported_names(model, x, y)
        else:  # test_on_batch: evaluate would also build a data pipeline and callbacks for two rows (~0.1 s)
            reported = list(model.test_on_batch(x, y, return_dict=True))
    except Exception as exc:
        raise ConfigError("data", f"the default model cannot be evaluated on this data ({type(exc).__name__}: "
                                  f"{str(exc)[:400]}); check input shapes, output names and label formats") from exc
    finally:
        keras.backend.clear_session(free_memory=False)
    from hpo.objectives import MEASURES

    for where, metric in metrics.items():
        if metric not in reported:
            known = f"; built-in measures: {', '.join(MEASURES)}" if where.startswith("constraints") else ""
            raise ConfigError(where, f"{metric!r} is not reported by the model; it reports {sorted(reported)}{known}")


def compile_ahead_of_trials(cfg: StudyConfig, build: Builder, splits: Splits, space: SearchSpace, *,
                            in_process: bool, callbacks: Any = None) -> bool:
    """Under JAX, when this process runs the study's trials one at a time and they train in supernets: build the
    supernet of the space's largest model and start compiling its train step in the background while the study
    opens (:func:`hpo.execution.supernet_state.compile_ahead`); True when that started. Nothing for packs,
    folds, a searched batch size, callbacks or a HyperModel ``fit`` override, whose trials train otherwise; a
    failure here only leaves the compilation to the first trial."""
    import logging
    import random

    from hpo.execution.supernet_state import compile_ahead
    from hpo.space.fit_params import overrides_fit

    if not in_process or cfg.training.folds or cfg.training.callbacks or callbacks is not None \
            or overrides_fit(build) or "batch_size" in searched_fit_params(cfg.training):
        return False
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with host_initialisers():
            return compile_ahead(build, space, lambda values: make_model(build, space.hyperparameters_for(values),
                                                                         splits.spec),
                                 splits.x["train"], splits.y["train"], cfg.training.batch_size)
    except Exception as exc:
        logging.getLogger(__name__).debug("no train step compiled ahead (%s: %s)", type(exc).__name__, exc)
        return False
    finally:  # the trials draw what they would have drawn without it
        random.setstate(py_state)
        np.random.set_state(np_state)


def is_config_builder(cfg: StudyConfig, build: Builder) -> bool:
    """True when ``build`` is the built-in builder the config names (workers import it by name)."""
    try:
        return get_builder(cfg.space.builder) is build
    except Exception:
        return False


def redacted_config(cfg: StudyConfig) -> dict[str, Any]:
    """The config as a dict with the passwords of its URLs hidden: what files, logs and MLflow may hold."""
    saved = cfg.to_dict()
    saved["driver"]["storage"] = redact(saved["driver"]["storage"])
    saved["tracking"]["uri"] = redact(saved["tracking"]["uri"])
    return saved


def _objectives_record(cfg: StudyConfig) -> dict[str, Any]:
    """study.json's record of several objectives and of constraints (nothing for one objective without them)."""
    out: dict[str, Any] = {}
    if cfg.multi_objective:
        out["objectives"] = [{"metric": o.metric, "direction": o.direction} for o in cfg.objectives]
    if cfg.constraints:
        out["constraints"] = [asdict(c) for c in cfg.constraints]
    return out


def save_study_files(cfg: StudyConfig, run_dir: Path, splits: Splits, space: SearchSpace) -> None:
    """config.yaml, space.json, study.json, data.json and labels.npz of a run directory."""
    import yaml

    run_dir.mkdir(parents=True, exist_ok=True)
    replace_file(run_dir / "config.yaml", yaml.safe_dump(redacted_config(cfg), sort_keys=False))
    write_json(run_dir / "space.json", space.describe())
    write_json(run_dir / "study.json", {"name": cfg.study.name, "direction": cfg.objective.direction,
                                        "objective": cfg.objective.metric, "driver": cfg.driver.name,
                                        **_objectives_record(cfg)})
    heads = [asdict(h) for h in splits.spec.heads]
    write_json(run_dir / "data.json", {
        "dataset": splits.name, "inputs": {k: list(v) for k, v in splits.spec.inputs.items()}, "heads": heads,
        "hashes": splits.hashes, "sizes": {s: splits.size(s) for s in splits.y},
        # a cross-validated study: train and select both hold the pool train+select, cut into k folds
        **({"folds": {"k": cfg.training.folds, "seed": cfg.study.seed, "pool": "train+select"}}
           if cfg.training.folds else {}),
    })
    labels = {}
    for s in ("select", "audit", "test"):
        ys = splits.y[s]
        arrays = ys if isinstance(ys, dict) else dict(zip([h.name for h in splits.spec.heads], leaves(ys)))
        for h in splits.spec.heads:
            labels[f"{s}/{h.name}"] = np.asarray(arrays[h.name])
    buf = io.BytesIO()  # through replace_file: a planted link at labels.npz is replaced, not followed
    np.savez_compressed(buf, **labels)
    replace_file(run_dir / "labels.npz", buf.getvalue())
