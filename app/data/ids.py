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

from app.shared_arrays import SUFFIX, load_arrays, save_arrays

UNKNOWN = -1
GUEST_SPAN = 2**40  # unknown users get a stable index above every known one (cold start)
BULK_LOOKUP = 50_000  # from this many ids, one Arrow hash join beats per-id probes of the key table
ARROW_SUFFIX = ".arrow"  # beside <name>.parquet: the ids as an Arrow IPC file, mapped by replicas
KEYS, ORDER = "_keys", "_order"  # and <name>_keys / <name>_order: the sorted lookup keys and their rows


def _sort_key(value: object) -> tuple[int, object]:
    return (0, value) if isinstance(value, (int, np.integer)) else (1, str(value))


def _string_key(value: str) -> int:
    """A 63-bit key of a text id (stable across processes, unlike `hash`)."""
    return int.from_bytes(hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big") >> 1


class IdMap:
    """One mapping between a kind's own ids and the indices 1..n.

    Ids of one kind (all text or all integers, the usual case) live in one Arrow array, and a
    lookup probes a sorted table of keys (the integer itself, or a 63-bit digest of the text) with
    the positions they came from. An artifact saves all three as files that every replica on a
    node maps: at 1M text ids a map of Python objects (a tuple, a dict of ids, their int objects)
    was ≈ 0.15 GiB private in each process that held the dataset. Ids of mixed kinds keep a dict.
    """

    def __init__(self, external: Iterable[object] | pa.Array,
                 lookup: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        if isinstance(external, pa.ChunkedArray):
            external = external.combine_chunks()
        arrow = external if isinstance(external, pa.Array) else _one_kind(external)
        self._arrow: pa.Array | None = arrow
        self._mixed: tuple | None = None
        self._index: dict[object, int] | None = None
        if arrow is None:
            self._mixed = tuple(_plain(v) for v in external)
            self._index = {v: i + 1 for i, v in enumerate(self._mixed)}
            self._keys = self._order = np.zeros(0, np.int64)
            return
        self._keys, self._order = lookup if lookup is not None else _lookup_table(arrow)

    @property
    def external(self) -> tuple:
        """Every id, in index order (external[i - 1] is the id of index i), as Python values:
        O(n), for training and folding, not for the request path."""
        return self._mixed if self._mixed is not None else tuple(self._arrow.to_pylist())  # type: ignore[union-attr]

    def __len__(self) -> int:
        return len(self._mixed) if self._mixed is not None else len(self._arrow)  # type: ignore[arg-type]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and len(self) == len(other) and self.external == other.external

    __hash__ = None  # type: ignore[assignment]  # equal maps would need equal hashes over every id

    def __repr__(self) -> str:
        return f"IdMap({len(self)} ids, {self._kind()})"

    def _kind(self) -> str:
        if self._arrow is None:
            return "mixed"
        return "integer" if pa.types.is_integer(self._arrow.type) else "text"

    @property
    def integer_ids(self) -> bool:
        """Every id is an integer (the API takes them as integers)."""
        if self._arrow is not None:
            return pa.types.is_integer(self._arrow.type)
        return all(isinstance(v, (int, np.integer)) for v in self._mixed or ())

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
        if self._arrow is None:
            return np.fromiter((self._index.get(v, UNKNOWN) for v in values.tolist()), np.int64, len(values))  # type: ignore[union-attr]
        if len(values) < BULK_LOOKUP:
            return np.fromiter((self.one(v) for v in values.tolist()), np.int64, len(values))
        try:  # a large batch: one Arrow hash join (it hashes the whole map, so only for many ids)
            found = pc.index_in(pa.array(values, type=self._arrow.type), value_set=self._arrow)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            return np.fromiter((self.one(v) for v in values.tolist()), np.int64, len(values))
        return found.fill_null(UNKNOWN - 1).to_numpy(zero_copy_only=False).astype(np.int64) + 1

    def one(self, external: object) -> int:
        value = _plain(external)
        if self._arrow is None:
            return self._index.get(value, UNKNOWN)  # type: ignore[union-attr]
        if pa.types.is_integer(self._arrow.type):
            if not isinstance(value, int) or isinstance(value, bool) or not -2**63 <= value < 2**63:
                return UNKNOWN
            key = value
        elif isinstance(value, str):
            key = _string_key(value)
        else:
            return UNKNOWN
        position = int(np.searchsorted(self._keys, key))
        while position < len(self._keys) and int(self._keys[position]) == key:  # equal keys: digests may collide
            row = int(self._order[position])
            if self._arrow[row].as_py() == value:
                return row + 1
            position += 1
        return UNKNOWN

    def to_external(self, internal: Iterable[int]) -> list:
        wanted = np.fromiter((int(v) for v in internal), np.int64)
        inside = (wanted >= 1) & (wanted <= len(self))
        out: list = [None] * len(wanted)
        if self._mixed is not None:
            for i in np.flatnonzero(inside).tolist():
                out[i] = self._mixed[wanted[i] - 1]
            return out
        named = self._arrow.take(pa.array(wanted[inside] - 1)).to_pylist()  # type: ignore[union-attr]
        for i, value in zip(np.flatnonzero(inside).tolist(), named):
            out[i] = value
        return out

    def guest(self, external: object) -> int:
        """A stable index for an id the map does not know (a new user): every replica computes
        the same one, above every known index, so state keyed by it (served items, hides) holds."""
        digest = hashlib.blake2b(str(external).encode(), digest_size=8).digest()
        return len(self) + 1 + int.from_bytes(digest, "big") % GUEST_SPAN

    def save(self, path: Path) -> None:
        """<name>.parquet (the portable table), and for one kind of ids the mapped files beside it."""
        path = Path(path)
        external = self.external
        pd.DataFrame({"index": np.arange(1, len(self) + 1), "id": [str(v) for v in external],
                      "integer": [isinstance(v, (int, np.integer)) for v in external]}).to_parquet(path, index=False)
        if self._arrow is not None:
            with pa.OSFile(str(path.with_suffix(ARROW_SUFFIX)), "wb") as sink:
                table = pa.table({"id": self._arrow})
                with pa.ipc.new_file(sink, table.schema) as writer:
                    writer.write_table(table)
            save_arrays(path.parent, {path.stem + KEYS: self._keys, path.stem + ORDER: self._order})

    @classmethod
    def load(cls, path: Path) -> IdMap:
        """Mapped from the files `save` writes beside the table (an artifact saved before they
        existed, or mixed ids: built from the table)."""
        path = Path(path)
        arrow_file, keys, order = path.with_suffix(ARROW_SUFFIX), path.stem + KEYS, path.stem + ORDER
        if arrow_file.exists() and all((path.parent / f"{name}{SUFFIX}").exists() for name in (keys, order)):
            reader = pa.ipc.open_file(pa.memory_map(str(arrow_file), "r"))
            ids = reader.get_batch(0).column(0) if reader.num_record_batches == 1 else \
                reader.read_all().column(0).combine_chunks()
            arrays = load_arrays(path.parent, [keys, order])
            return cls(ids, (arrays[keys], arrays[order]))
        frame = pd.read_parquet(path).sort_values("index")
        return cls(tuple(int(v) if is_int else str(v) for v, is_int in zip(frame["id"], frame["integer"])))


def _lookup_table(arrow: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(sorted keys, the position of each): an integer id is its own key, a text id its digest."""
    if pa.types.is_integer(arrow.type):
        keys = arrow.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    else:
        keys = np.fromiter((_string_key(v) for v in arrow.to_pylist()), np.int64, len(arrow))
    order = np.argsort(keys, kind="stable")
    return keys[order], order.astype(np.int64)


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
