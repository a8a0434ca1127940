"""Packed populations benchmark: N models one after another vs one packed model with N members.

    python -m experiments.packed [--members 8] [--dataset digits|mnist] [--epochs 20] [--batch-size 64]
                                 [--repeats 1] [--mnist-members 50] [--mnist-epochs 10] [--mnist-batch-size 1024]
                                 [--mnist-sequential 0] [--skip-digits] [--skip-mnist] [--out experiments/results]

(a) ``--members`` MLPs on ``--dataset`` (``mlp`` space: 2 x 64 ReLU, Adam, per-member learning rates drawn
log-uniformly in [3e-4, 3e-3], seeds 0..N-1), trained one after another the way a search runs its trials
(seed, build with ``search_spaces.mlp.build``, fit, predict, ``clear_session``), against one packed model
with the same members (``hpo.execution.packed.train_packed``). Wall time includes building, compiling/tracing,
fitting and predicting the test split, for both sides, in the same process; the sides alternate when
``--repeats`` > 1, after one small warm-up fit of each so process start-up is charged to neither.
(b) The course's ensemble of 50 MNIST MLPs 784-500-500-10 (ReLU, Adam 1e-3, batch 1024, 10 epochs) as one
packed model: median single test accuracy, logit- and probability-average ensemble accuracy, wall time;
``--mnist-sequential K`` also times K of those members trained one after another, for the ratio.
(c) Achieved matmul FLOP/s of each packed fit: ``2 * batch * in * out`` per Dense layer per member, x3 for
forward and backward, over the fit's wall time (compilation included, so it is a lower bound).

Results go to ``<out>/packed_<device>.json`` (device: the GPU's name, else ``cpu``), rewritten after every part
(and after (b)'s packed model, before its sequential subset), with the card, ``XLA_FLAGS``, JAX's
compilation-cache folder and matmul precision (``environment``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

import numpy as np

from experiments._common import device_tag, header, write_result
from experiments._isolated import cache_entries, environment

# Dense FP32 peaks (no sparsity) of the GPUs this project is lent, from NVIDIA's datasheets (SXM parts).
GPU_PEAKS_TFLOPS = {"H100": {"fp32": 67.0, "tf32_tensor": 494.7}, "H200": {"fp32": 67.0, "tf32_tensor": 494.7}}


def _peak(device: str) -> dict[str, Any]:
    for key, peaks in GPU_PEAKS_TFLOPS.items():
        if key.lower() == device:
            return {"peak_tflops": peaks, "peak_note": f"NVIDIA datasheet dense peaks for {key} SXM"}
    return {"peak_tflops": None,
            "peak_note": "CPU: achieved GFLOP/s only; no peak stated (shared 2-core VM, clock and turbo unknown)"}


def _load(dataset: str, seed: int = 0) -> Any:
    from hpo.data import load_digits_splits, load_mnist_splits

    if dataset == "digits":
        return load_digits_splits(seed=seed)
    if dataset == "mnist":
        return load_mnist_splits(seed=seed, validation_size=2000)
    raise ValueError(f"--dataset must be digits or mnist; got {dataset!r}")


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1)


def _fixed_hp(params: dict[str, Any]) -> Any:
    import keras_tuner as kt

    hp = kt.HyperParameters()
    for name, value in params.items():
        hp.Fixed(name, value)
    return hp


def sequential(splits: Any, params: list[dict[str, Any]], epochs: int, batch_size: int) -> dict[str, Any]:
    """Train each member as its own trial would: seed, build (mlp space), fit, predict test, clear_session."""
    import keras

    from search_spaces import mlp

    x, y = splits.x["train"], splits.y["train"]
    x_test, y_test = splits.x["test"], splits.y["test"]
    accs, times = [], []
    t0 = time.perf_counter()
    for p in params:
        t = time.perf_counter()
        keras.utils.set_random_seed(int(p["seed"]))
        fixed = {k: v for k, v in p.items() if k not in ("seed", "l2")}
        model = mlp.build(_fixed_hp(fixed), splits.spec)
        model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)
        z = model.predict(x_test, batch_size=1024, verbose=0)
        accs.append(float((np.asarray(z).argmax(-1) == y_test).mean()))
        del model
        keras.backend.clear_session()
        times.append(time.perf_counter() - t)
    wall = time.perf_counter() - t0
    return {"wall_s": round(wall, 3), "per_model_s": [round(v, 3) for v in times],
            "test_accuracy": accs, "mean_test_accuracy": float(np.mean(accs)),
            "median_test_accuracy": float(np.median(accs))}


def packed(splits: Any, params: list[dict[str, Any]], epochs: int, batch_size: int,
           member_metrics: bool = True) -> dict[str, Any]:
    """One packed model with every member; wall time includes build, compile, fit and predict."""
    import keras

    from ensembles.combine import combine
    from hpo.execution.packed import PackedMLPSpec, evaluate_members, matmul_flops, train_packed

    x, y = _flat(splits.x["train"]), splits.y["train"]
    x_test, y_test = _flat(splits.x["test"]), splits.y["test"]
    spec = PackedMLPSpec.from_params(params, input_shape=(x.shape[1],), n_classes=splits.spec.n_classes)
    t0 = time.perf_counter()
    keras.utils.set_random_seed(int(params[0]["seed"]))
    res = train_packed(spec, x, y, epochs=epochs, batch_size=batch_size, predict_on={"test": x_test},
                       member_metrics=member_metrics)
    wall = time.perf_counter() - t0
    z = res.logits["test"]
    scores = evaluate_members(z, y_test)
    w = np.ones(len(z))
    flops = matmul_flops(spec, len(x), epochs)
    out = {"wall_s": round(wall, 3), "fit_s": round(res.fit_s, 3),
           "test_accuracy": scores["accuracy"], "mean_test_accuracy": scores["mean_accuracy"],
           "median_test_accuracy": scores["median_accuracy"],
           "logit_average_test_accuracy": float((combine(z, w, "logits").argmax(-1) == y_test).mean()),
           "probability_average_test_accuracy": float((combine(z, w, "probs").argmax(-1) == y_test).mean()),
           "train_matmul_flops": flops, "achieved_gflops_fit": round(flops / res.fit_s / 1e9, 2),
           "last_epoch_train_accuracy": [h.get("accuracy", [None])[-1] for h in res.histories]}
    del res
    keras.backend.clear_session()
    return out


def member_params(n: int, *, layers: int, units: int, lr_range: tuple[float, float] | None, lr: float = 1e-3,
                  seed: int = 0) -> list[dict[str, Any]]:
    from hpo.execution.packed import log_uniform

    lrs = log_uniform(*lr_range, n, seed=seed) if lr_range else [lr] * n
    return [{"layers": layers, "units": units, "activation": "relu", "dropout": 0.0, "batchnorm": False,
             "use_l2": False, "optimizer": "adam", "learning_rate": lrs[i], "seed": i} for i in range(n)]


def part_a(args: argparse.Namespace) -> dict[str, Any]:
    splits = _load(args.dataset)
    params = member_params(args.members, layers=2, units=64, lr_range=(3e-4, 3e-3))
    # warm-up: one tiny fit of each kind so neither side pays the process's first-use costs
    sequential(splits, params[:1], 1, args.batch_size)
    packed(splits, params[:2], 1, args.batch_size)
    runs = []
    for r in range(args.repeats):
        order = ("sequential", "packed") if r % 2 == 0 else ("packed", "sequential")
        run: dict[str, Any] = {"order": list(order)}
        for side in order:
            if side == "sequential":
                run[side] = sequential(splits, params, args.epochs, args.batch_size)
            else:
                run[side] = packed(splits, params, args.epochs, args.batch_size)
        run["speedup"] = round(run["sequential"]["wall_s"] / run["packed"]["wall_s"], 2)
        print(json.dumps({"repeat": r, "sequential_s": run["sequential"]["wall_s"], "packed_s": run["packed"]["wall_s"],
                          "speedup": run["speedup"]}), flush=True)
        runs.append(run)
    return {"dataset": args.dataset, "members": args.members, "epochs": args.epochs, "batch_size": args.batch_size,
            "architecture": "mlp 2 x 64 relu, logits; Adam, per-member lr log-uniform in [3e-4, 3e-3]; seeds 0..N-1",
            "train_rows": int(len(splits.y["train"])), "test_rows": int(len(splits.y["test"])),
            "runs": runs, "median_speedup": statistics.median(r["speedup"] for r in runs)}


def part_b(args: argparse.Namespace, save: Any = None) -> dict[str, Any]:
    splits = _load("mnist")
    params = member_params(args.mnist_members, layers=2, units=500, lr_range=None, lr=1e-3)
    out: dict[str, Any] = {"members": args.mnist_members, "epochs": args.mnist_epochs,
                           "batch_size": args.mnist_batch_size,
                           "architecture": "784-500-500-10 relu, logits; Adam 1e-3; seeds 0..N-1; shared data order",
                           "train_rows": int(len(splits.y["train"])), "test_rows": int(len(splits.y["test"]))}
    out["packed"] = packed(splits, params, args.mnist_epochs, args.mnist_batch_size)
    print(json.dumps({k: v for k, v in out["packed"].items() if k not in ("test_accuracy", "last_epoch_train_accuracy")}),
          flush=True)
    if save is not None:
        save(out)  # on disk before the (long) sequential subset starts
    if args.mnist_sequential > 0:
        seq = sequential(splits, params[:args.mnist_sequential], args.mnist_epochs, args.mnist_batch_size)
        seq["extrapolated_all_members_s"] = round(seq["wall_s"] / args.mnist_sequential * args.mnist_members, 1)
        out["sequential_subset"] = seq
        out["extrapolated_speedup"] = round(seq["extrapolated_all_members_s"] / out["packed"]["wall_s"], 2)
        print(json.dumps({"sequential_subset_s": seq["wall_s"], "extrapolated_speedup": out["extrapolated_speedup"]}),
              flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--dataset", default="digits", choices=["digits", "mnist"])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--mnist-members", type=int, default=50)
    ap.add_argument("--mnist-epochs", type=int, default=10)
    ap.add_argument("--mnist-batch-size", type=int, default=1024)
    ap.add_argument("--mnist-sequential", type=int, default=0, help="also time this many MNIST members one by one")
    ap.add_argument("--skip-mnist", action="store_true")
    ap.add_argument("--skip-digits", action="store_true", help="skip part (a), the digits MLPs one after another vs packed")
    ap.add_argument("--out", default="experiments/results")
    args = ap.parse_args(argv)
    import keras

    device = device_tag()
    result = header("experiments.packed", argv)
    result["backend"] = keras.backend.backend()
    result["device"] = device
    result["note"] = ("wall times include build + compile/trace + fit + test predict; both sides run in the same "
                      "process; the machine may be shared with other jobs, so times are noisy")
    result.update(_peak(device))
    before = cache_entries()

    def save(key: str, part: dict[str, Any]) -> None:
        """The results so far, to the file, after every part: a later part that overruns loses only itself."""
        result[key] = part
        flops = {k: (result[k]["runs"][-1]["packed"] if k == "sequential_vs_packed" else result[k]["packed"])
                 ["achieved_gflops_fit"] for k in ("sequential_vs_packed", "mnist_packed") if k in result}
        result["achieved_gflops"] = flops
        if result["peak_tflops"]:
            result["fraction_of_fp32_peak"] = {k: round(v / 1e3 / result["peak_tflops"]["fp32"], 4)
                                               for k, v in flops.items()}
        result["environment"] = environment(cache_entries_before=before)
        print(f"wrote {write_result(args.out, f'packed_{device}', result)}", flush=True)

    if not args.skip_digits:
        save("sequential_vs_packed", part_a(args))
    if not args.skip_mnist:
        save("mnist_packed", part_b(args, save=lambda out: save("mnist_packed", out)))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
