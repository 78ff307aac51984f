"""Published items as one replica sees them: the item stream folded into arrays the stages read.

`PublishedItems` holds the latest content of every published item (by seq) and how far the
replica has read the stream; `place(base)` lays them out after the artifact's own item slots:

    index = base.item_slots + seq

so every replica serving one artifact gives an item the same index without coordination, and a
restarted replica that replays the stream rebuilds exactly the same layout. An item the artifact
already knows (folded in by a later `rayfeed train`) keeps the artifact's index and its trained
embedding; its stream entry is skipped. A new creator gets `base.creator_slots + creator_seq`
(whatever its own id: a producer's creator id may be any integer up to 2^53 − 1, an index may not).

`PlacedItems` is what the stages consume: the catalogue rows (app/catalog.py), the id overlay
(app/api/ids.py), the item tower's input (app/freshness/items embedding) and the ranking feature
rows (app/ranking/features.py) all come from its one table.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from app.state.items import StreamedItem

if TYPE_CHECKING:
    from app.data.ids import IdMaps


@dataclass(frozen=True)
class PublishedItems:
    """Every published item followed so far (latest content per seq) and the stream position."""

    by_seq: Mapping[int, StreamedItem] = field(default_factory=lambda: MappingProxyType({}))
    position: str = "0-0"
    caught_up: bool = False  # the replica has read to the end of the stream at least once

    def __len__(self) -> int:
        return len(self.by_seq)

    def apply(self, entries: Iterable[StreamedItem], caught_up: bool) -> PublishedItems:
        """The view with `entries` applied (a later entry of a seq replaces the earlier one)."""
        entries = list(entries)
        if not entries:
            return self if self.caught_up or not caught_up else dataclasses.replace(self, caught_up=True)
        merged = dict(self.by_seq)
        for entry in entries:
            earlier = merged.get(entry.seq)
            if earlier is not None and not earlier.item.get("deleted"):
                # An edit is not a new post: it keeps the first publication time (and its youth).
                entry = dataclasses.replace(entry, item={**entry.item, "published_at": earlier.item["published_at"]})
            merged[entry.seq] = entry
        return PublishedItems(MappingProxyType(merged), entries[-1].entry_id, self.caught_up or caught_up)

    def place(self, base: ItemBase) -> PlacedItems:
        return PlacedItems.build(self, base)


@dataclass(frozen=True)
class ItemBase:
    """What the artifact already has: its item slots, its creators, and how it names them.

    `artifact_item(external)` / `artifact_creator(external)`: the artifact's index, or −1."""

    item_slots: int
    creator_slots: int
    artifact_item: Callable[[object], int]
    artifact_creator: Callable[[object], int]

    @classmethod
    def of(cls, known: np.ndarray, item_creator: np.ndarray, ids: IdMaps | None) -> ItemBase:
        """From the artifact's per-slot arrays (`known`: the slot holds an item; `item_creator`:
        its creator's index) and id maps (None: the ids are the models' own integers). Every
        stage derives the same base from its own copy: the catalogue's and the ranker's agree."""
        creator_slots = int(max(item_creator.max(initial=-1), 0)) + 1
        if ids is None:  # the ids are the models' integers: an id is known when its slot is used
            creators = frozenset(np.unique(item_creator[item_creator >= 0]).tolist())

            def item(external: object) -> int:
                inside = isinstance(external, int) and 0 <= external < len(known) and bool(known[external])
                return int(external) if inside else -1  # type: ignore[call-overload]

            def creator(external: object) -> int:
                return int(external) if isinstance(external, int) and external in creators else -1  # type: ignore

            return cls(len(known), creator_slots, item, creator)
        return cls(len(known), creator_slots, ids.items.one, ids.creators.one)


def catalogue_fields(item: dict) -> dict:
    """A published item's catalogue columns as the artifact's items table derives them (a
    missing created_at is its publication, the release year is created_at's, an untitled item
    is named by its id, an unrated one is "NR"): replicas placing it and the fold into the next
    version read it the same way."""
    created_at = float(item["created_at"] if item.get("created_at") is not None else item["published_at"])
    return {"created_at": created_at, "topics": tuple(item.get("topics") or ()),
            "content_rating": item.get("content_rating") or "NR", "min_age": int(item["min_age"]),
            "title": item.get("title") or str(item["item_id"]),
            "release_year": int(pd.Timestamp(created_at, unit="s", tz="UTC").year)}


@dataclass(frozen=True)
class PlacedItems:
    """The published items laid out after the artifact's slots, as one table (`frame`, indexed
    like the artifact's items: item_id is the models' index) plus the id overlay both ways."""

    base_slots: int
    frame: pd.DataFrame  # item_id (index), external_id, creator_id (index), creator_external, created_at,
    #                      published_at (serving-world time of acceptance), topics, content_rating,
    #                      min_age, title, release_year, seq
    index_of: Mapping[object, int]
    external_of: Mapping[int, object]
    creator_index_of: Mapping[object, int]

    @property
    def slots(self) -> int:
        """Item slots including the published ones (arrays indexed by item are this long)."""
        return self.base_slots if self.frame.empty else max(self.base_slots, int(self.frame["item_id"].max()) + 1)

    def __len__(self) -> int:
        return len(self.frame)

    @classmethod
    def build(cls, published: PublishedItems, base: ItemBase) -> PlacedItems:
        rows, index_of, creator_index_of = [], {}, {}
        for seq in sorted(published.by_seq):
            entry = published.by_seq[seq]
            item = entry.item
            if item.get("deleted") or base.artifact_item(item["item_id"]) >= 0:
                continue  # a tombstone (app/state/items.py), or folded into the artifact: its trained row wins
            creator = base.artifact_creator(item["creator_id"])
            if creator < 0:  # a new creator: after the artifact's, in the order they first published
                creator = base.creator_slots + entry.creator_seq
            index = base.item_slots + seq
            index_of[item["item_id"]] = index
            creator_index_of[item["creator_id"]] = creator
            rows.append({"item_id": index, "external_id": item["item_id"], "creator_id": creator,
                         "creator_external": item["creator_id"], "published_at": float(item["published_at"]),
                         **catalogue_fields(item), "seq": seq})
        columns = ["item_id", "external_id", "creator_id", "creator_external", "created_at", "published_at", "topics",
                   "content_rating", "min_age", "title", "release_year", "seq"]
        frame = pd.DataFrame(rows, columns=columns)
        if not frame.empty:
            frame = frame.astype({"item_id": np.int64, "creator_id": np.int64, "created_at": np.float64, "published_at": np.float64,
                                  "min_age": np.int64, "release_year": np.int64, "seq": np.int64})
        return cls(base.item_slots, frame, MappingProxyType(index_of),
                   MappingProxyType({v: k for k, v in index_of.items()}), MappingProxyType(creator_index_of))

    @classmethod
    def empty(cls, base_slots: int) -> PlacedItems:
        return cls.build(PublishedItems(), ItemBase(base_slots, 0, True, lambda _: -1, lambda _: -1))

    def published_at(self) -> np.ndarray:
        """Serving-world publication time per item slot (NaN for the artifact's items)."""
        out = np.full(self.slots, np.nan)
        if len(self):
            out[self.frame["item_id"].to_numpy()] = self.frame["published_at"].to_numpy()
        return out
