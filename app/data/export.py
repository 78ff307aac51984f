"""Producers of the table contract: a `Dataset` (MovieLens-100k, the synthetic world) or an
event log written as contract tables, so the built-in worlds travel the same path as users' data.

    export_dataset(load_dataset(DataConfig()), "data/ml-contract", string_ids=True)   # u42, m50, c7
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from app.data.storage import write_table
from app.data.tables import Dataset

SECONDS_PER_YEAR = 365.2425 * 86_400
EPOCH_YEAR = 1970


def _namer(prefix: str, string_ids: bool) -> Callable[[np.ndarray], pa.Array]:
    if string_ids:
        return lambda ids: pa.array([f"{prefix}{int(i)}" for i in ids], pa.string())
    return lambda ids: pa.array(np.asarray(ids, np.int64), pa.int64())


def _external(mapping) -> Callable[[np.ndarray], pa.Array]:
    return lambda values: pa.array(mapping.to_external(values))


def created_at(dataset: Dataset) -> np.ndarray:
    """Each item's publication time: its own `created_at` when the dataset has one, else the
    earlier of 1 January of its release year and its first interaction (MovieLens has only years,
    and some films were rated before the year's first day)."""
    items = dataset.items
    if "created_at" in items:
        return items["created_at"].to_numpy(np.float64)
    first = dataset.interactions.groupby("item_id")["timestamp"].min()
    first_seen = first.reindex(items["item_id"]).to_numpy(np.float64)
    years = items["release_year"].to_numpy(np.float64)
    january = np.where(years >= EPOCH_YEAR, (years - EPOCH_YEAR) * SECONDS_PER_YEAR, np.nan)
    stamp = np.fmin(january, first_seen)
    return np.where(np.isfinite(stamp), stamp, dataset.interactions["timestamp"].min()).round()


def export_dataset(dataset: Dataset, directory: str | Path, string_ids: bool = False) -> dict[str, int]:
    """Write `dataset` as contract tables (a rating log); returns rows written per table."""
    user, item = _namer("u", string_ids), _namer("m", string_ids)
    inter = dataset.interactions
    position = inter["position"].to_numpy(np.int64) if "position" in inter else np.full(len(inter), -1)
    tables = {
        "interactions": pa.table({
            "user_id": user(inter["user_id"].to_numpy()), "item_id": item(inter["item_id"].to_numpy()),
            "rating": pa.array(inter["rating"].to_numpy(np.float64)),
            "timestamp": pa.array(inter["timestamp"].to_numpy(np.int64)),
            "position": pa.array(np.where(position >= 1, position, 0), pa.int64(), mask=position < 1),
        }),
        **catalogue_tables(dataset, string_ids),
    }
    for name, table in tables.items():
        write_table(table, directory, name)
    return {name: t.num_rows for name, t in tables.items()}


def catalogue_tables(dataset: Dataset, string_ids: bool = False) -> dict[str, pa.Table]:
    """The items, users and social edges of `dataset` as contract tables (in the dataset's own
    ids when it has them)."""
    user, item, creator = _namer("u", string_ids), _namer("m", string_ids), _namer("c", string_ids)
    if dataset.ids is not None:
        ids = dataset.ids
        user, item, creator = _external(ids.users), _external(ids.items), _external(ids.creators)
    return {
        "items": pa.table({
            "item_id": item(dataset.items["item_id"].to_numpy()),
            "creator_id": creator(dataset.items["creator_id"].to_numpy()),
            "created_at": pa.array(created_at(dataset).astype(np.int64)),
            "topics": pa.array([list(t) for t in dataset.items["topics"]], pa.list_(pa.string())),
            "content_rating": pa.array(dataset.items["content_rating"].astype(str).tolist(), pa.string()),
            "min_age": pa.array(dataset.items["min_age"].to_numpy(np.int64)),
            "title": pa.array(dataset.items["title"].astype(str).tolist(), pa.string()),
        }),
        "users": pa.table({
            "user_id": user(dataset.users["user_id"].to_numpy()),
            "age": pa.array(dataset.users["age"].to_numpy(np.int64)),
            "gender": pa.array(dataset.users["gender"].astype(str).tolist(), pa.string()),
            "occupation": pa.array(dataset.users["occupation"].astype(str).tolist(), pa.string()),
            "zip_code": pa.array(dataset.users["zip_code"].astype(str).tolist(), pa.string()),
        }),
        "social_edges": pa.table({
            "user_id": user(dataset.social_edges["user_id"].to_numpy()),
            "friend_id": user(dataset.social_edges["friend_id"].to_numpy()),
            "weight": pa.array(dataset.social_edges["weight"].to_numpy(np.float64)),
            "close": pa.array(dataset.social_edges["close"].to_numpy(bool)),
        }),
    }


def export_events(events: pd.DataFrame, directory: str | Path, name: str = "interactions") -> int:
    """An event log (user_id, item_id, event, timestamp, value, position, request_id; ids as the
    user's) as the contract's `interactions` table; returns rows written."""
    position = events["position"].to_numpy(np.float64) if "position" in events else np.full(len(events), np.nan)
    table = pa.table({
        "user_id": pa.array(events["user_id"].tolist()),
        "item_id": pa.array(events["item_id"].tolist()),
        "event": pa.array(events["event"].astype(str).tolist(), pa.string()),
        "timestamp": pa.array(events["timestamp"].to_numpy(np.float64)),
        "value": pa.array(events["value"].to_numpy(np.float64) if "value" in events else np.full(len(events), np.nan),
                          mask=np.isnan(events["value"].to_numpy(np.float64)) if "value" in events else None),
        "position": pa.array(np.nan_to_num(position, nan=0).astype(np.int64), mask=~np.isfinite(position)),
        "request_id": pa.array([None if v is None or v != v else str(v) for v in events.get(
            "request_id", pd.Series([None] * len(events)))], pa.string()),
    })
    write_table(table, directory, name)
    return table.num_rows
