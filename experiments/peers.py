"""The peers the benchmark compares against: KerasTuner's own tuners and a bare build-fit-evaluate loop.

Everything here runs the same builder on the same splits as our studies:

- :func:`run_kerastuner` runs KerasTuner's real ``RandomSearch``, ``BayesianOptimization`` or
  ``Hyperband`` tuner with ``tuner.search(...)`` (its own oracle, its own trial loop, its own
  best-epoch checkpoints) and scores its best model on audit and test;
- :func:`bare_loop` is the reference a driver's overhead is measured against: for each given
  configuration, build, ``fit`` on train, ``evaluate`` on select, nothing else;
- :func:`replay_tuner` is KerasTuner's ``RandomSearch`` tuner whose oracle proposes a given list
  of configurations (so its wall time can be set beside ours on the very same configurations).

Model code only uses Keras; seeds come from :func:`hpo.repro.trial_seed` as in our studies.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from experiments._common import tree_cpu_s

KT_SEED_OFFSET = 1  # KerasTuner's oracles take seed 0 as no seed at all
KT_TOOLS = {"kt_random": "RandomSearch", "kt_bayesian": "BayesianOptimization", "kt_hyperband": "Hyperband"}


def configs_hash(configs: Sequence[Mapping[str, Any]]) -> str:
    """sha256 (16 hex digits) of the sampled configurations, in trial order."""
    text = json.dumps([dict(sorted(c.items())) for c in configs], sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def logits_metrics(logits: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy, NLL and ECE of a model's logits (the same functions the ensembles are scored with)."""
    from ensembles.metrics import classification_metrics, softmax

    return classification_metrics(softmax(np.asarray(logits, dtype=np.float64)), np.asarray(y))


def _hypermodel(build: Any, spec: Any, seed: int) -> Any:
    """A ``kt.HyperModel`` that builds with our builder and seeds each build like our trials are seeded."""
    import keras_tuner as kt

    from hpo.repro import seed_everything, trial_seed
    from hpo.execution.trial import make_model

    class Seeded(kt.HyperModel):
        def __init__(self) -> None:
            super().__init__()
            self.count = 0

        def build(self, hp: Any) -> Any:
            seed_everything(trial_seed(seed, self.count))
            self.count += 1
            return make_model(build, hp, spec)

    return Seeded()


def _trial_params(space: Any, trial: Any) -> dict[str, Any]:
    values = {k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")}
    return space.active(values)


def run_kerastuner(tool: str, build: Any, space: Any, splits: Any, *, n_trials: int, epochs: int, batch_size: int,
                   seed: int, directory: Path) -> dict[str, Any]:
    """Run KerasTuner's own tuner ``tool`` (kt_random, kt_bayesian, kt_hyperband) with ``tuner.search``.

    RandomSearch and BayesianOptimization get ``max_trials=n_trials`` with ``epochs`` each. Hyperband
    gets ``max_epochs=epochs`` and the same total epoch budget (``n_trials * epochs``): its search stops
    once the epochs it has trained reach that budget (it trains more, shorter trials). The best trial
    (by KerasTuner's score: the best epoch's select accuracy) is reloaded from its checkpoint and scored
    on audit and test.
    """
    import keras
    import keras_tuner as kt

    directory = Path(directory)
    if directory.exists():
        shutil.rmtree(directory)
    hm = _hypermodel(build, splits.spec, seed)
    # KerasTuner's oracles read seed 0 as "no seed" (`seed or random.randint(...)`): give them seed + 1.
    common = dict(hypermodel=hm, objective=kt.Objective("val_accuracy", "max"), seed=seed + KT_SEED_OFFSET,
                  hyperparameters=space.to_kerastuner(), tune_new_entries=False, directory=str(directory.parent),
                  project_name=directory.name, overwrite=True, max_consecutive_failed_trials=n_trials + 1)
    budget = n_trials * epochs
    if tool == "kt_random":
        tuner = kt.RandomSearch(max_trials=n_trials, **common)
    elif tool == "kt_bayesian":
        tuner = kt.BayesianOptimization(max_trials=n_trials, **common)
    elif tool == "kt_hyperband":
        tuner = kt.Hyperband(max_epochs=epochs, factor=3, hyperband_iterations=1000, **common)
        oracle = tuner.oracle
        propose = oracle.populate_space

        def within_budget(trial_id: str) -> dict[str, Any]:
            if _epochs_trained(oracle, epochs) >= budget:
                return {"status": "STOPPED"}
            return propose(trial_id)

        oracle.populate_space = within_budget  # the same epoch budget as the other tools
    else:
        raise ValueError(f"unknown KerasTuner tool {tool!r}; one of {', '.join(KT_TOOLS)}")
    t0 = time.monotonic()
    tuner.search(splits.x["train"], splits.y["train"], validation_data=(splits.x["select"], splits.y["select"]),
                 epochs=epochs, batch_size=batch_size, verbose=0)
    wall = time.monotonic() - t0
    trials = [tuner.oracle.trials[t] for t in tuner.oracle.start_order]
    configs = [_trial_params(space, t) for t in trials]
    best = tuner.oracle.get_best_trials(1)[0]
    model = tuner.load_model(best)
    out: dict[str, Any] = {"tool": tool, "seed": seed, "n_trials": len(trials),
                           "epochs_trained": _epochs_trained(tuner.oracle, epochs), "wall_s": round(wall, 2),
                           "configs_hash": configs_hash(configs), "best_trial": int(tuner.oracle.start_order.index(best.trial_id)),
                           "best_select": float(best.score), "best_params": _trial_params(space, best),
                           "failed": sum(t.status != "COMPLETED" for t in trials)}
    for split in ("audit", "test"):
        z = model.predict(splits.x[split], batch_size=1024, verbose=0)
        out[split] = logits_metrics(z, splits.y[split])
    del model
    keras.backend.clear_session()
    return out


def _epochs_trained(oracle: Any, epochs: int) -> int:
    """Epochs the oracle's trials trained (Hyperband's later rounds resume from the earlier round's epoch)."""
    total = 0
    for t in oracle.trials.values():
        v = t.hyperparameters.values
        total += int(v.get("tuner/epochs", epochs)) - int(v.get("tuner/initial_epoch", 0))
    return total


def replay_tuner(configs: Sequence[Mapping[str, Any]], build: Any, space: Any, splits: Any, *, epochs: int,
                 batch_size: int, seed: int, directory: Path) -> dict[str, Any]:
    """KerasTuner's RandomSearch tuner on exactly ``configs`` (its oracle replays them in order); timed."""
    import keras_tuner as kt

    directory = Path(directory)
    t0 = time.monotonic()

    class Replay(kt.oracles.RandomSearchOracle):
        def populate_space(self, trial_id: str) -> dict[str, Any]:
            i = len(self.start_order)
            if i >= len(configs):
                return {"status": "STOPPED"}
            return {"status": "RUNNING", "values": dict(configs[i])}

    oracle = Replay(objective=kt.Objective("val_accuracy", "max"), max_trials=len(configs), seed=seed + KT_SEED_OFFSET,
                    hyperparameters=space.to_kerastuner(), tune_new_entries=False,
                    max_consecutive_failed_trials=len(configs) + 1)
    # kt.RandomSearch is kt.Tuner with a RandomSearchOracle and nothing else: the same tuner, this oracle.
    ends: list[tuple[float, float]] = []  # (wall, CPU of the process tree) at each trial's end

    class Timed(kt.Tuner):
        def on_trial_end(self, trial: Any) -> None:
            super().on_trial_end(trial)
            ends.append((time.monotonic(), tree_cpu_s()))

    tuner = Timed(oracle=oracle, hypermodel=_hypermodel(build, splits.spec, seed), directory=str(directory.parent),
                  project_name=directory.name, overwrite=True)
    tuner.search(splits.x["train"], splits.y["train"], validation_data=(splits.x["select"], splits.y["select"]),
                 epochs=epochs, batch_size=batch_size, verbose=0)
    wall = time.monotonic() - t0
    trials = [tuner.oracle.trials[t] for t in tuner.oracle.start_order]
    # trial i's whole cycle: from trial i-1's end to its own (the first one's start is inside tuner.search)
    return {"wall_s": wall, "configs_hash": configs_hash([_trial_params(space, t) for t in trials]),
            "scores": [t.score for t in trials], "failed": sum(t.status != "COMPLETED" for t in trials),
            "cycle_s": [None, *(ends[i][0] - ends[i - 1][0] for i in range(1, len(ends)))],
            "cpu_cycle_s": [None, *(ends[i][1] - ends[i - 1][1] for i in range(1, len(ends)))]}


def bare_loop(configs: Sequence[Mapping[str, Any]], build: Any, space: Any, splits: Any, *, epochs: int,
              batch_size: int, seed: int) -> dict[str, Any]:
    """The reference: for each configuration build, fit on train, evaluate on select. Nothing else."""
    import keras

    from hpo.repro import trial_seed
    from hpo.execution.trial import make_model

    t0 = time.monotonic()
    per: list[float] = []
    cpu: list[float] = []
    scores: list[float] = []
    for i, params in enumerate(configs):
        t1, c1 = time.monotonic(), tree_cpu_s()
        keras.utils.set_random_seed(trial_seed(seed, i))
        model = make_model(build, space.hyperparameters_for(params), splits.spec)
        model.fit(splits.x["train"], splits.y["train"], epochs=epochs, batch_size=batch_size, verbose=0)
        scores.append(float(model.evaluate(splits.x["select"], splits.y["select"], batch_size=1024, verbose=0,
                                           return_dict=True)["accuracy"]))
        del model
        per.append(time.monotonic() - t1)
        cpu.append(tree_cpu_s() - c1)
    return {"wall_s": time.monotonic() - t0, "per_trial_s": per, "cpu_per_trial_s": cpu,
            "configs_hash": configs_hash(configs), "scores": scores}


def runner_loop(configs: Sequence[Mapping[str, Any]], build: Any, space: Any, splits: Any, *, epochs: int,
                batch_size: int, seed: int, directory: Path, audit_per_epoch: bool = True,
                save_models: bool = True) -> dict[str, Any]:
    """Our trial runner (:func:`hpo.execution.trial.run_trial`) on ``configs``, without a driver or tracking."""
    from hpo.repro import trial_seed
    from hpo.execution.trial import TrialSettings, run_trial

    directory = Path(directory)
    if directory.exists():
        shutil.rmtree(directory)
    settings = TrialSettings(epochs=epochs, batch_size=batch_size, audit_per_epoch=audit_per_epoch,
                             save_models=save_models)
    t0 = time.monotonic()
    durations = []
    cycles = []  # each configuration's whole iteration, run_trial's cleanup after duration_s included
    cpu = []
    for i, params in enumerate(configs):
        t1, c1 = time.monotonic(), tree_cpu_s()
        r = run_trial(number=i, params=params, seed=trial_seed(seed, i), build=build, space=space, splits=splits,
                      settings=settings, trial_dir=directory / f"{i:05d}")
        durations.append(r.duration_s)
        cycles.append(time.monotonic() - t1)
        cpu.append(tree_cpu_s() - c1)
    return {"wall_s": time.monotonic() - t0, "per_trial_s": durations, "cycle_s": cycles, "cpu_cycle_s": cpu,
            "configs_hash": configs_hash(configs)}
