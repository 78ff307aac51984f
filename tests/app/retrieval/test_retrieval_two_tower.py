"""Two-tower: loss math against a naive reference, temperature, features, training, artifacts."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.data import DataConfig, load_dataset
from app.retrieval.config import RetrievalConfig, TwoTowerConfig
from app.retrieval.features import TowerFeatures
from app.retrieval.two_tower import (
    TwoTowerArtifacts,
    row_histories,
    build_model,
    build_training_examples,
    fit,
    in_batch_softmax_loss,
    make_loader,
    prepare_training,
    serving_histories,
    train_two_tower_in_process,
)

SMALL = dict(embedding_dim=16, id_dim=16, feature_dim=4, hidden_dim=32, history_length=5, batch_size=256)


@pytest.fixture(scope="module")
def ds():
    return load_dataset(DataConfig())


@pytest.fixture(scope="module")
def sample(ds) -> pd.DataFrame:
    users = ds.users["user_id"].to_numpy()[:120]
    return ds.interactions[ds.interactions["user_id"].isin(users)].reset_index(drop=True)


def _naive_loss(u, v, temperature, items, log_q, weights):
    """Row by row, in plain Python: −log softmax of the positive among non-duplicate columns."""
    losses = []
    for i in range(len(u)):
        logits = []
        for j in range(len(v)):
            if j != i and items[j] == items[i]:
                continue  # the same item is not a negative
            s = float(u[i] @ v[j]) / temperature - (log_q[j] if log_q is not None else 0.0)
            logits.append((j == i, s))
        top = max(s for _, s in logits)
        log_z = top + math.log(sum(math.exp(s - top) for _, s in logits))
        losses.append(log_z - next(s for positive, s in logits if positive))
    w = np.ones(len(u)) if weights is None else np.asarray(weights, np.float64)
    return float(np.sum(np.asarray(losses) * w) / w.sum())


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(2, 7),
    seed=st.integers(0, 10_000),
    temperature=st.floats(0.05, 1.0),
    use_logq=st.booleans(),
    weighted=st.booleans(),
)
def test_in_batch_loss_matches_naive_reference(n, seed, temperature, use_logq, weighted) -> None:
    rng = np.random.default_rng(seed)
    u, v = rng.normal(size=(n, 4)), rng.normal(size=(n, 4))
    items = rng.integers(0, 3, size=n)  # duplicates on purpose
    log_q = np.log(rng.uniform(0.01, 1.0, size=n)) if use_logq else None
    weights = rng.uniform(0.5, 2.0, size=n) if weighted else None
    got = in_batch_softmax_loss(
        torch.tensor(u), torch.tensor(v), torch.tensor(temperature), torch.tensor(items),
        None if log_q is None else torch.tensor(log_q), None if weights is None else torch.tensor(weights),
    )
    assert float(got) == pytest.approx(_naive_loss(u, v, temperature, items, log_q, weights), rel=1e-6, abs=1e-9)


def test_logq_correction_favours_popular_positives() -> None:
    """Subtracting log q(j) lowers the logits of popular columns: when the positive is the
    popular item, the corrected loss is the smaller one, and the shift is exactly −log q."""
    u = torch.eye(2)
    v = torch.eye(2)
    items = torch.tensor([0, 1])
    log_q = torch.log(torch.tensor([0.9, 0.1]))
    plain = in_batch_softmax_loss(u[:1].repeat(2, 1), v, torch.tensor(1.0), items)
    corrected = in_batch_softmax_loss(u[:1].repeat(2, 1), v, torch.tensor(1.0), items, log_q)
    # Row 0 (positive = popular item 0): logits [1 − log .9, 0 − log .1]; row 1 positive item 1.
    row0 = -(1 - math.log(0.9)) + math.log(math.exp(1 - math.log(0.9)) + math.exp(-math.log(0.1)))
    row1 = -(-math.log(0.1)) + math.log(math.exp(1 - math.log(0.9)) + math.exp(-math.log(0.1)))
    assert float(corrected) == pytest.approx((row0 + row1) / 2, rel=1e-6)
    assert float(corrected) != pytest.approx(float(plain))


def test_temperature_is_learned_and_clamped(ds, sample) -> None:
    config = TwoTowerConfig(**SMALL, epochs=2, lr=0.05, temperature_init=0.5, temperature_min=0.2)
    prepared = prepare_training(ds, sample, config)
    model = build_model(prepared.features, config, prepared.tables)
    start = float(model.temperature().detach())
    history = fit(model, make_loader(prepared.examples, config), config)
    assert start == pytest.approx(0.5)
    assert float(model.temperature().detach()) != pytest.approx(start, abs=1e-3)
    assert config.temperature_min <= history[-1]["temperature"] <= config.temperature_max

    frozen = TwoTowerConfig(**SMALL, epochs=1, learn_temperature=False)
    model = build_model(prepared.features, frozen, prepared.tables)
    fit(model, make_loader(prepared.examples, frozen), frozen)
    assert float(model.temperature().detach()) == pytest.approx(frozen.temperature_init)


def test_config_rejects_unordered_temperature_and_unknown_keys() -> None:
    with pytest.raises(ValidationError, match="temperature_min"):
        TwoTowerConfig(temperature_init=0.01, temperature_min=0.02)
    with pytest.raises(ValidationError):
        RetrievalConfig.model_validate({"two_tower": {"epochz": 3}})
    with pytest.raises(ValidationError):
        RetrievalConfig.model_validate({"index": {"kind": "annoy"}})


def test_histories_hold_only_earlier_items_newest_first() -> None:
    users = np.array([1, 1, 1, 2, 2])
    items = np.array([10, 11, 12, 20, 21])
    np.testing.assert_array_equal(
        row_histories(users, items, 2, include_self=False),
        [[0, 0], [10, 0], [11, 10], [0, 0], [20, 0]],
    )
    np.testing.assert_array_equal(row_histories(users, items, 2, include_self=True)[[2, 4]], [[12, 11], [21, 20]])


def test_training_examples_log_q_is_item_frequency(ds, sample) -> None:
    config = TwoTowerConfig(**SMALL)
    features = TowerFeatures.from_dataset(ds, config)
    examples = build_training_examples(features, sample, config)
    counts = sample["item_id"].value_counts()
    item_id = int(counts.index[0])
    row = int(np.flatnonzero(examples.item_rows == features.item_rows(np.array([item_id]))[0])[0])
    assert examples.log_q[row] == pytest.approx(math.log(counts.iloc[0] / len(sample)), rel=1e-5)
    liked = build_training_examples(features, sample, TwoTowerConfig(**SMALL, min_positive_rating=4))
    assert len(liked) == int((sample["rating"] >= 4).sum())


def test_features_encode_unknowns_to_row_zero_and_round_trip(ds, tmp_path) -> None:
    features = TowerFeatures.from_dataset(ds, TwoTowerConfig(creator_buckets=64))  # forces hashing
    assert features.creators == [] and features.creator_buckets == 64
    assert features.user_rows(np.array([1, 99_999]))[1] == 0
    odd = pd.DataFrame({"user_id": [5], "age": [0], "gender": ["X"], "occupation": ["astronaut"], "zip_code": ["?"]})
    np.testing.assert_array_equal(features.encode_users(odd), [[0, 0, 0, 0]])
    cats, genres = features.encode_items(ds.items.head(3))
    assert (cats[:, 0] >= 1).all() and (cats[:, 0] <= 64).all() and genres.sum() > 0
    features.save(tmp_path / "f.json")
    loaded = TowerFeatures.load(tmp_path / "f.json")
    np.testing.assert_array_equal(loaded.encode_items(ds.items.head(3))[0], cats)
    assert loaded.user_cardinalities == features.user_cardinalities


def test_in_process_training_exports_unit_vectors_and_round_trips(ds, sample, tmp_path) -> None:
    config = TwoTowerConfig(**SMALL, epochs=1)
    artifacts = train_two_tower_in_process(ds, sample, config, on_epoch=None)

    assert artifacts.user_embeddings.shape == (ds.n_users, 16)
    assert artifacts.item_embeddings.shape == (ds.n_items, 16)
    np.testing.assert_allclose(np.linalg.norm(artifacts.item_embeddings, axis=1), 1.0, rtol=1e-5)
    assert artifacts.user_embedding(99_999) is None
    assert len(artifacts.metrics) == 1 and np.isfinite(artifacts.metrics[0]["loss"])

    artifacts.save(tmp_path / "tt")
    loaded = TwoTowerArtifacts.load(tmp_path / "tt")
    np.testing.assert_array_equal(loaded.item_embeddings, artifacts.item_embeddings)
    np.testing.assert_array_equal(loaded.user_embedding(1), artifacts.user_embedding(1))
    assert loaded.config == config and loaded.metrics == artifacts.metrics

    # Re-encoding a known user from features + the same history reproduces the stored vector.
    user_id = int(sample["user_id"].iloc[0])
    row = int(loaded.features.user_rows(np.array([user_id]))[0])
    history = loaded.features.item_ids[loaded.user_histories[row][loaded.user_histories[row] > 0] - 1]
    fresh = loaded.encode_users(ds.users[ds.users["user_id"] == user_id], [history.tolist()])
    np.testing.assert_allclose(fresh[0], artifacts.user_embedding(user_id), atol=1e-5)

    # A new item stands in with the mean trained id row: saved, so serving need not read the table.
    weight = artifacts.state_dict["item_id.weight"]
    np.testing.assert_allclose(loaded.__dict__["item_id_mean"], weight[1:].mean(0).numpy(), atol=1e-6)
    new_items = ds.items.head(4)
    np.testing.assert_allclose(loaded.encode_new_items(new_items), artifacts.encode_new_items(new_items), atol=1e-6)


def test_serving_histories_are_each_users_latest_items(ds, sample) -> None:
    features = TowerFeatures.from_dataset(ds, TwoTowerConfig())
    hist = serving_histories(features, sample, 3)
    user_id = int(sample["user_id"].iloc[0])
    latest = sample[sample["user_id"] == user_id].sort_values(["timestamp", "item_id"])["item_id"].to_numpy()[::-1][:3]
    np.testing.assert_array_equal(hist[features.user_rows(np.array([user_id]))[0]], features.item_rows(latest))
    assert (hist[0] == 0).all()
