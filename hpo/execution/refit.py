"""Seed ensemble of the best configuration, trained as one packed model (``ensemble.seed_refit``).

After a search, retraining the incumbent with N new seeds and averaging their logits is
the cheapest ensemble there is (the course's 50-MLP experiment). The N members share an
architecture, so they train together as one model whose weights carry a member axis
(:mod:`hpo.execution.packed`) instead of N fits one after another. Only the ``mlp`` space on
one multiclass head packs today; other studies get a reason instead.

The refit runs before the ensemble is chosen, and its members are candidates of the ensemble's pool
(:func:`ensembles.pool.refit_candidates`): ``refit/members.json`` lists each member with its objective on
select, its logits' row in ``refit/predictions.npz`` and, when models are saved, its own Keras model.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from hpo.data import Splits
from hpo.execution.packed.rows import class_labels, flat_rows
from hpo.repro import seed_everything, trial_seed
from hpo.results import write_json

ACCURACY_OBJECTIVES = ("accuracy", "sparse_categorical_accuracy", "categorical_accuracy")
# Seeds of the refit when ``ensemble.seed_refit`` is left at null: measured in experiments/ensemble_gain.py
# (with 2 refits of the best configuration in the pool the default greedy's mean test accuracy gain over the best
# trial rose on 20 digits and 3 MNIST studies, equal on the 10 tuning seeds, never below the best trial); two,
# not more, because the best trial was chosen on select and its seeds regress from its lucky score
AUTO_SEEDS = 2


def packable(builder: str, splits: Splits, params: Mapping[str, Any]) -> str | None:
    """None when ``params`` of ``builder`` can be packed on this data, else why not."""
    if builder != "mlp":
        return f"packing covers the mlp builder only, not {builder!r}"
    if len(splits.spec.inputs) != 1 or len(splits.spec.heads) != 1:
        return "packing covers one input and one output head"
    if splits.spec.heads[0].kind != "multiclass":
        return f"packing covers multiclass heads, not {splits.spec.heads[0].kind}"
    return None


def auto_refit(builder: str, splits: Splits, params: Mapping[str, Any], *, searched: list[str],
               folds: int | None, objective: str | None) -> str | None:
    """None when a study that leaves ``ensemble.seed_refit`` at null refits its best configuration
    (``AUTO_SEEDS`` seeds), else why it does not: it must pack, train every trial with one batch size and
    number of epochs (``searched``: the fit parameters the study searches), not be cross-validated, and have
    an objective a member's logits score on select (else the members could not be ranked as candidates)."""
    if objective not in (*ACCURACY_OBJECTIVES, "loss"):
        return f"its members' {objective!r} on select cannot be scored from their logits"
    if searched:
        return f"the study searches {', '.join(searched)}"
    if folds:
        return "the study is cross-validated (each trial is already a bag of its fold models)"
    return packable(builder, splits, params)


def objective_on_select(objective: str | None, logits: np.ndarray, y: np.ndarray) -> float | None:
    """A refit member's objective on select from its logits: accuracy, or the loss (cross-entropy; a trial's
    Keras loss also carries its L2 penalty); None for an objective logits alone cannot give."""
    from ensembles.metrics import log_softmax

    z = logits.astype("float64")
    if objective in ACCURACY_OBJECTIVES:
        return float((z.argmax(-1) == y).mean())
    if objective == "loss":
        return float(-log_softmax(z)[np.arange(len(y)), y].mean())
    return None


def seed_refit(builder: str, params: Mapping[str, Any], splits: Splits, *, members: int, epochs: int,
               batch_size: int, seed: int, out_dir: Path, trial: int | None = None, objective: str | None = None,
               save_models: bool = False) -> dict[str, Any]:
    """Train ``members`` seeds of ``params`` packed; logits on select/audit/test, per-member and averaged metrics
    on select and audit (the locked test split is scored only for the final ensemble and the incumbent).

    ``refit/members.json`` records each member as an ensemble candidate (a refit of ``trial``, scored by
    ``objective`` on select); with ``save_models`` each member is saved as its own Keras model taking the
    study's input, as a trial's model does."""
    import keras

    from ensembles.metrics import classification_metrics, softmax
    from hpo.execution.packed import PackedMLPSpec

    reason = packable(builder, splits, params)
    if reason:
        return {"skipped": reason}
    head = splits.spec.heads[0]
    seeds = [trial_seed(seed + 104_729, k) for k in range(members)]
    x = {s: flat_rows(splits.x[s]) for s in ("train", "select", "audit", "test")}
    y = {s: class_labels(splits.y[s], head.one_hot) for s in ("train", "select", "audit", "test")}
    spec = PackedMLPSpec.from_params([dict(params)] * members, input_shape=(x["train"].shape[1],),
                                     n_classes=head.n_classes, seeds=seeds, head_name=head.name)
    seed_everything(seeds[0], deterministic=False)
    started = time.perf_counter()
    model, logits, fit_s = _fit(spec, x, y, epochs=epochs, batch_size=batch_size)
    wall = time.perf_counter() - started
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_dir / "predictions.npz", **{f"{s}/{head.name}": z.astype("float32")
                                                         for s, z in logits.items()})
    models = _save_members(model, splits, out_dir) if save_models else [None] * members
    keras.backend.clear_session()
    write_json(out_dir / "members.json", [
        {"member": k, "trial": trial, "seed": seeds[k], "params": dict(params),
         "value": objective_on_select(objective, logits["select"][k], y["select"]),
         "predictions_path": "predictions.npz", "model_path": models[k]} for k in range(members)])
    report: dict[str, Any] = {"members": members, "seeds": seeds, "params": dict(params), "wall_s": wall,
                              "fit_s": fit_s, "predictions": str(out_dir / "predictions.npz")}
    for s in ("select", "audit"):
        z = logits[s]
        singles = [classification_metrics(softmax(z[m].astype("float64")), y[s])["accuracy"] for m in range(members)]
        avg = classification_metrics(softmax(z.astype("float64").mean(0)), y[s])
        report[s] = {"member_accuracy_median": float(np.median(singles)), "member_accuracy_min": float(min(singles)),
                     "member_accuracy_max": float(max(singles)), **{f"logit_average_{k}": v for k, v in avg.items()}}
    return report


def _fit(spec: Any, x: Mapping[str, np.ndarray], y: Mapping[str, np.ndarray], *, epochs: int,
         batch_size: int) -> tuple[Any, dict[str, np.ndarray], float]:
    """The packed model trained on train as a pack of a search trains (one train step shape and one forward shape
    under JAX, no per-epoch validation: nothing reads it), its logits ``(members, n, classes)`` on select, audit
    and test, and the seconds ``fit`` took."""
    from hpo.execution.packed import build_packed_mlp
    from hpo.execution.packed.search import fit_pack, forward_logits, split_forward_rows

    model = build_packed_mlp(spec, member_metrics=False)
    t0 = time.perf_counter()
    fit_pack(model, spec, x["train"], y["train"], epochs=epochs, batch_size=batch_size)
    fit_s = time.perf_counter() - t0
    rows = split_forward_rows(x)
    return model, {s: forward_logits(model, x[s], rows) for s in ("select", "audit", "test")}, fit_s


def _save_members(packed: Any, splits: Splits, out_dir: Path) -> list[str]:
    """Each member of the packed model as its own Keras model (``member_K/model.keras``, relative to ``out_dir``)
    taking the study's input as it comes (a packed MLP takes flattened rows)."""
    import keras

    from hpo.execution.packed import unpack

    name, shape = next(iter(splits.spec.inputs.items()))
    paths = []
    for k, member in enumerate(unpack(packed, compile=False)):
        inputs = keras.Input(shape, name=name)
        x = keras.layers.Flatten(name="flatten_rows")(inputs) if len(shape) != 1 else inputs
        model = keras.Model(inputs, member(x), name=f"refit_member_{k}")
        (out_dir / f"member_{k}").mkdir(exist_ok=True)
        model.save(out_dir / f"member_{k}" / "model.keras")
        paths.append(f"member_{k}/model.keras")
    return paths
