"""The script API: :func:`search` takes the user's own builder and data, like KerasTuner's
``tuner.search(x, y, validation_data=...)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from hpo import config as config_mod
from hpo.data import DataSpec, Splits, check_rows, concat, infer_heads, n_rows, take
from hpo.errors import ConfigError
from hpo.space import Builder
from hpo.results import TrialResult
from hpo.study.context import TrialCallback
from hpo.study.live import SearchProgress
from hpo.study.run import run_study
from hpo.study.summary import StudyProgress, StudySummary


def _materialise(data: Any) -> tuple[Any, Any]:
    """(x, y) from arrays or a finite dataset of (x, y) batches (``tf.data`` or any iterable)."""
    if isinstance(data, tuple) and len(data) == 2:
        return data
    if hasattr(data, "as_numpy_iterator") or hasattr(data, "__iter__"):
        xs, ys = [], []
        for xb, yb in (data.as_numpy_iterator() if hasattr(data, "as_numpy_iterator") else data):
            xs.append(xb)
            ys.append(yb)
        return concat(xs), concat(ys)
    raise ConfigError("data", f"expected (x, y) arrays or a dataset of (x, y) batches, got {type(data).__name__}")


def _objective_fields(objective: str | Sequence[Mapping[str, Any]], direction: str,
                      constraints: Sequence[Mapping[str, Any]] | None) -> dict[str, Any]:
    """``objective`` (one metric and its direction, or a list of objectives) and ``constraints`` of a config."""
    one = isinstance(objective, str)
    return {"objective": {"metric": objective, "direction": direction} if one else [dict(o) for o in objective],
            "constraints": [dict(c) for c in constraints or []]}


def search(
    build: Builder,
    x: Any,
    y: Any = None,
    *,
    validation_data: Any,
    test_data: Any = None,
    name: str = "search",
    n_trials: int = 12,
    driver: str = "optuna",
    sampler: str | None = None,
    pruner: str = "none",
    epochs: int | Mapping[str, Any] = 10,
    batch_size: int | Mapping[str, Any] = 64,
    folds: int | None = None,
    objective: str | Sequence[Mapping[str, Any]] = "accuracy", direction: str = "maximize",
    constraints: Sequence[Mapping[str, Any]] | None = None,
    seed: int = 0,
    run_dir: str | Path | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    ensemble: bool | Mapping[str, Any] = True,
    callbacks: Any = None,
    tensorboard: bool = False,
    heads: Any = None,
    on_trial_end: TrialCallback | None = None,
    executor: Mapping[str, Any] | None = None,
    timeout_s: float | None = None,
    enqueue: list[Mapping[str, Any]] | None = None,
    warm_start: str | Path | None = None,
    progress: bool = True,
) -> StudySummary:
    """Search ``build(hp)`` on the user's own data, like ``tuner.search(x, y, validation_data=...)``.

    ``x``/``y`` may be arrays, lists or dicts of named arrays, or ``x`` a dataset of
    ``(x, y)`` batches (materialised into arrays). ``validation_data`` is cut into the
    ``select`` and ``audit`` halves; ``test_data``, when given, is the locked test split
    (otherwise 20% of ``x`` is held out). Labels stay in the form the user's loss expects.
    ``epochs`` and ``batch_size`` may be searched: a mapping as in ``space.params`` (``{"values": [32, 128]}``).
    ``folds=k`` cross-validates every trial on k folds of ``x`` and the select half (``training.folds``).
    ``build`` may be a ``keras_tuner.HyperModel``; its ``fit(hp, model, *args, **kwargs)`` override is called.
    ``objective`` (a list: several objectives) and ``constraints`` are those of a config (see the README).
    ``timeout_s``, ``enqueue`` and ``warm_start`` are ``study.timeout_s``, ``study.enqueue`` and
    ``study.warm_start`` of a config (see the README).

    ``progress`` shows trials done, the best so far, elapsed and remaining time while it runs: refreshed in
    place in Jupyter and on a terminal, a line per trial elsewhere; ``progress=False`` prints nothing.
    """
    splits = user_splits(x, y, validation_data, test_data, heads=heads, seed=seed, name=name)
    ens = {} if isinstance(ensemble, bool) else dict(ensemble)
    raw = {
        "study": {"name": name, "seed": seed, "n_trials": n_trials, "run_dir": str(run_dir) if run_dir else None,
                  "timeout_s": timeout_s, "enqueue": [dict(p) for p in enqueue or []],
                  "warm_start": str(warm_start) if warm_start is not None else None},
        "driver": {"name": driver, "sampler": sampler or config_mod.SAMPLERS.get(driver, ("tpe",))[0],
                   "pruner": pruner, "storage": storage},
        "data": {"dataset": "custom"},  # the data is given from Python
        "space": {"builder": getattr(build, "__module__", "user") + ":" + getattr(build, "__qualname__", "build")},
        "training": {"epochs": epochs, "batch_size": batch_size, "folds": folds},
        **_objective_fields(objective, direction, constraints),
        "tracking": {"uri": tracking_uri},
        "ensemble": {"enabled": bool(ensemble), **ens},
        "tensorboard": {"enabled": tensorboard},
        "executor": dict(executor or {}),
    }
    cfg = config_mod.from_dict(raw)
    if not progress:
        return run_study(cfg, build=build, splits=splits, callbacks=callbacks, on_trial_end=on_trial_end)
    live = SearchProgress(cfg.study.n_trials, cfg.objective.metric)

    def trial_end(result: TrialResult, state: StudyProgress) -> None:
        live.on_trial_end(result, state)
        if on_trial_end is not None:
            on_trial_end(result, state)

    try:
        return run_study(cfg, build=build, splits=splits, callbacks=callbacks, on_trial_end=trial_end,
                         on_epoch_end=live.on_epoch_end)
    finally:
        live.close()


def user_splits(x: Any, y: Any, validation_data: Any, test_data: Any, *, heads: Any, seed: int, name: str) -> Splits:
    """train/select/audit/test from the user's arrays: validation cut in halves, test given or 20% of ``x``."""
    if y is None:
        x, y = _materialise(x)
    xv, yv = _materialise(validation_data)
    check_rows(x, y, "y")  # before any cutting: rows of other lengths would be silently misaligned
    check_rows(xv, yv, "validation_data")
    if isinstance(x, dict):
        inputs = {k: tuple(np.asarray(v).shape[1:]) for k, v in x.items()}
    elif isinstance(x, (list, tuple)):
        inputs = {f"input_{i}": tuple(np.asarray(v).shape[1:]) for i, v in enumerate(x)}
    else:
        inputs = {"input": tuple(np.asarray(x).shape[1:])}
    spec = DataSpec(inputs, tuple(heads) if heads is not None else infer_heads(y))
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_rows(yv))
    half = len(perm) // 2
    if half < 1:
        raise ConfigError("validation_data", "needs at least 2 rows to cut into select and audit halves")
    sel, aud = perm[:half], perm[half:]
    if test_data is not None:
        xt, yt = _materialise(test_data)
        xs = {"train": x, "select": take(xv, sel), "audit": take(xv, aud), "test": xt}
        ys = {"train": y, "select": take(yv, sel), "audit": take(yv, aud), "test": yt}
    else:
        idx = rng.permutation(n_rows(y))
        n_test = max(1, int(0.2 * len(idx)))
        xs = {"train": take(x, idx[n_test:]), "select": take(xv, sel), "audit": take(xv, aud), "test": take(x, idx[:n_test])}
        ys = {"train": take(y, idx[n_test:]), "select": take(yv, sel), "audit": take(yv, aud), "test": take(y, idx[:n_test])}
    return Splits(x=xs, y=ys, spec=spec, name=name)
