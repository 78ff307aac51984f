"""IdMap: the user's ids against rayfeed's dense indices, in memory and mapped from an artifact."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import app.data.ids as ids_module
from app.data.ids import UNKNOWN, IdMap, IdMaps


@pytest.mark.parametrize("ids, stranger", [
    (("m3", "m1", "m20", "é", "m2"), "m4"),
    ((30, 10, 2**62, -5, 7), 8),
])
def test_every_lookup_path_agrees_with_the_order_of_the_ids(ids, stranger):
    mapping = IdMap(ids)
    expected = list(range(1, len(ids) + 1))
    assert [mapping.one(v) for v in ids] == expected
    assert mapping.to_internal(list(ids) + [stranger]).tolist() == expected + [UNKNOWN]
    assert mapping.one(stranger) == UNKNOWN
    assert mapping.to_external([*expected, 0, len(ids) + 1]) == [*ids, None, None]


def test_a_large_batch_takes_the_hash_join_and_gives_the_same_indices(monkeypatch):
    mapping = IdMap(tuple(f"u{i}" for i in range(200)))
    batch = [f"u{i}" for i in range(199, -1, -3)] + ["nope"]
    one_by_one = mapping.to_internal(batch)
    monkeypatch.setattr(ids_module, "BULK_LOOKUP", 1)
    assert mapping.to_internal(batch).tolist() == one_by_one.tolist()
    assert one_by_one.tolist() == [int(v[1:]) + 1 for v in batch[:-1]] + [UNKNOWN]


def test_ids_of_another_kind_are_unknown_not_coerced():
    text, numbers = IdMap(("1", "2")), IdMap((1, 2))
    assert text.one(1) == UNKNOWN and numbers.one("1") == UNKNOWN and numbers.one(True) == UNKNOWN
    assert text.to_internal([2, "2"]).tolist() == [UNKNOWN, 2]
    assert numbers.one(np.int64(2)) == 2 and numbers.one(2**70) == UNKNOWN


def test_colliding_keys_are_told_apart_by_the_ids_themselves(monkeypatch):
    monkeypatch.setattr(ids_module, "_string_key", lambda value: 7)  # every text id on one key
    mapping = IdMap(("b", "a", "c"))
    assert [mapping.one(v) for v in ("a", "b", "c", "d")] == [2, 1, 3, UNKNOWN]


def test_mixed_ids_keep_working_through_a_dict():
    mapping = IdMap((5, "five"))
    assert mapping.to_internal(["five", 5, "5"]).tolist() == [2, 1, UNKNOWN]
    assert mapping.to_external([2, 1]) == ["five", 5] and not mapping.integer_ids


def test_an_artifact_map_is_mapped_from_its_files_and_an_older_one_still_loads(tmp_path):
    maps = IdMaps(IdMap(tuple(f"u{i}" for i in range(50))), IdMap(tuple(range(100, 0, -1))), IdMap((1, "c")))
    maps.save(tmp_path / "ids")
    loaded = IdMaps.load(tmp_path / "ids")
    assert loaded == maps
    assert not loaded.users._keys.flags.writeable and not loaded.items._order.flags.writeable  # mapped read-only
    assert loaded.users.one("u49") == 50 and loaded.items.one(1) == 100 and loaded.creators.one("c") == 2
    for name in ("users", "items"):  # an artifact from before the mapped files: built from the table
        for suffix in (".arrow", "_keys.npy", "_order.npy"):  # the files `save` wrote beside the parquet
            (tmp_path / "ids" / f"{name}{suffix}").unlink()
    older = IdMaps.load(tmp_path / "ids")
    assert older == maps and older.users.one("u7") == 8 and older.items.to_external([1]) == [100]


def test_a_map_built_from_an_arrow_array_owns_no_python_objects_per_id():
    mapping = IdMap(pa.array([f"item-{i}" for i in range(1000)]))
    assert mapping._mixed is None and mapping._index is None
    assert mapping.one("item-999") == 1000 and len(mapping) == 1000
