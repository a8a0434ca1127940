"""The checks a study config passes before anything runs: values that types alone do not catch (ranges, names,
combinations of fields), each failure a :class:`hpo.errors.ConfigError` naming the field and the fix."""

from __future__ import annotations

import difflib
import math
import re
from typing import Mapping

from hpo.config.schema import COMBINES, METHODS, NAME_RE, PRUNERS, SAMPLERS, StudyConfig
from hpo.errors import ConfigError


def _one_of(value: str, allowed: tuple[str, ...], where: str) -> None:
    if value not in allowed:
        close = difflib.get_close_matches(value, allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(where, f"{value!r} is not one of {', '.join(allowed)}{hint}")


def validate(cfg: StudyConfig) -> StudyConfig:
    """Check values that types alone do not catch; returns ``cfg`` unchanged."""
    # The order of the checks decides which of several bad fields is named first: keep it.
    for check in (_check_study, _check_driver, _check_data, _check_training, _check_folds, _check_worker_liveness,
                  _check_executor, _check_objective, _check_ensemble, _check_extras, _check_guards):
        check(cfg)
    return cfg


def _check_study(cfg: StudyConfig) -> None:
    if not NAME_RE.fullmatch(cfg.study.name):  # fullmatch: `$` alone lets a trailing newline through
        raise ConfigError("study.name", f"{cfg.study.name!r} must be 1-100 letters, digits, '_', '-' or '.', starting with a letter or digit")
    if cfg.study.n_trials < 1:
        raise ConfigError("study.n_trials", f"must be at least 1, got {cfg.study.n_trials}")
    if cfg.study.seed < 0:
        raise ConfigError("study.seed", f"must be >= 0, got {cfg.study.seed}")
    t = cfg.study.timeout_s
    if t is not None and not (math.isfinite(t) and t > 0):
        raise ConfigError("study.timeout_s", f"must be a positive number of seconds (or null for no budget), got {t!r}")
    for i, point in enumerate(cfg.study.enqueue):
        if not isinstance(point, Mapping) or not point:
            raise ConfigError(f"study.enqueue[{i}]", f"must be a non-empty mapping {{param: value, ...}}, got {point!r}")
        for name in point:
            if not isinstance(name, str):
                raise ConfigError(f"study.enqueue[{i}]", f"parameter names are strings, got {name!r}")
    if cfg.study.warm_start is not None and not cfg.study.warm_start.strip():
        raise ConfigError("study.warm_start", "must name an earlier study's run directory (runs/<name>), or be null")


def _check_driver(cfg: StudyConfig) -> None:
    _one_of(cfg.driver.name, tuple(SAMPLERS), "driver.name")
    _one_of(cfg.driver.sampler, SAMPLERS[cfg.driver.name], "driver.sampler")
    _one_of(cfg.driver.pruner, PRUNERS, "driver.pruner")
    if cfg.driver.storage is not None and cfg.driver.name != "optuna":
        raise ConfigError("driver.storage", f"a shared storage needs the optuna driver; {cfg.driver.name} keeps its "
                                            "state in the run directory (remove driver.storage)")
    if cfg.driver.pruner != "none" and cfg.driver.name != "optuna":
        raise ConfigError("driver.pruner", f"pruning needs the optuna driver; set pruner: none for {cfg.driver.name}")


def _check_data(cfg: StudyConfig) -> None:
    from hpo.data import DATASETS

    _one_of(cfg.data.dataset, DATASETS, "data.dataset")
    if cfg.data.validation_size is not None:
        if cfg.data.dataset != "mnist":
            raise ConfigError("data.validation_size", f"applies to mnist only, not {cfg.data.dataset!r}; remove it")
        if not 2 <= cfg.data.validation_size <= 30_000:
            raise ConfigError("data.validation_size", f"must be between 2 and 30000 rows, got {cfg.data.validation_size}")
    if cfg.data.limit_train is not None and cfg.data.limit_train < 10:
        raise ConfigError("data.limit_train", f"must be at least 10, got {cfg.data.limit_train}")


def _check_training(cfg: StudyConfig) -> None:
    from hpo.space.fit_params import FIT_PARAMS, searched_fit_params

    for name in FIT_PARAMS:
        value = getattr(cfg.training, name)
        if isinstance(value, Mapping):
            continue  # checked as a parameter below
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"training.{name}", f"must be an integer of at least 1, or a range/values mapping "
                                                  f"such as {{min: 16, max: 256}} or {{values: [32, 64]}}; got {value!r}")
    searched = searched_fit_params(cfg.training)
    if "epochs" in searched and (cfg.driver.pruner == "hyperband" or cfg.driver.sampler == "hyperband"):
        raise ConfigError("training.epochs", "Hyperband allots each trial its epochs; give training.epochs a number "
                                             "(the maximum) or choose another pruner/oracle")
    if searched and cfg.ensemble.seed_refit:
        raise ConfigError("ensemble.seed_refit", f"retrains with one fixed batch size and epochs, but this study "
                                                 f"searches {', '.join(searched)}; set seed_refit: 0")
    if cfg.training.early_stopping_patience is not None and cfg.training.early_stopping_patience < 0:
        raise ConfigError("training.early_stopping_patience", "must be >= 0")
    if cfg.training.trial_timeout_s is not None and cfg.training.trial_timeout_s <= 0:
        raise ConfigError("training.trial_timeout_s", "must be > 0 seconds")
    if cfg.training.keep_top_models is not None and cfg.training.keep_top_models < 1:
        raise ConfigError("training.keep_top_models", f"must be at least 1 (or null to keep every model), got {cfg.training.keep_top_models}")
    k = cfg.training.keep_top_models
    if k is not None and cfg.ensemble.enabled and cfg.training.save_models and k < cfg.ensemble.size:
        raise ConfigError("training.keep_top_models", f"keeps {k} models but the ensemble may take {cfg.ensemble.size} "
                                                      "members: keep at least ensemble.size models")


def _check_folds(cfg: StudyConfig) -> None:
    """``training.folds`` and the fields it does not combine with (the rows per class are checked on the data)."""
    k = cfg.training.folds
    if k is None:
        return
    if k < 2:
        raise ConfigError("training.folds", f"must be at least 2 folds (or null for one train/select split), got {k}")
    if cfg.executor.pack > 1:
        raise ConfigError("executor.pack", "cross-validated trials (training.folds) train one model per fold and "
                                           "are not packed: set executor.pack: 1 or remove training.folds")
    if cfg.driver.pruner in ("hyperband", "successive_halving"):
        raise ConfigError("driver.pruner", f"the {cfg.driver.pruner} pruner's rungs count epochs of one model, but a "
                                           "cross-validated trial (training.folds) reports k folds one after another: "
                                           "use pruner: median or none, or remove training.folds")
    if cfg.ensemble.seed_refit:
        raise ConfigError("ensemble.seed_refit", "retrains on train and scores on select, which a cross-validated "
                                                 "study (training.folds) pools: set seed_refit: 0 (each trial is "
                                                 "already a bag of its fold models)")
    if cfg.ensemble.snapshot_epochs:
        raise ConfigError("ensemble.snapshot_epochs", "snapshots are of one model; a cross-validated trial "
                                                      "(training.folds) has k: remove snapshot_epochs or training.folds")


def _check_worker_liveness(cfg: StudyConfig) -> None:
    """Heartbeats, stale trials and storage retries of workers on a shared storage."""
    d = cfg.driver
    if d.heartbeat_s <= 0 or d.grace_s <= d.heartbeat_s:
        raise ConfigError("driver.grace_s" if d.heartbeat_s > 0 else "driver.heartbeat_s",
                          f"need heartbeat_s > 0 and grace_s > heartbeat_s, got {d.heartbeat_s} and {d.grace_s}")
    _one_of(d.stale_trials, ("fail", "retry"), "driver.stale_trials")
    if d.storage_retry_s < 0:
        raise ConfigError("driver.storage_retry_s", f"must be >= 0 seconds, got {d.storage_retry_s}")


def _check_executor(cfg: StudyConfig) -> None:
    e = cfg.executor
    _one_of(e.mode, ("auto", "inprocess", "processes"), "executor.mode")
    if e.gpus is not None and any((not isinstance(g, int) or isinstance(g, bool) or g < 0) for g in e.gpus):
        raise ConfigError("executor.gpus", f"must be a list of GPU indices (integers >= 0), got {e.gpus!r}")
    for key in ("workers_per_gpu", "cpu_workers"):
        if not 1 <= getattr(e, key) <= 64:
            raise ConfigError(f"executor.{key}", f"must be between 1 and 64, got {getattr(e, key)}")
    for key in ("threads_per_worker", "recycle_after"):
        if getattr(e, key) is not None and getattr(e, key) < 1:
            raise ConfigError(f"executor.{key}", f"must be at least 1 (or null), got {getattr(e, key)}")
    if e.memory_limit_mb is not None and e.memory_limit_mb < 256:
        raise ConfigError("executor.memory_limit_mb", f"must be at least 256 MB (or null), got {e.memory_limit_mb}")
    if e.start_timeout_s <= 0:
        raise ConfigError("executor.start_timeout_s", "must be > 0 seconds")
    if not isinstance(e.pack, int) or isinstance(e.pack, bool) or not 1 <= e.pack <= 512:
        raise ConfigError("executor.pack", f"must be a whole number of trials per packed model, 1 (off) to 512; got {e.pack!r}")


def _check_objective(cfg: StudyConfig) -> None:
    """Each objective's metric and direction; several objectives (see :mod:`hpo.config.objectives`)."""
    from hpo.config.objectives import check_objectives

    many = cfg.multi_objective
    seen: dict[str, int] = {}
    for i, o in enumerate(cfg.objectives):
        where = f"objective[{i}]" if many else "objective"
        _one_of(o.direction, ("maximize", "minimize"), f"{where}.direction")
        metric = o.metric
        if re.match(r"^(test|audit)[_:]", metric) or metric in ("test", "audit"):
            raise ConfigError(
                f"{where}.metric",
                f"{metric!r} names the {metric.split('_')[0].split(':')[0]} split; the driver may only optimise on the select half: "
                "give a plain metric name such as 'accuracy' or 'loss'",
            )
        if metric.startswith("val_"):
            raise ConfigError(f"{where}.metric", f"{metric!r}: give the metric without 'val_'; it is always scored on select")
        if metric in seen:
            raise ConfigError(f"{where}.metric", f"{metric!r} is already objective[{seen[metric]}]; each objective "
                                                 "needs a metric of its own (remove one of them)")
        seen[metric] = i
    check_objectives(cfg)


def _check_ensemble(cfg: StudyConfig) -> None:
    _one_of(cfg.ensemble.method, METHODS, "ensemble.method")
    _one_of(cfg.ensemble.combine, COMBINES, "ensemble.combine")
    _one_of(cfg.ensemble.metric, ("nll", "accuracy"), "ensemble.metric")
    bad = [e for e in cfg.ensemble.snapshot_epochs if not isinstance(e, int) or not 1 <= e < cfg.training.epochs]
    if bad:
        raise ConfigError("ensemble.snapshot_epochs", f"{bad} are not epochs before the last "
                                                      f"(1 to {cfg.training.epochs - 1}); the last epoch is the trial itself")
    if cfg.ensemble.snapshot_budget_mb <= 0 or cfg.ensemble.max_per_config < 1:
        raise ConfigError("ensemble.snapshot_budget_mb" if cfg.ensemble.snapshot_budget_mb <= 0 else "ensemble.max_per_config",
                          "must be positive (snapshot_budget_mb in MB, max_per_config at least 1)")
    if cfg.ensemble.method == "weights" and cfg.ensemble.combine == "vote":
        raise ConfigError("ensemble.combine", "weights are fitted for probs, logits or geometric, not vote: "
                                              "choose one of those or method: greedy")
    if cfg.ensemble.seed_refit is not None and not 0 <= cfg.ensemble.seed_refit <= 512:
        raise ConfigError("ensemble.seed_refit", f"must be between 0 and 512 members, got {cfg.ensemble.seed_refit}")
    if not 0 <= cfg.ensemble.confidence < 1:
        raise ConfigError("ensemble.confidence", f"must be at least 0 (any select gain adds a member) and below 1, "
                                                 f"got {cfg.ensemble.confidence}; 0.95 is the default")
    if cfg.ensemble.size < 1:
        raise ConfigError("ensemble.size", f"must be at least 1, got {cfg.ensemble.size}")


def _check_extras(cfg: StudyConfig) -> None:
    """Training callbacks and TensorBoard: checked by building them."""
    from hpo.config.callbacks import from_config

    from_config(cfg.training.callbacks)  # builds each once: bad names or arguments fail here
    if cfg.tensorboard.enabled:
        from hpo.tracking.tensorboard import available

        if not available():
            raise ConfigError("tensorboard.enabled", "needs the tensorboard package: pip install tensorboard")


def _check_guards(cfg: StudyConfig) -> None:
    g = cfg.guards
    if g.gap_threshold is not None and g.gap_threshold < 0:
        raise ConfigError("guards.gap_threshold", f"must be >= 0, got {g.gap_threshold}")
    if g.n_bootstrap < 100:
        raise ConfigError("guards.n_bootstrap", f"must be at least 100 resamples, got {g.n_bootstrap}")
    if not 0.5 < g.confidence < 1:
        raise ConfigError("guards.confidence", f"must lie in (0.5, 1), got {g.confidence}")
    if g.reselect_top_k < 0 or g.reselect_seeds < 1:
        raise ConfigError("guards.reselect_top_k" if g.reselect_top_k < 0 else "guards.reselect_seeds",
                          "reselect_top_k must be >= 0 and reselect_seeds >= 1")
    if g.stop_min_trials < 3:
        raise ConfigError("guards.stop_min_trials", f"must be at least 3, got {g.stop_min_trials}")


