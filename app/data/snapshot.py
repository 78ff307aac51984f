"""A dataset as parquet files: the synthetic world's cache, and the copy an artifact carries.

An artifact holds the snapshot of the dataset it was trained on, so a replica on any node needs
only the artifact: not the data cache, the raw tables' URI, or PyPI (MovieLens comes from a
wheel) — and it serves exactly the catalogue and the users the models were trained with.

    write_snapshot(dataset, staging / "dataset")
    dataset = read_snapshot(version.path / "dataset", ids)
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pandas as pd

from app.data.ids import IdMaps
from app.data.tables import Dataset

TABLES = ("users", "items", "creators", "interactions", "social_edges")
META = "meta.json"


def has_snapshot(directory: Path) -> bool:
    return (Path(directory) / META).exists()


def write_snapshot(dataset: Dataset, directory: Path, extra_meta: dict | None = None) -> Path:
    """Written beside `directory` and renamed into place: a concurrent reader (another replica)
    sees the whole dataset or none, and a concurrent writer's rename simply loses."""
    directory = Path(directory)
    staging = directory.with_name(f".{directory.name}.{os.getpid()}.{time.monotonic_ns()}")
    staging.mkdir(parents=True)
    try:
        for name in TABLES:
            table = getattr(dataset, name)
            if name == "items":
                table = table.assign(topics=[list(t) for t in table["topics"]])
            table.to_parquet(staging / f"{name}.parquet", index=False)
        meta = {"name": dataset.name, "topics": list(dataset.topics), **(extra_meta or {})}
        (staging / META).write_text(json.dumps(meta))
        staging.rename(directory)
    except OSError:
        if not has_snapshot(directory):
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def read_snapshot(directory: Path, ids: IdMaps | None = None, extra_meta: dict | None = None) -> Dataset:
    meta = json.loads((Path(directory) / META).read_text())
    tables = {name: pd.read_parquet(Path(directory) / f"{name}.parquet") for name in TABLES}
    tables["items"]["topics"] = [tuple(t) for t in tables["items"]["topics"]]
    return Dataset(name=meta.pop("name"), topics=tuple(meta.pop("topics")), **tables,
                   meta={**meta, "snapshot": str(directory), **(extra_meta or {})}, ids=ids)
