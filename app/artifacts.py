"""Versioned artifact directories: written by training/, loaded by deployments/.

    <root>/<version>/manifest.json   what is inside, with the training figures
    <root>/<version>/...             model weights, FAISS index, feature tables
    <root>/LATEST                    the version a loader picks when none is pinned

A version becomes visible (LATEST moves) only after every file is written, so a reader never
sees a half-written model. `root` is a local (or mounted shared) path.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from app._config_base import Section

LATEST = "LATEST"
MANIFEST = "manifest.json"


class ArtifactNotFound(FileNotFoundError):
    pass


class ArtifactsConfig(Section):
    """Where artifacts live and which version is served (the `artifacts` section)."""

    root: Path = Field(Path("artifacts"), description="directory of versioned artifacts")
    version: str | None = Field(None, description="pinned version; None follows LATEST")


@dataclass(frozen=True)
class ArtifactVersion:
    root: Path
    version: str

    @property
    def path(self) -> Path:
        return self.root / self.version

    def manifest(self) -> dict:
        return json.loads((self.path / MANIFEST).read_text())


class ArtifactStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def new_version(self) -> tuple[str, Path]:
        """A fresh staging directory; `publish` makes it the latest version."""
        version = time.strftime("v%Y%m%d-%H%M%S", time.gmtime()) + f"-{os.getpid()}-{time.monotonic_ns() % 1_000_000:06d}"
        staging = self.root / f".staging-{version}"
        staging.mkdir(parents=True, exist_ok=False)
        return version, staging

    def publish(self, version: str, staging: Path, manifest: dict) -> ArtifactVersion:
        (staging / MANIFEST).write_text(json.dumps({"version": version, **manifest}, indent=2, default=str))
        final = self.root / version
        staging.rename(final)
        pointer = self.root / f".{LATEST}.tmp"
        pointer.write_text(version)
        pointer.replace(self.root / LATEST)
        return ArtifactVersion(self.root, version)

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def latest(self) -> ArtifactVersion:
        pointer = self.root / LATEST
        if not pointer.exists():
            raise ArtifactNotFound(f"no published artifacts under {self.root} (run `rayfeed train`)")
        return self.get(pointer.read_text().strip())

    def get(self, version: str) -> ArtifactVersion:
        if "/" in version or version.startswith("."):
            raise ValueError(f"artifacts.version: invalid version name {version!r}")
        found = ArtifactVersion(self.root, version)
        if not (found.path / MANIFEST).exists():
            raise ArtifactNotFound(f"artifact version {version!r} not found under {self.root}")
        return found

    def versions(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / MANIFEST).exists())


def resolve_version(config: ArtifactsConfig) -> ArtifactVersion:
    """The version a loader serves: the pinned one, else LATEST (the one place that decides)."""
    store = ArtifactStore(Path(config.root).resolve())
    return store.get(config.version) if config.version else store.latest()
