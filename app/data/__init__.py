"""Datasets as one set of tables: MovieLens-100k (real) and a synthetic world of any size."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from app.data.config import DataConfig
from app.data.errors import DataFormatError
from app.data.tables import Dataset, labels_from_ratings

if TYPE_CHECKING:
    from app.artifacts import ArtifactsConfig
    from app.data.ids import IdMaps


def load_dataset(config: DataConfig, ids: IdMaps | None = None) -> Dataset:
    """The configured world: MovieLens-100k by default, the synthetic generator, or your own
    tables (validated first: `InvalidDataset` carries the report). `ids`: the id maps of the
    artifact being served, so every id maps as it did when it was trained."""
    if config.dataset == "tables":
        from app.data.loading import load_tables

        return load_tables(config, ids)
    if config.dataset == "movielens-100k":
        from app.data.movielens import load_movielens

        return load_movielens(config)
    if config.dataset == "synthetic":
        from app.data.synthetic import load_synthetic

        return load_synthetic(config)
    raise ValueError(f"data.dataset: unknown dataset {config.dataset!r} (movielens-100k, synthetic or tables)")


class DatasetMismatch(ValueError):
    """The artifact was trained on another dataset than the configuration names."""


def dataset_name(config: DataConfig) -> str | None:
    """The name an artifact trained on this configuration records (None: not checked)."""
    return {"tables": config.tables.name, "movielens-100k": "movielens-100k"}.get(config.dataset)


def check_trained_on(config: DataConfig, artifact: Path) -> None:
    """Refuse to pair an artifact with a dataset it was not trained on (its ids would not match)."""
    import json

    manifest = Path(artifact) / "manifest.json"
    expected = dataset_name(config)
    trained_on = json.loads(manifest.read_text()).get("dataset") if manifest.exists() else None
    if expected is not None and trained_on is not None and trained_on != expected:
        raise DatasetMismatch(
            f"artifact {Path(artifact).name} was trained on {trained_on!r}, the configuration names {expected!r} "
            f"(data.dataset / data.tables.name): train on it (rayfeed train) or pin a version trained on it")


def ids_to_extend(config: DataConfig, artifacts: ArtifactsConfig) -> IdMaps | None:
    """The newest artifact's id maps, when it was trained on this dataset: the next training keeps
    every index they give and appends new ids after them (state in Redis, cursors and hides are
    keyed by indices, so an index must never move between versions)."""
    from app.artifacts import ArtifactNotFound, artifact_store
    from app.data.ids import IdMaps

    expected = dataset_name(config)
    if expected is None:
        return None
    try:
        latest = artifact_store(artifacts).latest()
    except ArtifactNotFound:
        return None
    return IdMaps.load(latest.path / "ids") if latest.manifest().get("dataset") == expected else None


SNAPSHOT_DIR = "dataset"  # inside an artifact version: the dataset it was trained on (app/data/snapshot.py)


def load_dataset_for(config: DataConfig, artifact: Path) -> Dataset:
    """The dataset an artifact version was trained on, its ids mapped as they were then: the
    snapshot the artifact carries, else (an artifact without one) the configured dataset."""
    from app.data.ids import IdMaps
    from app.data.snapshot import has_snapshot, read_snapshot

    check_trained_on(config, artifact)
    ids = IdMaps.load(Path(artifact) / "ids")
    if has_snapshot(Path(artifact) / SNAPSHOT_DIR):
        return read_snapshot(Path(artifact) / SNAPSHOT_DIR, ids)
    return load_dataset(config, ids)


__all__ = ["SNAPSHOT_DIR", "DataConfig", "DataFormatError", "Dataset", "labels_from_ratings", "load_dataset", "load_dataset_for", "DatasetMismatch", "check_trained_on",
           "ids_to_extend"]
