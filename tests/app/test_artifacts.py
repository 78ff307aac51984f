import pytest

from app.artifacts import ArtifactNotFound, ArtifactStore


def test_publish_moves_latest_only_when_complete(tmp_path):
    store = ArtifactStore(tmp_path / "a")
    with pytest.raises(ArtifactNotFound):
        store.latest()
    version, staging = store.new_version()
    (staging / "weights.bin").write_bytes(b"x")
    with pytest.raises(ArtifactNotFound):
        store.latest()  # staged, not published
    published = store.publish(version, staging, {"recall@20": 0.2})
    assert store.latest() == published
    assert published.manifest()["recall@20"] == 0.2
    assert (published.path / "weights.bin").read_bytes() == b"x"
    assert store.versions() == [version]


def test_bad_version_names_are_rejected(tmp_path):
    store = ArtifactStore(tmp_path)
    with pytest.raises(ValueError, match="invalid version"):
        store.get("../etc")
    with pytest.raises(ArtifactNotFound):
        store.get("v-missing")
