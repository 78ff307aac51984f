import numpy as np
import pandas as pd

from app.data import DataConfig, load_dataset
from app.data.social import generate_friend_graph
from app.data.synthetic import SyntheticWorldSpec, generate_world


def _users(n=400, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "user_id": np.arange(1, n + 1),
            "age": rng.integers(15, 70, n),
            "gender": rng.choice(["M", "F"], n),
            "occupation": rng.choice(["a", "b", "c", "d"], n),
            "zip_code": [f"{z:05d}" for z in rng.integers(0, 100_000, n)],
        }
    )


def test_friend_graph_is_symmetric_seeded_and_close_friends_marked():
    users = _users()
    config = DataConfig(friends_per_user=10)
    edges = generate_friend_graph(users, config)
    pairs = set(zip(edges["user_id"], edges["friend_id"]))
    assert all((b, a) in pairs for a, b in pairs)
    assert not (edges["user_id"] == edges["friend_id"]).any()
    assert 6 < len(edges) / len(users) < 14
    assert edges.groupby("user_id")["close"].sum().max() <= config.close_friends_per_user
    assert generate_friend_graph(users, config).equals(edges)


def test_friend_graph_shows_age_and_locality_homophily():
    users = _users(1000).set_index("user_id")
    edges = generate_friend_graph(users.reset_index(), DataConfig(friends_per_user=10))
    a, b = users.loc[edges["user_id"]], users.loc[edges["friend_id"]]
    friend_age_gap = np.abs(a["age"].to_numpy() - b["age"].to_numpy()).mean()
    rng = np.random.default_rng(1)
    random_gap = np.abs(users["age"].to_numpy() - rng.permutation(users["age"].to_numpy())).mean()
    assert friend_age_gap < 0.7 * random_gap
    same_prefix = (a["zip_code"].str[:2].to_numpy() == b["zip_code"].str[:2].to_numpy()).mean()
    assert same_prefix > 0.3  # vs about 0.01 for random pairs over 100 prefixes


def test_movielens_friend_graph_uses_real_attributes():
    ds = load_dataset(DataConfig())
    assert 8 < ds.social_edges.groupby("user_id").size().mean() < 16
    assert len(ds.friends_of(1)) > 0 and len(ds.close_friends_of(1)) <= 3


def test_synthetic_world_has_the_same_tables_and_is_seeded():
    spec = SyntheticWorldSpec(n_users=300, n_items=2000, n_creators=100, n_topics=8)
    world = generate_world(spec, DataConfig(seed=3))
    again = generate_world(spec, DataConfig(seed=3))
    assert world.n_users == 300 and world.n_items == 2000
    assert world.interactions.equals(again.interactions)
    assert world.interactions["item_id"].between(1, 2000).all()
    assert not world.interactions.duplicated(["user_id", "item_id"]).any()
    assert (world.interactions["position"] >= 1).all()
    # Popularity is heavy-tailed: the top 10% of items take far more than 10% of interactions.
    counts = world.interactions["item_id"].value_counts()
    assert counts.head(200).sum() / counts.sum() > 0.3


def test_synthetic_users_prefer_items_near_their_interests():
    spec = SyntheticWorldSpec(n_users=500, n_items=3000, n_creators=150, n_topics=8)
    world = generate_world(spec, DataConfig(seed=5))
    topic_matrix = world.item_topic_matrix

    def mean_top_topic_share(interactions):
        histories = interactions.groupby("user_id")["item_id"].apply(list)
        return np.mean([topic_matrix[h].sum(0).max() / topic_matrix[h].sum() for h in histories if len(h) >= 10])

    shuffled = world.interactions.assign(item_id=np.random.default_rng(0).permutation(world.interactions["item_id"]))
    # A user's interactions concentrate on their topics far more than a random history does.
    assert mean_top_topic_share(world.interactions) > 1.3 * mean_top_topic_share(shuffled)


def test_the_serving_tables_drop_the_interaction_log_and_keep_what_replicas_read():
    from app.catalog import Catalog

    world = generate_world(SyntheticWorldSpec(n_users=300, n_items=900, n_creators=40), DataConfig())
    serving = world.for_serving()
    assert len(serving.interactions) == 0 and list(serving.interactions.columns) == list(world.interactions.columns)
    assert serving.events is None
    pd.testing.assert_frame_equal(serving.items, world.items)
    for user in (1, 17, 250):
        np.testing.assert_array_equal(serving.friends_of(user), world.friends_of(user))
        assert serving.user_row(user) == world.user_row(user)
    catalog = Catalog.from_dataset(serving)
    raw = world.item_topic_matrix
    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    expected = np.divide(raw, norms, out=np.zeros_like(raw), where=norms > 0)
    np.testing.assert_allclose(catalog.topic_matrix, expected, rtol=1e-6)
    assert "item_topic_matrix" not in vars(serving)  # the catalogue built its own: no second copy kept
