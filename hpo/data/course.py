"""Data of the right shapes for the course's functional-API models.

Real data where a package ships it (scikit-learn's digits as images, pairs and
triplets), otherwise synthetic data with a learnable signal (the course fills
these models with random arrays, which leaves a search nothing to find).
"""

from __future__ import annotations

import numpy as np

from hpo.data.splits import DataSpec, Head, Splits, split

QA_VOCAB, QA_TEXT_LEN, QA_QUESTION_LEN, QA_ANSWERS = 1000, 60, 12, 20
POSTS_VOCAB, POSTS_LEN, POSTS_INCOME = 1000, 80, 10


def text_qa_splits(n: int = 1200, seed: int = 0) -> Splits:
    """``text`` and ``question`` token sequences; the answer is the topic token the question asks about."""
    rng = np.random.default_rng(seed)
    answer = rng.integers(0, QA_ANSWERS, n)
    text = rng.integers(1, QA_VOCAB, (n, QA_TEXT_LEN))
    question = rng.integers(1, QA_VOCAB, (n, QA_QUESTION_LEN))
    topic = 900 + answer  # tokens 900..919 name the answer
    for i in range(n):
        question[i, rng.integers(0, QA_QUESTION_LEN, 2)] = topic[i]
        text[i, rng.integers(0, QA_TEXT_LEN, 3)] = topic[i]
    spec = DataSpec({"text": (QA_TEXT_LEN,), "question": (QA_QUESTION_LEN,)}, (Head("answer", "multiclass", QA_ANSWERS),))
    return split({"text": text.astype("int32"), "question": question.astype("int32")}, answer.astype("int64"),
                 spec=spec, seed=seed, name="text_qa", stratify=answer)


def posts_splits(n: int = 1500, seed: int = 0) -> Splits:
    """Social-media posts: token sequences with three targets, ``age`` (regression), ``income`` (10 classes), ``gender``."""
    rng = np.random.default_rng(seed)
    income = rng.integers(0, POSTS_INCOME, n)
    gender = rng.integers(0, 2, n)
    age = rng.uniform(18, 70, n)
    posts = rng.integers(1, POSTS_VOCAB, (n, POSTS_LEN))
    for i in range(n):
        posts[i, rng.integers(0, POSTS_LEN, 4)] = 800 + income[i]  # income words
        posts[i, rng.integers(0, POSTS_LEN, 3)] = 850 + gender[i]  # gendered words
        posts[i, rng.integers(0, POSTS_LEN, 3)] = 860 + int((age[i] - 18) // 6)  # age-bracket words
    spec = DataSpec({"posts": (POSTS_LEN,)},
                    (Head("age", "regression", 1), Head("income", "multiclass", POSTS_INCOME), Head("gender", "binary", 1)))
    y = {"age": ((age - 44) / 15).astype("float32")[:, None], "income": income.astype("int64"),
         "gender": gender.astype("float32")[:, None]}
    return split({"posts": posts.astype("int32")}, y, spec=spec, seed=seed, name="posts", stratify=income)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype("float32"), d.target.astype("int64")


def digit_pairs_splits(n: int = 2000, seed: int = 0) -> Splits:
    """Pairs of real 8x8 digits (rows as sequences); label 1 when both show the same digit."""
    rng = np.random.default_rng(seed)
    images, labels = _digits()
    a = rng.integers(0, len(labels), n)
    same = rng.random(n) < 0.5
    b = np.empty(n, dtype=int)
    for i in range(n):
        pool = np.flatnonzero((labels == labels[a[i]]) if same[i] else (labels != labels[a[i]]))
        b[i] = rng.choice(pool)
    y = (labels[a] == labels[b]).astype("float32")[:, None]
    spec = DataSpec({"left": (8, 8), "right": (8, 8)}, (Head("same", "binary", 1),))
    return split({"left": images[a], "right": images[b]}, y, spec=spec, seed=seed, name="digit_pairs",
                 stratify=y[:, 0].astype(int))


def _rgb32(images: np.ndarray) -> np.ndarray:
    """8x8 grey digits → 32x32x3 images (each pixel repeated 4x4, three channels)."""
    big = np.kron(images, np.ones((4, 4), dtype="float32"))
    return np.repeat(big[..., None], 3, axis=-1)


def digit_images_splits(seed: int = 0, views: int = 1) -> Splits:
    """Real digits as 32x32 RGB images; with ``views=2`` a second, shifted and noisy view of each."""
    rng = np.random.default_rng(seed)
    images, labels = _digits()
    rgb = _rgb32(images)
    if views == 1:
        spec = DataSpec({"image": (32, 32, 3)}, (Head("digit", "multiclass", 10),))
        return split(rgb, labels, spec=spec, seed=seed, name="digit_images", stratify=labels)
    shifted = np.roll(rgb, shift=(rng.integers(-2, 3), rng.integers(-2, 3)), axis=(1, 2))
    second = np.clip(shifted + rng.normal(0, 0.1, rgb.shape).astype("float32"), 0, 1)
    spec = DataSpec({"view_a": (32, 32, 3), "view_b": (32, 32, 3)}, (Head("digit", "multiclass", 10),))
    return split({"view_a": rgb, "view_b": second}, labels, spec=spec, seed=seed, name="digit_views", stratify=labels)


def digit_triplets_splits(n: int = 1500, seed: int = 0) -> Splits:
    """Triplets of real digits, two alike and one odd, with annotators' votes for the odd one out.

    ``x["triplet"]`` has shape (n, 3, 8, 8); ``y`` the votes (n, 3), summing to 1. About one
    triplet in eight is ambiguous (top vote at most 0.5), as annotators disagree in the course's data.
    """
    rng = np.random.default_rng(seed)
    images, labels = _digits()
    x = np.empty((n, 3, 8, 8), dtype="float32")
    votes = np.empty((n, 3), dtype="float32")
    for i in range(n):
        c = rng.integers(0, 10)
        alike = rng.choice(np.flatnonzero(labels == c), 2, replace=False)
        odd = rng.choice(np.flatnonzero(labels != c))
        order = rng.permutation(3)
        picks = np.array([alike[0], alike[1], odd])[order]
        x[i] = images[picks]
        top = rng.uniform(0.34, 0.5) if rng.random() < 0.125 else rng.uniform(0.6, 1.0)
        rest = rng.dirichlet([1, 1]) * (1 - top)
        v = np.array([rest[0], rest[1], top])[order]
        votes[i] = v / v.sum()
    spec = DataSpec({"triplet": (3, 8, 8)}, (Head("embedding", "embedding", 1),))
    return split(x, votes, spec=spec, seed=seed, name="digit_triplets", stratify=None)


COURSE_DATASETS = {
    "text_qa": text_qa_splits,
    "posts": posts_splits,
    "digit_pairs": digit_pairs_splits,
    "digit_images": digit_images_splits,
    "digit_views": lambda seed=0: digit_images_splits(seed=seed, views=2),
    "digit_triplets": digit_triplets_splits,
}
