"""A dataset in the table contract becomes the `Dataset` every model reads.

Steps (each documented column by column in docs/data.md):
  1. ids: users, items and creators get dense indices (`IdMaps`), the previous artifact's kept;
  2. items: `created_at` gives the release year; absent topics are empty, content ratings "NR",
     minimum ages from the content rating; the title defaults to the item's id;
  3. users: the four attribute slots the models have (age, gender, occupation, region) are read
     from the columns `data.tables.user_columns` names; users known only from interactions get
     unknown attributes (age 0, "unknown");
  4. interactions: the engagement log every model reads (retrieval history, co-engagement,
     trending, features, evaluation) holds one row per (user, item) a user engaged with:
     a rating log's rows as they are; an event log's clicks, likes, shares, watches, conversions
     and hides, each pair's first engagement, with an implied rating (like/share/conversion 5,
     click/watch 4, hide 1) for the rating-derived features. The full event log, impressions
     included, is kept beside it (`Dataset.events`): the ranker's labels come from it;
  5. social edges as given, else the seeded generator (app/data/social.py).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from app.data.config import DataConfig
from app.data.contract import CONTENT_RATING_MIN_AGE
from app.data.ids import IdMap, IdMaps
from app.data.labels import event_head_labels
from app.data.social import generate_friend_graph
from app.data.tables import Dataset
from app.data.validation import ContractTables

UNKNOWN_ATTRIBUTE = "unknown"
UNRATED = "NR"
# The implied rating of an engagement, for the features that read ratings (item mean rating, ...).
IMPLIED_RATING = {"like": 5.0, "share": 5.0, "conversion": 5.0, "click": 4.0, "watch": 4.0, "hide": 1.0}
LOG_EVENTS = tuple(IMPLIED_RATING)


def id_maps(tables: ContractTables, previous: IdMaps | None = None) -> IdMaps:
    users = [tables.interactions["user_id"]]
    if tables.users is not None:
        users.append(tables.users["user_id"])
    if tables.social_edges is not None:
        users += [tables.social_edges["user_id"], tables.social_edges["friend_id"]]
    return IdMaps(
        users=IdMap.build(pd.concat(users, ignore_index=True), previous.users if previous else None),
        items=IdMap.build(tables.items["item_id"], previous.items if previous else None),
        creators=IdMap.build(tables.items["creator_id"], previous.creators if previous else None),
    )


def is_identity(ids: IdMaps) -> bool:
    """Integer ids that already are 1..n: no mapping is needed (the built-in datasets)."""
    return all(m.integer_ids and list(m.external) == list(range(1, len(m) + 1))
               for m in (ids.users, ids.items, ids.creators))


def dataset_from_tables(tables: ContractTables, config: DataConfig, name: str,
                        previous: IdMaps | None = None) -> Dataset:
    ids = id_maps(tables, previous)
    items = _items(tables, ids, config)
    users = _users(tables, ids, config)
    events = _events(tables, ids)
    interactions = _engagement_log(events, tables.rating_log, config.tables.watch_seconds_cap)
    edges = _edges(tables, ids) if tables.social_edges is not None else generate_friend_graph(users, config)
    creators = (items.groupby("creator_id").size().rename("n_items").reset_index()
                .assign(entity=lambda f: ids.creators.to_external(f["creator_id"])))
    topics = tuple(sorted({t for ts in items["topics"] for t in ts}))
    return Dataset(
        name=name, users=users, items=items, creators=creators[["creator_id", "entity", "n_items"]],
        interactions=interactions, social_edges=edges, topics=topics,
        meta={"source": "tables", "item_features": list(tables.item_features),
              "has_impressions": tables.has_impressions, "rating_log": tables.rating_log},
        ids=None if is_identity(ids) else ids,
        events=events if not tables.rating_log else None,
    )


def _items(tables: ContractTables, ids: IdMaps, config: DataConfig) -> pd.DataFrame:
    src = tables.items
    created = pd.to_datetime(src["created_at"], unit="s", utc=True, errors="coerce")
    ratings = (src["content_rating"].fillna(UNRATED).astype(str).str.strip().replace("", UNRATED)
               if "content_rating" in src else pd.Series(UNRATED, index=src.index))
    if "min_age" in src and src["min_age"].notna().any():
        min_age = src["min_age"].to_numpy(np.float64)
    else:
        min_age = np.full(len(src), np.nan)
    derived = ratings.map(lambda r: CONTENT_RATING_MIN_AGE.get(r, config.unrated_min_age)).to_numpy(np.float64)
    min_age = np.where(np.isfinite(min_age), min_age, derived).astype(np.int64)
    titles = src["title"].fillna("").astype(str) if "title" in src else pd.Series("", index=src.index)
    titles = titles.where(titles != "", src["item_id"].astype(str))
    items = pd.DataFrame({
        "item_id": ids.items.to_internal(src["item_id"]),
        "title": titles.to_numpy(object),
        "release_year": created.dt.year.fillna(0).astype(np.int64).to_numpy(),
        "topics": src["topics"].to_numpy(object) if "topics" in src else [()] * len(src),
        "creator_id": ids.creators.to_internal(src["creator_id"]),
        "content_rating": ratings.to_numpy(object),
        "min_age": min_age,
        "created_at": src["created_at"].to_numpy(np.float64),
    })
    for column in tables.item_features:
        items[column] = src[column].to_numpy(np.float64)
    if "embedding" in src:
        items["embedding"] = src["embedding"].to_numpy(object)
    return items


def _users(tables: ContractTables, ids: IdMaps, config: DataConfig) -> pd.DataFrame:
    n = len(ids.users)
    out = pd.DataFrame({"user_id": np.arange(1, n + 1, dtype=np.int64), "age": np.zeros(n, np.int64),
                        "gender": UNKNOWN_ATTRIBUTE, "occupation": UNKNOWN_ATTRIBUTE, "zip_code": ""})
    if tables.users is None:
        return out
    src = tables.users
    rows = ids.users.to_internal(src["user_id"]) - 1
    slots = config.tables.user_columns
    for slot, column in (("age", slots.age), ("gender", slots.gender), ("occupation", slots.occupation),
                         ("zip_code", slots.region)):
        if column is None or column not in src:
            continue
        if slot == "age":
            ages = pd.to_numeric(src[column], errors="coerce").fillna(0).clip(0, 120).astype(np.int64)
            out.loc[rows, "age"] = ages.to_numpy()
        else:
            values = src[column].astype(object).where(src[column].notna(), UNKNOWN_ATTRIBUTE).astype(str)
            out.loc[rows, slot] = values.to_numpy(object)
    return out


def _events(tables: ContractTables, ids: IdMaps) -> pd.DataFrame:
    src = tables.interactions
    n = len(src)
    return pd.DataFrame({
        "user_id": ids.users.to_internal(src["user_id"]),
        "item_id": ids.items.to_internal(src["item_id"]),
        "event": src["event"].to_numpy(object),
        "timestamp": src["timestamp"].to_numpy(np.float64),
        "value": src["value"].to_numpy(np.float64) if "value" in src else np.full(n, np.nan),
        "position": (src["position"].fillna(-1).to_numpy(np.float64).astype(np.int64) if "position" in src
                     else np.full(n, -1, np.int64)),
        "request_id": src["request_id"].to_numpy(object) if "request_id" in src else np.full(n, None, object),
        "rating": src["rating"].to_numpy(np.float64) if "rating" in src else np.full(n, np.nan),
    })


def _engagement_log(events: pd.DataFrame, rating_log: bool, watch_seconds_cap: float) -> pd.DataFrame:
    """One row per (user, item) a user engaged with: the models' history (module docstring); an
    event log's rows carry their five head labels (app/data/labels.py)."""
    if rating_log:
        log = events
        rating = log["rating"].to_numpy(np.float32)
    else:
        log = events[events["event"].isin(LOG_EVENTS)]
        strongest = log.assign(implied=log["event"].map(IMPLIED_RATING))
        # A hide overrides what came before it: a user who hid an item did not like it.
        hidden = strongest.groupby(["user_id", "item_id"])["event"].transform(lambda e: (e == "hide").any())
        implied = np.where(hidden, IMPLIED_RATING["hide"],
                           strongest.groupby(["user_id", "item_id"])["implied"].transform("max"))
        log = strongest.assign(rating=implied.astype(np.float32))
        log = log.sort_values(["user_id", "item_id", "timestamp"], kind="stable").drop_duplicates(
            ["user_id", "item_id"], keep="first")
        rating = log["rating"].to_numpy(np.float32)
    out = pd.DataFrame({
        "user_id": log["user_id"].to_numpy(np.int64),
        "item_id": log["item_id"].to_numpy(np.int64),
        "rating": rating,
        "timestamp": log["timestamp"].to_numpy(np.float64).astype(np.int64),
        "position": log["position"].to_numpy(np.int64),
    })
    if not rating_log:
        out = out.merge(event_head_labels(events, watch_seconds_cap), on=["user_id", "item_id"], how="left")
    return out.sort_values(["user_id", "timestamp", "item_id"], kind="stable", ignore_index=True)


def _edges(tables: ContractTables, ids: IdMaps) -> pd.DataFrame:
    src = tables.social_edges
    assert src is not None
    return pd.DataFrame({
        "user_id": ids.users.to_internal(src["user_id"]),
        "friend_id": ids.users.to_internal(src["friend_id"]),
        "weight": src["weight"].fillna(1.0).to_numpy(np.float64) if "weight" in src else np.ones(len(src)),
        "close": src["close"].to_numpy(bool) if "close" in src else np.zeros(len(src), bool),
    })
