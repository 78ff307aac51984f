"""A dataset as parquet files: the synthetic world's cache, and the copy an artifact carries.

An artifact holds the snapshot of the dataset it was trained on, so a replica on any node needs
only the artifact: not the data cache, the raw tables' URI, or PyPI (MovieLens comes from a
wheel) — and it serves exactly the catalogue and the users the models were trained with.
Beside the tables it keeps the catalogue's normalised topic matrix as an array file
(`catalog_topics.npy`): every replica that holds the catalogue (Retrieval, Reranking, the
ingress) maps the same pages instead of building a private copy (0.12 GiB each at 1M items).

    write_snapshot(dataset, staging / "dataset")
    dataset = read_snapshot(version.path / "dataset", ids)
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from app.data.ids import IdMaps
from app.data.tables import Dataset, shared_topic_tuples
from app.shared_arrays import load_arrays, save_arrays

TABLES = ("users", "items", "creators", "interactions", "social_edges")
TOPIC_MATRIX = "catalog_topics"  # the catalogue's normalised item × topic matrix, mapped by replicas
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
        save_arrays(staging, {TOPIC_MATRIX: dataset.normalised_topic_matrix()})
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
    tables = {name: pd.read_parquet(Path(directory) / f"{name}.parquet") for name in TABLES if name != "items"}
    items = pq.read_table(Path(directory) / "items.parquet")
    tables["items"] = (items.drop_columns(["topics"]).to_pandas().assign(topics=topic_tuples(items.column("topics")))
                       [items.column_names])
    mapped = {TOPIC_MATRIX: str(Path(directory))} if (Path(directory) / f"{TOPIC_MATRIX}.npy").exists() else {}
    return Dataset(name=meta.pop("name"), topics=tuple(meta.pop("topics")), **tables,
                   meta={**meta, "snapshot": str(directory), **mapped, **(extra_meta or {})}, ids=ids)


_JOIN = "\x1f"  # joins a row's topics into one key; a topic holding it takes the per-row path


def topic_tuples(column: pa.ChunkedArray) -> np.ndarray:
    """A list<string> column as an object array of tuples, one tuple per distinct combination,
    made without a Python object per row: rows are joined and dictionary-encoded in Arrow, only
    the distinct combinations become tuples. Per-row tuples freed later leave the interpreter's
    small-object arenas fragmented (≈ 60 MiB at 1M items that never went back to the OS)."""
    if pc.any(pc.match_substring(pc.list_flatten(column), _JOIN)).as_py():
        rows = shared_topic_tuples(t or () for t in column.to_pylist())
        out = np.empty(len(rows), dtype=object)
        for i, row in enumerate(rows):  # one by one: numpy would read equal-length tuples as a 2-D array
            out[i] = row
        return out
    encoded = pc.binary_join(column, _JOIN).combine_chunks().dictionary_encode()
    combos = np.empty(len(encoded.dictionary) + 1, dtype=object)
    combos[:-1] = [tuple(key.split(_JOIN)) if key else () for key in encoded.dictionary.to_pylist()]
    combos[-1] = ()  # a null list
    codes = encoded.indices.fill_null(len(combos) - 1).to_numpy(zero_copy_only=False)
    return combos[codes]


def mapped_topic_matrix(dataset: Dataset) -> np.ndarray | None:
    """The snapshot's normalised topic matrix, mapped read-only; None when the dataset did not come
    from a snapshot that has one, or it does not fit the dataset (rows, topics)."""
    directory = dataset.meta.get(TOPIC_MATRIX)
    if not directory:
        return None
    matrix = load_arrays(str(directory), [TOPIC_MATRIX])[TOPIC_MATRIX]
    return matrix if matrix.shape == (dataset.max_item_id + 1, len(dataset.topics)) else None
