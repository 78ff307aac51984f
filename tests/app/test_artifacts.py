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


# -- a URI root: published from one node, read through each node's own cache -------------------

import json
import logging
import threading
from pathlib import Path

from app.artifacts import ArtifactCorrupt, ArtifactsConfig, UriArtifactStore, artifact_store, resolve_version


def _publish(store, files: dict[str, bytes], **manifest):
    version, staging = store.new_version()
    for name, data in files.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_bytes(data)
    return store.publish(version, staging, manifest)


def _node(uri: str, cache: Path, **config) -> UriArtifactStore:
    store = artifact_store(ArtifactsConfig(root=uri, cache_dir=cache, **config))
    assert isinstance(store, UriArtifactStore)
    return store


def test_a_version_published_to_a_uri_is_read_on_another_node_from_its_own_cache(tmp_path):
    uri = f"file://{tmp_path / 'bucket' / 'artifacts'}"
    trainer = _node(uri, tmp_path / "trainer-cache")
    published = _publish(trainer, {"organic/weights.bin": b"w" * 1000, "ads/model.json": b"{}"}, recall=0.2)
    assert published.path.is_relative_to(tmp_path / "trainer-cache")  # the trainer's node keeps its copy
    assert (tmp_path / "bucket" / "artifacts" / "LATEST").read_text() == published.version

    replica = _node(uri, tmp_path / "worker-cache")
    found = resolve_version(ArtifactsConfig(root=uri, cache_dir=tmp_path / "worker-cache"))
    assert found.path.is_relative_to(tmp_path / "worker-cache")
    assert (found.path / "organic" / "weights.bin").read_bytes() == b"w" * 1000
    assert found.manifest()["recall"] == 0.2
    assert set(found.manifest()["files"]) == {"organic/weights.bin", "ads/model.json"}
    assert replica.versions() == [published.version]


def test_replicas_of_one_node_download_a_version_once(tmp_path, caplog):
    uri = f"file://{tmp_path / 'remote'}"
    published = _publish(_node(uri, tmp_path / "trainer"), {"big.bin": bytes(5_000_000)})
    caplog.set_level(logging.INFO, logger="rayfeed.artifacts")
    paths, errors = [], []

    def replica() -> None:
        try:
            paths.append(_node(uri, tmp_path / "node").get(published.version).path)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=replica) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(paths)) == 1
    assert sum("downloaded" in r.getMessage() for r in caplog.records) == 1


def test_a_copy_that_differs_from_the_manifest_is_refused_and_not_cached(tmp_path):
    uri = f"file://{tmp_path / 'remote'}"
    published = _publish(_node(uri, tmp_path / "trainer"), {"organic/weights.bin": b"good"})
    (tmp_path / "remote" / published.version / "organic" / "weights.bin").write_bytes(b"evil")
    node = _node(uri, tmp_path / "node")
    with pytest.raises(ArtifactCorrupt, match="organic/weights.bin differs from the manifest"):
        node.get(published.version)
    assert not any(p.name == published.version for p in node.root.iterdir())


def test_missing_and_unreachable_uris_are_named_in_one_clear_error(tmp_path):
    empty = f"file://{tmp_path / 'nothing-here'}"
    with pytest.raises(ArtifactNotFound, match=f"no published artifacts under {empty}: no LATEST"):
        resolve_version(ArtifactsConfig(root=empty, cache_dir=tmp_path / "c"))
    uri = f"file://{tmp_path / 'remote'}"
    _publish(_node(uri, tmp_path / "trainer"), {"a": b"1"})
    with pytest.raises(ArtifactNotFound, match=f"artifact version 'v-gone' not found under {uri}"):
        resolve_version(ArtifactsConfig(root=uri, version="v-gone", cache_dir=tmp_path / "c"))
    with pytest.raises(ArtifactNotFound, match="artifacts.root nosuchscheme://x: cannot open"):
        resolve_version(ArtifactsConfig(root="nosuchscheme://x", cache_dir=tmp_path / "c"))


def test_the_node_cache_keeps_only_the_newest_versions(tmp_path):
    uri = f"file://{tmp_path / 'remote'}"
    trainer = _node(uri, tmp_path / "trainer")
    versions = [_publish(trainer, {"w": str(i).encode()}).version for i in range(4)]
    node = _node(uri, tmp_path / "node", cache_keep_versions=2)
    for version in versions:
        node.get(version)
    kept = {p.name for p in node.root.iterdir() if not p.name.startswith(".")}
    assert kept == set(versions[-2:])


def test_a_local_root_is_read_in_place_with_the_file_listing(tmp_path):
    store = artifact_store(ArtifactsConfig(root=str(tmp_path / "a")))
    published = _publish(store, {"x/y.bin": b"123"})
    assert published.path == (tmp_path / "a" / published.version).resolve()
    listing = json.loads((published.path / "manifest.json").read_text())["files"]
    assert listing["x/y.bin"]["bytes"] == 3
    assert published.published_at() > 0


def test_an_s3_root_through_a_real_s3_compatible_server(tmp_path):
    pytest.importorskip("moto")
    import boto3
    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    from app.state.local_redis import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="k", aws_secret_access_key="s",
                     region_name="us-east-1").create_bucket(Bucket="models")
        s3 = pafs.S3FileSystem(endpoint_override=endpoint, access_key="k", secret_key="s", region="us-east-1",
                               scheme="http")
        trainer = UriArtifactStore("s3://models/rayfeed", tmp_path / "trainer", filesystem=s3)
        published = _publish(trainer, {"organic/w.bin": b"weights", "ads/a.json": b"{}"}, recall=0.3)
        node = UriArtifactStore("s3://models/rayfeed", tmp_path / "node", filesystem=s3)
        found = node.latest()
        assert found.version == published.version and found.path.is_relative_to(tmp_path / "node")
        assert (found.path / "organic" / "w.bin").read_bytes() == b"weights"
        with pytest.raises(ArtifactNotFound, match="'v-nope' not found under s3://models/rayfeed"):
            node.get("v-nope")
    finally:
        server.stop()
