"""The user's ids and rayfeed's dense indices.

Inside an artifact every user, item and creator is a dense integer 1..n (row 0 of every table
unused), because embeddings, feature tables and the index are arrays. Outside (the API, the CLI,
every export) ids are the user's own, strings or integers. `IdMap` holds one mapping; training
makes it once and saves it in the artifact, so a replica (or the next training, which extends it)
maps every id the same way. A dataset whose ids already are 1..n integers has no map (`None`):
its ids pass through unchanged.

    users = IdMap.build(["u42", "u7", "u42"])   # sorted: u42 -> 1, u7 -> 2
    users.to_internal(["u7", "nope"])          # array([ 2, -1])
    users.to_external([1])                     # ["u42"]
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

UNKNOWN = -1
GUEST_SPAN = 2**40  # unknown users get a stable index above every known one (cold start)


def _sort_key(value: object) -> tuple[int, object]:
    return (0, value) if isinstance(value, (int, np.integer)) else (1, str(value))


@dataclass(frozen=True)
class IdMap:
    external: tuple  # external[i - 1] is the id of index i

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {v: i + 1 for i, v in enumerate(self.external)})
        # Bulk lookups go through a hash index built once (a Python loop per id cost seconds per
        # million rows); a map of one kind (all strings, all integers) through Arrow's, in C++.
        object.__setattr__(self, "_arrow", _one_kind(self.external))
        object.__setattr__(self, "_bulk", None)  # pandas' hash index, built at the first lookup Arrow cannot do

    def __len__(self) -> int:
        return len(self.external)

    @property
    def integer_ids(self) -> bool:
        """Every id is an integer (the API takes them as integers)."""
        return all(isinstance(v, (int, np.integer)) for v in self.external)

    @classmethod
    def build(cls, ids: Iterable[object], previous: IdMap | None = None) -> IdMap:
        """A map over `ids`; with `previous`, its assignments are kept and new ids follow, sorted."""
        known = list(previous.external) if previous is not None else []
        seen = set(known)
        values = pd.unique(pd.Series(ids, dtype=object)) if not isinstance(ids, pd.Series) else pd.unique(ids)
        fresh = {_plain(v) for v in values} - seen
        arrow = _one_kind(fresh)
        if arrow is not None:  # integers before strings, each in natural order, as _sort_key says
            ordered = arrow.take(pc.array_sort_indices(arrow)).to_pylist()
        else:
            ordered = sorted(fresh, key=_sort_key)
        return cls(tuple(known + ordered))

    def to_internal(self, ids: Iterable[object]) -> np.ndarray:
        values = ids.to_numpy(object) if isinstance(ids, pd.Series) else np.asarray(
            [_plain(v) for v in ids], dtype=object)
        arrow = self._arrow  # type: ignore[attr-defined]
        if arrow is not None:
            try:
                found = pc.index_in(pa.array(values, type=arrow.type), value_set=arrow)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                found = None  # ids of another kind than the map's: the general path says which are unknown
            if found is not None:
                return found.fill_null(UNKNOWN - 1).to_numpy(zero_copy_only=False).astype(np.int64) + 1
        if self._bulk is None:  # type: ignore[attr-defined]
            object.__setattr__(self, "_bulk", pd.Index(pd.array(list(self.external), dtype=object)))
        found = self._bulk.get_indexer(values)  # type: ignore[attr-defined]
        return np.where(found >= 0, found + 1, UNKNOWN).astype(np.int64)

    def one(self, external: object) -> int:
        return self._index.get(_plain(external), UNKNOWN)  # type: ignore[attr-defined]

    def to_external(self, internal: Iterable[int]) -> list:
        n = len(self.external)
        return [self.external[i - 1] if 1 <= i <= n else None for i in (int(v) for v in internal)]

    def guest(self, external: object) -> int:
        """A stable index for an id the map does not know (a new user): every replica computes
        the same one, above every known index, so state keyed by it (served items, hides) holds."""
        digest = hashlib.blake2b(str(external).encode(), digest_size=8).digest()
        return len(self.external) + 1 + int.from_bytes(digest, "big") % GUEST_SPAN

    def save(self, path: Path) -> None:
        pd.DataFrame({"index": np.arange(1, len(self) + 1), "id": [str(v) for v in self.external],
                      "integer": [isinstance(v, (int, np.integer)) for v in self.external]}).to_parquet(path, index=False)

    @classmethod
    def load(cls, path: Path) -> IdMap:
        frame = pd.read_parquet(path).sort_values("index")
        return cls(tuple(int(v) if is_int else str(v) for v, is_int in zip(frame["id"], frame["integer"])))


def _one_kind(values) -> pa.Array | None:
    """`values` as one Arrow array when they are all strings or all (64-bit) integers, else None."""
    values = list(values)
    if not values:
        return None
    try:
        if all(isinstance(v, str) for v in values):
            return pa.array(values, type=pa.string())
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            return pa.array(values, type=pa.int64())
    except (pa.ArrowInvalid, OverflowError):
        return None
    return None


def _plain(value: object) -> object:
    if isinstance(value, np.integer):
        return int(value)
    return value


@dataclass(frozen=True)
class IdMaps:
    """The user, item and creator maps of one dataset (an artifact keeps them under ids/)."""

    users: IdMap
    items: IdMap
    creators: IdMap

    NAMES: ClassVar[tuple[str, ...]] = ("users", "items", "creators")

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for name in self.NAMES:
            getattr(self, name).save(directory / f"{name}.parquet")

    @classmethod
    def load(cls, directory: Path) -> IdMaps | None:
        if not (directory / "users.parquet").exists():
            return None
        return cls(*(IdMap.load(directory / f"{name}.parquet") for name in cls.NAMES))
