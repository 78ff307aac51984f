"""Published items folded into the dataset the next `rayfeed train` reads.

A published item lives in the item stream (app/state/items.py) and, on every replica, in the
fresh index and the overlay after the artifact's slots (app/freshness/published.py). Training
folds the stream's live items into the dataset before anything is fitted, so the next artifact
holds them like any other item: in the main index, the feature tables, the catalogue snapshot
and the id maps. Replicas of that artifact skip their stream entries (the artifact's row wins).

Indices never move between versions (Redis state, cursors and hides are keyed by them):
  - an id the previous artifact's maps hold keeps its index;
  - a new one is appended after the map's last, in publication order (seq);
  - a dataset whose ids are the models' own integers (MovieLens, the synthetic world) gets maps
    at its first fold: identity over its users, items and creators, the published ones after
    them, so every id names the same row as before and the API speaks the same integers.
Not folded: a tombstoned item, and a published id the dataset's own tables hold (the tables win).

    dataset, report = fold_published(dataset, published, previous_ids)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from app.data.ids import IdMap, IdMaps
from app.data.snapshot import TOPIC_MATRIX
from app.data.tables import Dataset
from app.freshness.published import PublishedItems, catalogue_fields
from app.state.items import StreamedItem


@dataclass(frozen=True)
class FoldReport:
    folded: int  # published items the dataset now holds as its own
    new_ids: int  # of those, ids the previous maps did not hold
    in_tables: int  # published ids the dataset's tables already hold (their rows win)
    deleted: int  # tombstones: not folded

    def render(self) -> str:
        return (f"published items: {self.folded} folded into this version ({self.new_ids} new ids), "
                f"{self.in_tables} already in the dataset's tables, {self.deleted} deleted")


def fold_published(dataset: Dataset, published: PublishedItems,
                   previous: IdMaps | None = None) -> tuple[Dataset, FoldReport]:
    """`dataset` holding the live published items (see the module's docstring for the indices)."""
    entries = [published.by_seq[seq] for seq in sorted(published.by_seq)]
    live = [e for e in entries if not e.item.get("deleted")]
    deleted = len(entries) - len(live)
    if dataset.ids is None and previous is None and not live:  # no maps needed: the dataset as it was
        return dataset, FoldReport(0, 0, 0, deleted)
    maps = _base_maps(dataset, previous)
    own = set(dataset.items["item_id"].tolist())
    new_items = [e.item["item_id"] for e in live if maps.items.one(e.item["item_id"]) < 1]
    items_map = IdMap(tuple(maps.items.external) + tuple(dict.fromkeys(new_items)))
    in_tables = [e for e in live if items_map.one(e.item["item_id"]) in own]
    to_fold = [e for e in live if items_map.one(e.item["item_id"]) not in own]
    new_creators = [e.item["creator_id"] for e in to_fold if maps.creators.one(e.item["creator_id"]) < 1]
    creators_map = IdMap(tuple(maps.creators.external) + tuple(dict.fromkeys(new_creators)))
    ids = IdMaps(maps.users, items_map, creators_map)
    report = FoldReport(len(to_fold), len(set(new_items)), len(in_tables), deleted)
    if not to_fold and ids == dataset.ids:
        return dataset, report
    items = _with_rows(dataset.items, [_row(e, ids, dataset.items.columns) for e in to_fold])
    return dataclasses.replace(
        dataset, items=items, creators=_creators(dataset.creators, items, ids), ids=ids,
        meta={**{k: v for k, v in dataset.meta.items() if k != TOPIC_MATRIX}, "folded_items": len(to_fold)},
    ), report


def _identity(n: int) -> IdMap:
    return IdMap(tuple(range(1, n + 1)))


def _base_maps(dataset: Dataset, previous: IdMaps | None) -> IdMaps:
    """The maps to extend: the dataset's own (a tables dataset, already extending the previous
    artifact's), else the previous artifact's when they agree with the dataset's integers, else
    identity maps."""
    if dataset.ids is not None:
        return dataset.ids
    sizes = (dataset.max_user_id, dataset.max_item_id, int(dataset.creators["creator_id"].max()))
    if previous is not None and all(len(m) >= n and m.external[:n] == tuple(range(1, n + 1))
                                    for m, n in zip((previous.users, previous.items, previous.creators), sizes)):
        return IdMaps(_identity(max(sizes[0], len(previous.users))), previous.items, previous.creators)
    return IdMaps(*(_identity(n) for n in sizes))


def _row(entry: StreamedItem, ids: IdMaps, columns: pd.Index) -> dict:
    fields = catalogue_fields(entry.item)
    row = {column: np.nan for column in columns}
    row.update({key: fields[key] for key in ("title", "release_year", "topics", "content_rating", "min_age")})
    row.update({"item_id": ids.items.one(entry.item["item_id"]), "creator_id": ids.creators.one(entry.item["creator_id"])})
    if "created_at" in columns:
        row["created_at"] = fields["created_at"]
    if "embedding" in columns:
        row["embedding"] = None
    return row


def _with_rows(items: pd.DataFrame, rows: list[dict]) -> pd.DataFrame:
    if not rows:
        return items
    added = pd.DataFrame(rows, columns=items.columns).astype(
        {c: items[c].dtype for c in ("item_id", "release_year", "creator_id", "min_age")})
    return pd.concat([items, added], ignore_index=True).sort_values("item_id", ignore_index=True)


def _creators(creators: pd.DataFrame, items: pd.DataFrame, ids: IdMaps) -> pd.DataFrame:
    """The creators table with each creator's item count recounted and new creators named by
    their own ids."""
    counts = items.groupby("creator_id").size()
    known = creators.set_index("creator_id")["entity"]
    index = sorted(set(known.index) | set(counts.index))
    names = ids.creators.to_external(index)
    return pd.DataFrame({
        "creator_id": np.asarray(index, np.int64),
        "entity": [known.get(c, str(name)) for c, name in zip(index, names)],
        "n_items": counts.reindex(index).fillna(0).astype(np.int64).to_numpy(),
    })
