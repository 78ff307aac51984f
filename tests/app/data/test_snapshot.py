"""The dataset an artifact carries: a replica on any node reads it instead of the data cache."""
import json

from app.data import SNAPSHOT_DIR, DataConfig, load_dataset, load_dataset_for
from app.data.snapshot import write_snapshot

SMALL = {"n_users": 60, "n_items": 300, "n_creators": 20, "interactions_per_user": 5.0}


def test_an_artifact_with_a_snapshot_is_served_from_it_not_from_the_data_cache(tmp_path):
    trained_on = load_dataset(DataConfig(dataset="synthetic", cache_dir=tmp_path / "trainer-cache", synthetic=SMALL))
    artifact = tmp_path / "v1"
    write_snapshot(trained_on, artifact / SNAPSHOT_DIR)
    (artifact / "manifest.json").write_text(json.dumps({"dataset": trained_on.name}))

    # Another node: its own (empty) data cache and a different generator seed; the artifact decides.
    node = DataConfig(dataset="synthetic", cache_dir=tmp_path / "node-cache", seed=99, synthetic=SMALL)
    served = load_dataset_for(node, artifact)
    assert not (tmp_path / "node-cache").exists()
    for table in ("users", "items", "creators", "interactions", "social_edges"):
        assert getattr(served, table).equals(getattr(trained_on, table)), table
    assert served.topics == trained_on.topics and isinstance(served.items["topics"].iloc[0], tuple)


def test_the_catalogue_maps_the_snapshots_topic_matrix_and_builds_it_without_one(tmp_path):
    import dataclasses

    import numpy as np

    from app.catalog import Catalog

    dataset = load_dataset(DataConfig(dataset="synthetic", cache_dir=tmp_path / "cache", synthetic=SMALL))
    write_snapshot(dataset, tmp_path / "v1" / SNAPSHOT_DIR)
    (tmp_path / "v1" / "manifest.json").write_text(json.dumps({"dataset": dataset.name}))
    served = load_dataset_for(DataConfig(dataset="synthetic", cache_dir=tmp_path / "cache", synthetic=SMALL),
                              tmp_path / "v1")
    mapped = Catalog.from_dataset(served).topic_matrix
    built = Catalog.from_dataset(dataclasses.replace(served, meta={})).topic_matrix
    assert not mapped.flags.writeable and built.flags.writeable  # pages of the file, shared by the node's replicas
    np.testing.assert_array_equal(mapped, built)
    rows = np.linalg.norm(built, axis=1)
    assert np.allclose(rows[rows > 0], 1.0)  # normalised: cosines
    grown = dataclasses.replace(served.for_serving(), items=served.items.assign(item_id=served.items["item_id"] + 1))
    assert Catalog.from_dataset(grown).topic_matrix.shape[0] == mapped.shape[0] + 1  # no longer fits: rebuilt


def test_an_artifact_without_a_snapshot_reads_the_configured_dataset(tmp_path):
    config = DataConfig(dataset="synthetic", cache_dir=tmp_path / "cache", synthetic=SMALL)
    (tmp_path / "v0").mkdir()
    served = load_dataset_for(config, tmp_path / "v0")
    assert served.n_items == 300 and (tmp_path / "cache").exists()


def test_the_next_training_keeps_the_newest_artifacts_indices_and_its_folded_items(tmp_path):
    from pathlib import Path

    from app.artifacts import ArtifactsConfig, ArtifactStore
    from app.data import ids_to_extend
    from app.freshness.fold import fold_published
    from app.freshness.published import PublishedItems
    from app.state.items import StreamedItem

    valid = Path(__file__).resolve().parents[2] / "data" / "valid"
    config = DataConfig(dataset="tables", tables={"uri": str(valid), "name": "t"})
    artifacts = ArtifactsConfig(root=str(tmp_path / "artifacts"))
    assert ids_to_extend(config, artifacts) is None  # nothing trained yet
    post = {"item_id": "p1", "creator_id": "c9", "created_at": 1.7e9, "published_at": 1.7e9, "topics": ["Horror"],
            "content_rating": "R", "min_age": 17, "title": "a new post"}
    folded, _ = fold_published(load_dataset(config), PublishedItems().apply([StreamedItem("1-0", 0, 0, post)], True))
    store = ArtifactStore(tmp_path / "artifacts")
    version, staging = store.new_version()
    folded.ids.save(staging / "ids")
    write_snapshot(folded, staging / SNAPSHOT_DIR)
    store.publish(version, staging, {"dataset": "t"})

    previous = ids_to_extend(config, artifacts)
    assert previous == folded.ids
    served = load_dataset_for(config, store.latest().path)  # what every replica of the version reads
    index = served.ids.items.one("p1")
    assert index == 4 and served.items.set_index("item_id").loc[index, "title"] == "a new post"
    assert load_dataset(config, previous).ids.items.one("p1") == 4  # the tables lack it: its index stays taken
    assert ids_to_extend(DataConfig(dataset="tables", tables={"uri": str(valid), "name": "other"}), artifacts) is None


def test_topic_lists_become_one_shared_tuple_per_combination():
    import pyarrow as pa

    from app.data.snapshot import topic_tuples

    column = pa.chunked_array([pa.array([["a", "b"], [], None]), pa.array([["a", "b"], ["c"]])])
    topics = topic_tuples(column)
    assert topics.tolist() == [("a", "b"), (), (), ("a", "b"), ("c",)]
    assert topics[0] is topics[3]  # one tuple per distinct combination
    odd = topic_tuples(pa.chunked_array([pa.array([["x\x1fy", "b"], None, ["x\x1fy", "b"]])]))
    assert odd.tolist() == [("x\x1fy", "b"), (), ("x\x1fy", "b")] and odd[0] is odd[2]
