"""Feature encoding for the two towers: vocabularies built once from a Dataset, serialisable.

Ids are whatever the world uses (MovieLens ids are 1-based, other worlds need not be dense),
so every id goes through an explicit id → row map. Row 0 of every vocabulary is the
out-of-vocabulary / padding row: unknown users, unseen categories and empty history slots.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from app.data.tables import Dataset
from app.retrieval.config import TwoTowerConfig

OOV = 0
USER_CATEGORICAL = ("age_bucket", "gender", "occupation", "region")
ITEM_CATEGORICAL = ("creator", "year_bucket", "content_rating")


def _vocabulary(values: pd.Series, min_count: int) -> list[str]:
    counts = values.astype(str).value_counts()
    return sorted(counts[counts >= min_count].index.tolist())


def _lookup(vocabulary: list[str], values: pd.Series) -> np.ndarray:
    """Row of each value (1-based; OOV = 0 for values outside the vocabulary)."""
    index = {v: i + 1 for i, v in enumerate(vocabulary)}
    return np.fromiter((index.get(str(v), OOV) for v in values), dtype=np.int64, count=len(values))


class IdMap:
    """Sorted ids ↔ rows 1..n (row 0 = unknown id)."""

    def __init__(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if len(np.unique(ids)) != len(ids):
            raise ValueError("ids must be unique")
        self.ids = np.sort(ids)

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id; unknown ids map to OOV (0)."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(self.ids) == 0:
            return np.zeros(ids.shape, np.int64)
        pos = np.searchsorted(self.ids, ids).clip(0, len(self.ids) - 1)
        return np.where(self.ids[pos] == ids, pos + 1, OOV).astype(np.int64)


@dataclass(frozen=True)
class TowerFeatures:
    """Vocabularies of both towers. `encode_users`/`encode_items` turn tables into row indices.

    Example:
        features = TowerFeatures.from_dataset(ds, TwoTowerConfig())
        cats = features.encode_users(ds.users)          # (n_users, 4) int64
        cats, genres = features.encode_items(ds.items)  # (n_items, 3) int64, (n_items, n_topics)
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    genders: list[str]
    occupations: list[str]
    regions: list[str]
    content_ratings: list[str]
    creators: list[int]  # creator ids with their own row; empty when hashing
    creator_buckets: int  # rows for creators (excluding OOV)
    topics: list[str]
    age_bucket_edges: list[int]
    year_bucket_years: int
    year_min: int
    year_max: int
    zip_prefix_len: int

    @classmethod
    def from_dataset(cls, dataset: Dataset, config: TwoTowerConfig) -> TowerFeatures:
        users, items = dataset.users, dataset.items
        creators = sorted(int(c) for c in pd.unique(items["creator_id"]))
        hashed = len(creators) > config.creator_buckets
        years = items["release_year"].to_numpy(np.int64)
        known_years = years[years > 0]
        return cls(
            user_ids=np.sort(users["user_id"].to_numpy(np.int64)),
            item_ids=np.sort(items["item_id"].to_numpy(np.int64)),
            genders=_vocabulary(users["gender"], config.min_feature_count),
            occupations=_vocabulary(users["occupation"], config.min_feature_count),
            regions=_vocabulary(users["zip_code"].astype(str).str[: config.zip_prefix_len], config.min_feature_count),
            content_ratings=_vocabulary(items["content_rating"], config.min_feature_count),
            creators=[] if hashed else creators,
            creator_buckets=config.creator_buckets if hashed else len(creators),
            topics=list(dataset.topics),
            age_bucket_edges=list(config.age_bucket_edges),
            year_bucket_years=config.year_bucket_years,
            year_min=int(known_years.min()) if len(known_years) else 0,
            year_max=int(known_years.max()) if len(known_years) else 0,
            zip_prefix_len=config.zip_prefix_len,
        )

    # Vocabulary sizes, OOV row included: the embedding table sizes of each tower.
    @property
    def user_cardinalities(self) -> tuple[int, ...]:
        return (len(self.age_bucket_edges) + 2, len(self.genders) + 1, len(self.occupations) + 1, len(self.regions) + 1)

    @property
    def item_cardinalities(self) -> tuple[int, ...]:
        n_years = (self.year_max - self.year_min) // self.year_bucket_years + 2
        return (self.creator_buckets + 1, n_years, len(self.content_ratings) + 1)

    @property
    def n_user_rows(self) -> int:
        return len(self.user_ids) + 1

    @property
    def n_item_rows(self) -> int:
        return len(self.item_ids) + 1

    @cached_property
    def user_map(self) -> IdMap:
        return IdMap(self.user_ids)

    @cached_property
    def item_map(self) -> IdMap:
        return IdMap(self.item_ids)

    @cached_property
    def _creator_map(self) -> IdMap:
        return IdMap(np.asarray(self.creators, dtype=np.int64))

    def user_rows(self, user_ids: np.ndarray) -> np.ndarray:
        """Embedding row of each user id (0 for users unknown at training time)."""
        return self.user_map.rows(user_ids)

    def item_rows(self, item_ids: np.ndarray) -> np.ndarray:
        """Embedding row of each item id (0 for items unknown at training time)."""
        return self.item_map.rows(item_ids)

    def encode_users(self, users: pd.DataFrame) -> np.ndarray:
        """(n, 4) int64 rows: age bucket, gender, occupation, zip region. Missing age → OOV."""
        ages = pd.to_numeric(users["age"], errors="coerce").to_numpy(np.float64)
        known = np.isfinite(ages) & (ages > 0)
        buckets = np.searchsorted(self.age_bucket_edges, np.nan_to_num(ages), side="right") + 1
        age_bucket = np.where(known, buckets, OOV)
        return np.stack(
            [
                age_bucket.astype(np.int64),
                _lookup(self.genders, users["gender"]),
                _lookup(self.occupations, users["occupation"]),
                _lookup(self.regions, users["zip_code"].astype(str).str[: self.zip_prefix_len]),
            ],
            axis=1,
        )

    def _creator_rows(self, creator_ids: np.ndarray) -> np.ndarray:
        if self.creators:
            return self._creator_map.rows(creator_ids)
        # Hashed: a stable hash (not Python's salted one) so rows survive a restart.
        return np.fromiter(
            (zlib.crc32(str(int(c)).encode()) % self.creator_buckets + 1 for c in creator_ids),
            dtype=np.int64, count=len(creator_ids),
        )

    def encode_items(self, items: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(n, 3) int64 rows (creator, release-year bucket, content rating) and (n, n_topics) multi-hot."""
        years = items["release_year"].to_numpy(np.int64)
        n_years = self.item_cardinalities[1]
        year_bucket = np.where(
            years > 0, ((years - self.year_min) // self.year_bucket_years + 1).clip(1, n_years - 1), OOV
        )
        cats = np.stack(
            [
                self._creator_rows(items["creator_id"].to_numpy(np.int64)),
                year_bucket.astype(np.int64),
                _lookup(self.content_ratings, items["content_rating"]),
            ],
            axis=1,
        )
        topic_index = {t: i for i, t in enumerate(self.topics)}
        genres = np.zeros((len(items), len(self.topics)), dtype=np.float32)
        for row, topics in enumerate(items["topics"]):
            for t in topics:
                if t in topic_index:
                    genres[row, topic_index[t]] = 1.0
        return cats, genres

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["user_ids"] = self.user_ids.tolist()
        out["item_ids"] = self.item_ids.tolist()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> TowerFeatures:
        data = dict(data)
        data["user_ids"] = np.asarray(data["user_ids"], dtype=np.int64)
        data["item_ids"] = np.asarray(data["item_ids"], dtype=np.int64)
        return cls(**data)  # type: ignore[arg-type]

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: Path) -> TowerFeatures:
        return cls.from_dict(json.loads(Path(path).read_text()))
