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


def test_an_artifact_without_a_snapshot_reads_the_configured_dataset(tmp_path):
    config = DataConfig(dataset="synthetic", cache_dir=tmp_path / "cache", synthetic=SMALL)
    (tmp_path / "v0").mkdir()
    served = load_dataset_for(config, tmp_path / "v0")
    assert served.n_items == 300 and (tmp_path / "cache").exists()
