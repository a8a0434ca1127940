"""The built-in datasets a config names (``data.dataset``): digits, MNIST, support tickets and the course's data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hpo.data.course import COURSE_DATASETS
from hpo.data.splits import DataSpec, Head, Splits, hash_arrays, split, take
from hpo.errors import ConfigError

BUILTIN_DATASETS = ("digits", "mnist", "ticket", "text_qa", "posts", "digit_pairs", "digit_images", "digit_views",
                    "digit_triplets")
DATASETS = (*BUILTIN_DATASETS, "custom")


def load_digits_splits(seed: int = 0, test_fraction: float = 0.2, validation_fraction: float = 0.3) -> Splits:
    """scikit-learn's 8x8 digits (1,797 real images, ships with scikit-learn)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype("float32")
    y = d.target.astype("int64")
    spec = DataSpec({"pixels": (64,)}, (Head("digit", "multiclass", 10),))
    return split(x, y, spec=spec, test_fraction=test_fraction, validation_fraction=validation_fraction,
                 seed=seed, name="digits", stratify=y)


def default_mnist_path() -> Path | None:
    env = os.environ.get("HPO_MNIST_PATH")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[2]  # the repository root (hpo/data/datasets.py)
    for cand in (Path.cwd() / "../shared/data/mnist.npz", here / "../shared/data/mnist.npz"):
        if cand.exists():
            return cand.resolve()
    return None


def load_mnist_splits(
    path: str | os.PathLike | None = None,
    seed: int = 0,
    validation_size: int = 10_000,
    limit_train: int | None = None,
) -> Splits:
    """MNIST from a Keras-layout ``mnist.npz``: official test set locked, validation cut from train."""
    p = Path(path) if path else default_mnist_path()
    if p is None:
        import keras

        (xtr, ytr), (xte, yte) = keras.datasets.mnist.load_data()
    else:
        if not p.exists():
            raise ConfigError("data.path", f"MNIST file not found at {str(p)!r}; set data.path or HPO_MNIST_PATH")
        with np.load(p) as f:
            xtr, ytr, xte, yte = f["x_train"], f["y_train"], f["x_test"], f["y_test"]
    xtr = (xtr / 255.0).astype("float32")
    xte = (xte / 255.0).astype("float32")
    ytr, yte = ytr.astype("int64"), yte.astype("int64")
    spec = DataSpec({"image": (28, 28)}, (Head("digit", "multiclass", 10),))
    s = split(xtr, ytr, spec=spec, x_test=xte, y_test=yte, validation_fraction=validation_size / len(ytr),
              seed=seed, name="mnist", stratify=ytr)
    if limit_train is not None and limit_train < s.size("train"):
        s.x["train"], s.y["train"] = take(s.x["train"], np.arange(limit_train)), take(s.y["train"], np.arange(limit_train))
        s.hashes["train"] = hash_arrays(s.x["train"], s.y["train"])
    return s


def make_ticket_data(
    n: int = 2400, vocabulary_size: int = 1000, num_tags: int = 100, num_departments: int = 4, seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Synthetic bag-of-words support tickets, as in the course, with a learnable signal.

    The course draws labels at random; here each department has its own indicative
    words and urgent tickets carry urgent tags, so a search has something to find.
    """
    rng = np.random.default_rng(seed)
    dept = rng.integers(0, num_departments, size=n)
    urgent = rng.random(n) < 0.3
    base = 0.01
    words_per_dept = vocabulary_size // (2 * num_departments)
    title = (rng.random((n, vocabulary_size)) < base).astype("float32")
    body = (rng.random((n, vocabulary_size)) < base * 3).astype("float32")
    tags = (rng.random((n, num_tags)) < 0.03).astype("float32")
    for i in range(n):
        lo = dept[i] * words_per_dept
        sig_words = rng.integers(lo, lo + words_per_dept, size=6)
        title[i, sig_words[:2]] = 1.0
        body[i, sig_words] = 1.0
        if urgent[i]:
            tags[i, rng.integers(0, 10, size=2)] = 1.0
    flip = rng.random(n) < 0.05  # label noise
    priority = np.where(flip, ~urgent, urgent).astype("float32")[:, None]
    x = {"title": title, "text_body": body, "tags": tags}
    y = {"priority": priority, "department": dept.astype("int64")}
    return x, y


def load_ticket_splits(seed: int = 0, n: int = 2400) -> Splits:
    x, y = make_ticket_data(n=n, seed=seed)
    spec = DataSpec(
        {k: (v.shape[1],) for k, v in x.items()},
        (Head("priority", "binary", 1), Head("department", "multiclass", 4)),
    )
    return split(x, y, spec=spec, seed=seed, name="ticket", stratify=y["department"])


def load_dataset(name: str, *, path: str | None = None, seed: int = 0, limit_train: int | None = None,
                 validation_size: int | None = None) -> Splits:
    """A built-in dataset by name (``digits``, ``mnist``, ``ticket``)."""
    if name == "digits":
        s = load_digits_splits(seed=seed)
    elif name == "mnist":
        return load_mnist_splits(path, seed=seed, limit_train=limit_train, validation_size=validation_size or 10_000)
    elif name == "ticket":
        s = load_ticket_splits(seed=seed)
    elif name in COURSE_DATASETS:
        s = COURSE_DATASETS[name](seed=seed)
    elif name == "custom":
        raise ConfigError("data.dataset", "'custom' means the data is passed from Python (hpo.search); "
                                          f"a config file names one of {', '.join(BUILTIN_DATASETS)}")
    else:
        raise ConfigError("data.dataset", f"unknown dataset {name!r}; choose one of {', '.join(BUILTIN_DATASETS)}")
    if limit_train is not None and limit_train < s.size("train"):
        s.x["train"], s.y["train"] = take(s.x["train"], np.arange(limit_train)), take(s.y["train"], np.arange(limit_train))
        s.hashes["train"] = hash_arrays(s.x["train"], s.y["train"])
    return s
