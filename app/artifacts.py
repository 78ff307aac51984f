"""Versioned artifact directories: written by training/, loaded by deployments/.

    <root>/<version>/manifest.json   what is inside (every file with its size and sha256), the
                                     training figures, when it was published
    <root>/<version>/...             model weights, FAISS index, feature tables, the dataset snapshot
    <root>/LATEST                    the version a loader picks when none is pinned

A version becomes visible only after every file is written: its manifest is written last, and
LATEST moves after that, so a reader never sees a half-written model.

`root` is a local path (read in place, as on one machine) or a URI any pyarrow filesystem
understands (`file://`, `s3://`, `gs://`, `hdfs://`), for a cluster without a shared disk. A
version read from a URI is copied once per node into `cache_dir`: the first replica on the node
downloads it under a file lock while the others wait, the copy is checked against the manifest
(sizes and sha256) before it is renamed into place, and every replica of the node then loads
(memory-maps) the same local files. Old versions are pruned, the newest `cache_keep_versions`
kept.

    store = artifact_store(config.artifacts)
    version, staging = store.new_version()     # a local directory to write into
    store.publish(version, staging, {"recall@20": 0.21})   # uploaded (URI) or renamed (path)
    store.latest().path                         # a local directory, wherever root is
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, field_validator

from app._config_base import Section

LATEST = "LATEST"
MANIFEST = "manifest.json"

log = logging.getLogger("rayfeed.artifacts")


class ArtifactNotFound(FileNotFoundError):
    """The root, LATEST or a version is not there: the message names the root and what is missing."""


class ArtifactCorrupt(ArtifactNotFound):
    """A downloaded file does not match the manifest (size or sha256): the copy is discarded."""


class ArtifactsConfig(Section):
    """Where artifacts live and which version is served (the `artifacts` section)."""

    root: str = Field(
        "artifacts", min_length=1,
        description="versioned artifacts: a local path (read in place; relative to each process's working "
                    "directory) or a file://, s3://, gs://, hdfs:// URI (copied to cache_dir on each node)")
    version: str | None = Field(None, description="pinned version; None follows LATEST")
    cache_dir: Path = Field(
        Path("~/.cache/rayfeed/artifacts"),
        description="node-local copies of versions read from a URI root, shared by the node's replicas")
    cache_keep_versions: int = Field(3, ge=1, le=100, description="versions kept in cache_dir (the newest used)")
    download_timeout_s: float = Field(
        1800.0, gt=0, le=86_400, description="how long a replica waits for another one's download on its node")

    @field_validator("root", mode="before")
    @classmethod
    def _path_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, os.PathLike) else value


@dataclass(frozen=True)
class ArtifactVersion:
    root: Path  # a local directory: the root itself, or the node cache of a URI root
    version: str

    @property
    def path(self) -> Path:
        return self.root / self.version

    def manifest(self) -> dict:
        return json.loads((self.path / MANIFEST).read_text())

    def published_at(self) -> float:
        """Wall time of the publish: the manifest's record (a cached copy's mtime is its download)."""
        manifest = self.manifest()
        return float(manifest.get("published_at") or (self.path / MANIFEST).stat().st_mtime)


def file_listing(directory: Path) -> dict[str, dict[str, int | str]]:
    """{relative path: {bytes, sha256}} of every file under `directory` (the manifest's `files`)."""
    listing = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = path.relative_to(directory).as_posix()
        if relative != MANIFEST:
            listing[relative] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
    return listing


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def check_listing(directory: Path, manifest: dict, source: str) -> None:
    """Raise `ArtifactCorrupt` naming the first file that is missing or differs from `manifest`."""
    for relative, expected in (manifest.get("files") or {}).items():
        path = directory / relative
        if not path.is_file():
            raise ArtifactCorrupt(f"{source}: {relative} is listed in the manifest but was not copied")
        if path.stat().st_size != expected["bytes"] or _sha256(path) != expected["sha256"]:
            raise ArtifactCorrupt(f"{source}: {relative} differs from the manifest (size or sha256)")


def _check_version_name(version: str) -> None:
    if not version or "/" in version or version.startswith("."):
        raise ValueError(f"artifacts.version: invalid version name {version!r}")


class ArtifactStore:
    """Versions under a local root: published by rename, read in place."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def new_version(self) -> tuple[str, Path]:
        """A fresh local staging directory; `publish` makes it the latest version."""
        version = time.strftime("v%Y%m%d-%H%M%S", time.gmtime()) + f"-{os.getpid()}-{time.monotonic_ns() % 1_000_000:06d}"
        staging = self._staging_root() / f".staging-{version}"
        staging.mkdir(parents=True, exist_ok=False)
        return version, staging

    def _staging_root(self) -> Path:
        return self.root

    def publish(self, version: str, staging: Path, manifest: dict) -> ArtifactVersion:
        (staging / MANIFEST).write_text(json.dumps(
            {"version": version, **manifest, "published_at": time.time(), "files": file_listing(staging)},
            indent=2, default=str))
        final = self.root / version
        staging.rename(final)
        self._point_latest(version)
        return ArtifactVersion(self.root, version)

    def _point_latest(self, version: str) -> None:
        pointer = self.root / f".{LATEST}.tmp"
        pointer.write_text(version)
        pointer.replace(self.root / LATEST)

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def latest_name(self) -> str:
        pointer = self.root / LATEST
        if not pointer.exists():
            raise ArtifactNotFound(f"no published artifacts under {self.uri}: no {LATEST} (run `rayfeed train`)")
        return pointer.read_text().strip()

    def latest(self) -> ArtifactVersion:
        return self.get(self.latest_name())

    def get(self, version: str) -> ArtifactVersion:
        """A version readable from local disk."""
        self.check(version)
        return ArtifactVersion(self.root, version)

    def check(self, version: str) -> None:
        """Raise `ArtifactNotFound` (or ValueError for a bad name) unless `version` is published;
        reads nothing but its manifest's presence."""
        _check_version_name(version)
        if not (self.root / version / MANIFEST).exists():
            raise ArtifactNotFound(f"artifact version {version!r} not found under {self.uri} (no {version}/{MANIFEST})")

    def versions(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / MANIFEST).exists())


class UriArtifactStore(ArtifactStore):
    """Versions under a storage URI, each copied once per node into `cache_dir` before it is read.

    Training stages locally (in the cache) and `publish` uploads every file, the manifest last,
    then moves LATEST: a reader that finds a manifest finds every file it lists."""

    def __init__(self, uri: str, cache_dir: Path, keep: int = 3, wait_s: float = 1800.0, filesystem=None) -> None:
        from app.data.storage import TablesNotFound, filesystem_for

        self.uri, self.keep, self.wait_s = uri.rstrip("/"), keep, wait_s
        try:
            self.fs, self.base = filesystem_for(self.uri, filesystem)
        except TablesNotFound as exc:
            raise ArtifactNotFound(f"artifacts.root {self.uri}: cannot open ({exc.__cause__ or exc})") from exc
        self.base = self.base.rstrip("/")
        # One cache per root: two roots with a version of the same name never share a copy.
        self.root = Path(cache_dir).expanduser().resolve() / hashlib.sha256(self.uri.encode()).hexdigest()[:16]

    def _staging_root(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root

    def _remote(self, *parts: str) -> str:
        return "/".join((self.base, *parts))

    def _read_text(self, path: str, missing: str) -> str:
        import pyarrow.fs as pafs

        try:
            if self.fs.get_file_info(path).type != pafs.FileType.File:
                raise ArtifactNotFound(missing)
            with self.fs.open_input_stream(path) as stream:
                return stream.read().decode()
        except ArtifactNotFound:
            raise
        except OSError as exc:
            raise ArtifactNotFound(f"artifacts.root {self.uri}: unreachable ({exc})") from exc

    def _write_text(self, path: str, text: str) -> None:
        with self.fs.open_output_stream(path) as stream:
            stream.write(text.encode())

    def publish(self, version: str, staging: Path, manifest: dict) -> ArtifactVersion:
        import pyarrow.fs as pafs

        body = {"version": version, **manifest, "published_at": time.time(), "files": file_listing(staging)}
        target = self._remote(version)
        self.fs.create_dir(target, recursive=True)
        for relative in body["files"]:
            self.fs.create_dir(f"{target}/{Path(relative).parent.as_posix()}".rstrip("/."), recursive=True)
            pafs.copy_files(str(staging / relative), f"{target}/{relative}", source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=self.fs)
        text = json.dumps(body, indent=2, default=str)
        self._write_text(f"{target}/{MANIFEST}", text)  # last: the version exists from here on
        self._write_text(self._remote(LATEST), version)
        (staging / MANIFEST).write_text(text)
        staging.rename(self.root / version)  # this node has it already: no download
        log.info("published %s to %s", version, self.uri)
        return ArtifactVersion(self.root, version)

    def latest_name(self) -> str:
        return self._read_text(self._remote(LATEST), f"no published artifacts under {self.uri}: no {LATEST} "
                               "(run `rayfeed train` with artifacts.root set to it)").strip()

    def get(self, version: str) -> ArtifactVersion:
        """The version in this node's cache, downloaded first when absent (once per node)."""
        from filelock import FileLock, Timeout

        _check_version_name(version)
        found = ArtifactVersion(self.root, version)
        if not (found.path / MANIFEST).exists():
            self.root.mkdir(parents=True, exist_ok=True)
            try:
                with FileLock(str(self.root / f".{version}.lock"), timeout=self.wait_s, preserve_lock_file=True):
                    if not (found.path / MANIFEST).exists():  # else another replica fetched it meanwhile
                        self._download(version)
            except Timeout as exc:
                raise ArtifactNotFound(f"{self.uri}/{version}: another download on this node held the lock "
                                       f"for over {self.wait_s:.0f}s ({self.root})") from exc
        os.utime(found.path)  # last used: what pruning keeps
        self._prune(keep_also=version)
        return found

    def check(self, version: str) -> None:
        import pyarrow.fs as pafs

        _check_version_name(version)
        try:
            kind = self.fs.get_file_info(self._remote(version, MANIFEST)).type
        except OSError as exc:
            raise ArtifactNotFound(f"artifacts.root {self.uri}: unreachable ({exc})") from exc
        if kind != pafs.FileType.File:
            raise ArtifactNotFound(f"artifact version {version!r} not found under {self.uri} (no {version}/{MANIFEST})")

    def _download(self, version: str) -> None:
        import pyarrow.fs as pafs

        source = f"{self.uri}/{version}"
        manifest = json.loads(self._read_text(
            self._remote(version, MANIFEST), f"artifact version {version!r} not found under {self.uri} "
            f"(no {version}/{MANIFEST})"))
        started = time.perf_counter()
        partial = self.root / f".partial-{version}-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        try:
            partial.mkdir(parents=True)
            pafs.copy_files(self._remote(version), str(partial), source_filesystem=self.fs,
                            destination_filesystem=pafs.LocalFileSystem())
            check_listing(partial, manifest, source)
            (partial / MANIFEST).write_text(json.dumps(manifest, indent=2))  # the one read, not a later rewrite
            partial.rename(self.root / version)
        except OSError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            if isinstance(exc, ArtifactNotFound):
                raise
            raise ArtifactNotFound(f"{source}: download failed ({exc})") from exc
        size = sum(f["bytes"] for f in (manifest.get("files") or {}).values())
        log.info("downloaded %s (%.1f MB) into %s in %.1fs", source, size / 1e6, self.root, time.perf_counter() - started)

    def _prune(self, keep_also: str) -> None:
        """Drop all but the `keep` most recently used complete versions (never `keep_also`). A
        replica still serving a dropped version keeps its open and mapped files (unlinked, not
        gone) until it swaps."""
        from filelock import FileLock, Timeout

        try:
            with FileLock(str(self.root / ".prune.lock"), timeout=0, preserve_lock_file=True):
                complete = [p for p in self.root.iterdir() if not p.name.startswith(".") and (p / MANIFEST).exists()]
                complete.sort(key=lambda p: p.stat().st_mtime, reverse=True)
                for stale in complete[self.keep:]:
                    if stale.name != keep_also:
                        shutil.rmtree(stale, ignore_errors=True)
                        log.info("pruned %s from %s", stale.name, self.root)
        except Timeout:
            pass  # another replica of this node is pruning

    def versions(self) -> list[str]:
        import pyarrow.fs as pafs

        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.base, allow_not_found=True))
        except OSError as exc:
            raise ArtifactNotFound(f"artifacts.root {self.uri}: unreachable ({exc})") from exc
        names = [i.base_name for i in infos if i.type == pafs.FileType.Directory and not i.base_name.startswith(".")]
        return sorted(n for n in names if self.fs.get_file_info(self._remote(n, MANIFEST)).type == pafs.FileType.File)


def is_uri(root: str | Path) -> bool:
    return "://" in str(root)


def artifact_store(config: ArtifactsConfig, filesystem=None) -> ArtifactStore:
    """The store `config.root` names: read in place (a path) or through the node cache (a URI)."""
    if is_uri(config.root) or filesystem is not None:
        return UriArtifactStore(config.root, config.cache_dir, config.cache_keep_versions,
                                config.download_timeout_s, filesystem)
    return ArtifactStore(config.root)


def resolve_version(config: ArtifactsConfig) -> ArtifactVersion:
    """The version a loader serves, on local disk: the pinned one, else LATEST (the one place
    that decides)."""
    store = artifact_store(config)
    return store.get(config.version) if config.version else store.latest()
