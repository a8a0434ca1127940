"""How noisy is one validation set? The course's two-halves experiment on real MNIST.

    python -m experiments.validation_noise [--config experiments/mnist_validation_noise.yaml] [--epochs N]

Trains the MNIST MLP and, after every epoch, scores two disjoint halves of the test set. Prints and
records the Pearson correlation of the halves' accuracies across epochs and how far apart they are.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    import keras

    from hpo.data import DataSpec, Head, default_mnist_path, hash_arrays
    from hpo.repro import seed_everything
    from hpo.space import SearchSpace
    from search_spaces.mlp import build

    path = default_mnist_path()
    with np.load(path) as f:
        xtr, ytr, xte, yte = f["x_train"] / 255.0, f["y_train"], f["x_test"] / 255.0, f["y_test"]
    xtr, xte = xtr.astype("float32"), xte.astype("float32")
    rng = np.random.default_rng(cfg["seed"])
    perm = rng.permutation(len(yte))
    half = cfg["half_size"]
    a, b = perm[:half], perm[half:2 * half]
    seed_everything(cfg["seed"])
    spec = DataSpec({"image": (28, 28)}, (Head("digit", "multiclass", 10),))
    values = {"layers": cfg["layers"], "units": cfg["units"], "activation": "relu", "dropout": 0.0, "batchnorm": False,
              "use_l2": False, "learning_rate": cfg["learning_rate"], "optimizer": "adam"}
    model = build(SearchSpace().hyperparameters_for(values), spec)
    acc_a: list[float] = []
    acc_b: list[float] = []

    class Halves(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            pred = self.model.predict(xte, batch_size=4096, verbose=0).argmax(-1)
            acc_a.append(float((pred[a] == yte[a]).mean()))
            acc_b.append(float((pred[b] == yte[b]).mean()))

    t0 = time.monotonic()
    model.fit(xtr, ytr, epochs=cfg["epochs"], batch_size=cfg["batch_size"], verbose=0, callbacks=[Halves()])
    wall = time.monotonic() - t0
    A, B = np.array(acc_a), np.array(acc_b)
    diff = A - B
    return {
        "epochs": cfg["epochs"], "wall_s": round(wall, 1),
        "pearson_correlation": float(np.corrcoef(A, B)[0, 1]),
        "mean_accuracy_half_a": float(A.mean()), "mean_accuracy_half_b": float(B.mean()),
        "mean_difference_a_minus_b": float(diff.mean()), "mean_abs_difference": float(np.abs(diff).mean()),
        "max_abs_difference": float(np.abs(diff).max()),
        "epochs_with_abs_difference_over_1pct": int((np.abs(diff) > 0.01).sum()),
        "pearson_correlation_after_epoch_10": float(np.corrcoef(A[10:], B[10:])[0, 1]) if len(A) > 12 else None,
        "accuracy_half_a": acc_a, "accuracy_half_b": acc_b,
        "data_hashes": {"train": hash_arrays(xtr, ytr), "half_a": hash_arrays(xte[a], yte[a]), "half_b": hash_arrays(xte[b], yte[b])},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="experiments/mnist_validation_noise.yaml")
    ap.add_argument("--epochs", type=int, help="override the config's epochs (for a quick look)")
    ap.add_argument("--out", default="experiments/results")
    args = ap.parse_args(argv)
    cfg = yaml.safe_load(Path(args.config).read_text())
    if args.epochs:
        cfg["epochs"] = args.epochs
    from experiments._common import header, write_result

    result = {**header("experiments.validation_noise", argv), "config": cfg, **run(cfg)}
    short = {k: v for k, v in result.items() if not k.startswith("accuracy_half")}
    print(json.dumps(short, indent=2, default=str))
    write_result(args.out, "mnist_validation_noise", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
