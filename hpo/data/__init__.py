"""Datasets and the four splits every study uses: train, select, audit and a locked test.

:mod:`hpo.data.splits` holds the data spec, the splitting and the checks of user data;
:mod:`hpo.data.datasets` the built-in datasets a config names; :mod:`hpo.data.course`
the data of the course's functional-API models. The public names are re-exported here.
"""

from hpo.data.datasets import (
    BUILTIN_DATASETS,
    DATASETS,
    default_mnist_path,
    load_dataset,
    load_digits_splits,
    load_mnist_splits,
    load_ticket_splits,
    make_ticket_data,
)
from hpo.data.splits import (
    SPLITS,
    Arrays,
    DataSpec,
    Head,
    HeadKind,
    Splits,
    check_finite,
    check_labels,
    check_rows,
    concat,
    hash_arrays,
    infer_heads,
    leaves,
    n_rows,
    split,
    take,
)

__all__ = [
    "BUILTIN_DATASETS", "DATASETS", "SPLITS", "Arrays", "DataSpec", "Head", "HeadKind", "Splits", "check_finite",
    "check_labels", "check_rows", "concat", "default_mnist_path", "hash_arrays", "infer_heads", "leaves",
    "load_dataset", "load_digits_splits", "load_mnist_splits", "load_ticket_splits", "make_ticket_data", "n_rows",
    "split", "take",
]
