"""Seed ensemble of the best configuration, trained as one packed model (``ensemble.seed_refit``).

After a search, retraining the incumbent with N new seeds and averaging their logits is
the cheapest ensemble there is (the course's 50-MLP experiment). The N members share an
architecture, so they train together as one model whose weights carry a member axis
(:mod:`hpo.execution.packed`) instead of N fits one after another. Only the ``mlp`` space on
one multiclass head packs today; other studies get a reason instead.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from hpo.data import Splits
from hpo.execution.packed.rows import class_labels, flat_rows
from hpo.repro import trial_seed


def packable(builder: str, splits: Splits, params: Mapping[str, Any]) -> str | None:
    """None when ``params`` of ``builder`` can be packed on this data, else why not."""
    if builder != "mlp":
        return f"packing covers the mlp builder only, not {builder!r}"
    if len(splits.spec.inputs) != 1 or len(splits.spec.heads) != 1:
        return "packing covers one input and one output head"
    if splits.spec.heads[0].kind != "multiclass":
        return f"packing covers multiclass heads, not {splits.spec.heads[0].kind}"
    if params.get("batchnorm"):
        return "the best configuration uses batch normalization, which packing does not support"
    return None


def seed_refit(builder: str, params: Mapping[str, Any], splits: Splits, *, members: int, epochs: int,
               batch_size: int, seed: int, out_dir: Path) -> dict[str, Any]:
    """Train ``members`` seeds of ``params`` packed; logits on select/audit/test, per-member and averaged metrics."""
    import keras

    from ensembles.metrics import classification_metrics, softmax
    from hpo.execution.packed import PackedMLPSpec, train_packed

    reason = packable(builder, splits, params)
    if reason:
        return {"skipped": reason}
    head = splits.spec.heads[0]
    seeds = [trial_seed(seed + 104_729, k) for k in range(members)]
    x = {s: flat_rows(splits.x[s]) for s in ("train", "select", "audit", "test")}
    y = {s: class_labels(splits.y[s], head.one_hot) for s in ("train", "select", "audit", "test")}
    spec = PackedMLPSpec.from_params([dict(params)] * members, input_shape=(x["train"].shape[1],),
                                     n_classes=head.n_classes, seeds=seeds, head_name=head.name)
    keras.utils.set_random_seed(seeds[0])
    started = time.perf_counter()
    res = train_packed(spec, x["train"], y["train"], epochs=epochs, batch_size=batch_size,
                       validation_data=(x["select"], y["select"]), member_metrics=False,
                       predict_on={s: x[s] for s in ("select", "audit", "test")})
    wall = time.perf_counter() - started
    keras.backend.clear_session()
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_dir / "predictions.npz", **{f"{s}/{head.name}": z.astype("float32")
                                                         for s, z in res.logits.items()})
    report: dict[str, Any] = {"members": members, "seeds": seeds, "params": dict(params), "wall_s": wall,
                              "fit_s": res.fit_s, "predictions": str(out_dir / "predictions.npz")}
    for s, z in res.logits.items():
        singles = [classification_metrics(softmax(z[m].astype("float64")), y[s])["accuracy"] for m in range(members)]
        avg = classification_metrics(softmax(z.astype("float64").mean(0)), y[s])
        report[s] = {"member_accuracy_median": float(np.median(singles)), "member_accuracy_min": float(min(singles)),
                     "member_accuracy_max": float(max(singles)), **{f"logit_average_{k}": v for k, v in avg.items()}}
    return report
