"""Every model of the course material is searchable with both drivers and ensemblable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from ensembles import load_ensemble, load_pool
from ensembles.build import predict_members
from ensembles.embedding import pool_embeddings, triplet_accuracy, triplet_losses
from hpo.data import load_dataset
from hpo.space import discover
from hpo.study import run_study
from search_spaces import DEFAULT_DATASET, get_builder

from .conftest import small_config

MODELS = {  # builder: objective metric
    "text_qa": "accuracy", "posts": "income_accuracy", "siamese": "accuracy", "dual_view": "accuracy",
    "transfer": "accuracy", "triplet_embedding": "triplet_accuracy",
}


@pytest.mark.slow
@pytest.mark.parametrize("driver", ["optuna", "hyperopt"])
@pytest.mark.parametrize("builder", list(MODELS))
def test_two_trials_and_an_ensemble(tmp_path: Path, builder: str, driver: str) -> None:
    # keras.applications bases: the small MobileNetV3 keeps CI fast; EfficientNetB0 is the configs' default
    params = {"base": {"fixed": "mobilenetv3small"}} if builder in ("dual_view", "transfer") else {}
    cfg = small_config(
        tmp_path, study={"name": f"{builder}-{driver}", "n_trials": 2}, driver={"name": driver, "sampler": "tpe"},
        data={"dataset": DEFAULT_DATASET[builder], "limit_train": 192}, space={"builder": builder, "params": params},
        training={"epochs": 1, "batch_size": 64}, objective={"metric": MODELS[builder]},
        ensemble={"method": "top_k", "size": 2}, plots={"enabled": False}, report={"enabled": False},
        guards={"audit_per_epoch": False})
    summary = run_study(cfg)
    assert summary.n_complete == 2, summary.trials
    heads = load_pool(cfg.run_dir).heads
    metrics = summary.ensemble["metrics"]
    for h in heads:
        prefix = f"test_{h.name}_" if len(heads) > 1 else "test_"
        assert any(k.startswith(prefix) for k in metrics), (h.name, sorted(metrics))
    # the artifact predicts what the offline combination predicts, head by head
    pool = load_pool(cfg.run_dir, refits=True)  # an mlp study's ensemble may take seed refits
    splits = load_dataset(DEFAULT_DATASET[builder], seed=0)
    model = load_ensemble(summary.ensemble["artifact_dir"])
    out = model.predict(splits.x["test"], verbose=0)
    out = out if isinstance(out, dict) else {heads[0].name: out}
    # the members' saved logits, each divided by its fitted temperature, with their weights
    offline = predict_members(pool, summary.ensemble["member_records"], cfg.ensemble.combine, {}, "test")
    for h in heads:
        expected = offline[h.name][:, 1:2] if h.kind == "binary" else offline[h.name]
        np.testing.assert_allclose(np.asarray(out[h.name]), expected, atol=1e-4)


def test_siamese_branches_share_their_variables() -> None:
    spec = load_dataset("digit_pairs").spec
    space = discover(get_builder("siamese"), spec)
    for encoder in ("lstm", "dense"):
        values = space.defaults() | {"encoder": encoder}
        model = get_builder("siamese")(space.hyperparameters_for(values), spec)
        shared = [layer for layer in model.layers if layer.name == "shared_encoder"]
        assert len(shared) == 1
        head_params = sum(int(np.prod(w.shape)) for layer in model.layers if layer.name != "shared_encoder"
                          for w in layer.weights)
        enc_params = sum(int(np.prod(w.shape)) for w in shared[0].weights)
        assert model.count_params() == head_params + enc_params  # one copy of the encoder's variables
        x = np.random.default_rng(0).random((4, 8, 8)).astype("float32")
        a = model.predict({"left": x, "right": x[::-1]}, verbose=0)
        for w in shared[0].weights:  # changing the shared variables changes both branches at once
            w.assign(w.value * 0)
        b = model.predict({"left": x, "right": x[::-1]}, verbose=0)
        assert not np.allclose(a, b)
        keras.backend.clear_session()


def test_dual_view_calls_one_base_on_both_views() -> None:
    spec = load_dataset("digit_views").spec
    model = get_builder("dual_view")(discover(get_builder("dual_view"), spec).hyperparameters_for({}), spec)
    bases = [layer for layer in model.layers if layer.name.startswith("base_")]
    assert len(bases) == 1 and len(bases[0]._inbound_nodes) == 2
    keras.backend.clear_session()


def test_triplet_loss_and_accuracy_reproduce_the_course() -> None:
    from search_spaces.triplet_embedding import TripletAccuracy, VotesTripletLoss, per_far_losses

    ones, zeros = np.ones(16, "float32"), np.zeros(16, "float32")

    def single(far: np.ndarray, near1: np.ndarray, near2: np.ndarray) -> float:
        e = np.stack([far, near1, near2])[None]  # image 0 is the odd one
        return float(keras.ops.convert_to_numpy(per_far_losses(e, 0.5))[0, 0])

    assert single(ones, ones, zeros) == pytest.approx(17.0)
    assert single(ones, zeros, zeros) == pytest.approx(0.0)
    assert single(zeros, zeros, zeros) == pytest.approx(1.0)  # 2 * delta
    votes = np.array([[1.0, 0.0, 0.0]], "float32")
    e = np.stack([ones, ones, zeros])[None]
    assert float(VotesTripletLoss()(votes, e)) == pytest.approx(17.0)
    assert triplet_losses(e, votes)[0] == pytest.approx(17.0)
    # votes weight the three choices of the odd one: a weighted mean of the three losses
    v = np.array([[0.2, 0.3, 0.5]], "float32")
    per = keras.ops.convert_to_numpy(per_far_losses(e, 0.5))[0]
    assert float(VotesTripletLoss()(v, e)) == pytest.approx(float((v[0] * per).sum()), rel=1e-6)
    # accuracy: counts only triplets whose top vote exceeds 0.5
    good = np.stack([np.full(4, 5.0), np.zeros(4), np.full(4, 0.1)])  # image 0 is far from the close pair (1, 2)
    bad = np.stack([np.zeros(4), np.full(4, 0.1), np.full(4, 5.0)])  # image 0 is in the close pair
    emb = np.stack([good, bad, good, good]).astype("float32")
    # the third is ambiguous (top vote 0.4): not counted, so 2 hits of 3 (counting it would give 3 of 4; counting
    # nothing, the no-data value 0.5)
    y = np.array([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.4, 0.3, 0.3], [0.7, 0.2, 0.1]], "float32")
    m = TripletAccuracy()
    m.update_state(y, emb)
    assert float(m.result()) == pytest.approx(2 / 3)
    assert triplet_accuracy(emb, y) == pytest.approx(2 / 3)
    m2 = TripletAccuracy()
    m2.update_state(y[2:3], emb[2:3])
    assert float(m2.result()) == pytest.approx(0.5)  # nothing counted


def test_embedding_ensembles_average_then_renormalise() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3, 5, 3, 4))
    z = z / np.linalg.norm(z, axis=-1, keepdims=True) * 2.0  # members' embeddings have norm 2 (scale 2)
    pooled = pool_embeddings(z, np.array([0.5, 0.25, 0.25]))
    np.testing.assert_allclose(np.linalg.norm(pooled, axis=-1), 2.0, rtol=1e-9)
    mean = (np.array([0.5, 0.25, 0.25])[:, None, None, None] * z).sum(0)
    cos = (pooled * mean).sum(-1) / (np.linalg.norm(pooled, axis=-1) * np.linalg.norm(mean, axis=-1))
    np.testing.assert_allclose(cos, 1.0, atol=1e-9)
