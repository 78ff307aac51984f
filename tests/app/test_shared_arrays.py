"""Shared read-only loading: what is saved comes back equal, read-only, and mapped, not copied."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from app.shared_arrays import load_arrays, load_state, save_arrays


def pss_kib() -> int:
    """This process's proportional set size: a page mapped twice counts once."""
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise RuntimeError("no Pss line in /proc/self/smaps_rollup")


def test_loaded_arrays_equal_the_saved_ones_and_are_read_only(tmp_path):
    saved = {"keys": np.arange(10, dtype=np.int64), "table": np.random.default_rng(0).normal(size=(7, 3)),
             "empty": np.zeros((0, 4), np.float32)}
    save_arrays(tmp_path, saved)
    loaded = load_arrays(tmp_path)
    assert sorted(loaded) == sorted(saved)
    for name, array in saved.items():
        np.testing.assert_array_equal(loaded[name], array)
        assert loaded[name].dtype == array.dtype and not loaded[name].flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        loaded["keys"][0] = 5


def test_a_second_load_maps_the_same_pages(tmp_path):
    big = np.random.default_rng(1).random(8 * 2**20 // 8 * 4)  # 32 MiB of float64
    save_arrays(tmp_path, {"big": big})
    before = pss_kib()
    first = load_arrays(tmp_path)["big"]
    assert float(first.sum()) == pytest.approx(float(big.sum()))  # touch every page
    after_first = pss_kib()
    second = load_arrays(tmp_path)["big"]
    assert float(second.sum()) == pytest.approx(float(big.sum()))
    after_second = pss_kib()
    grew_first, grew_second = after_first - before, after_second - after_first
    assert grew_first > 16 * 1024  # the pages are in memory once touched ...
    assert grew_second < grew_first / 4  # ... and a second mapping adds (almost) nothing


def test_object_arrays_are_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="'titles' holds Python objects"):
        save_arrays(tmp_path, {"titles": np.array(["a", None], dtype=object)})


def test_a_missing_array_is_named(tmp_path):
    save_arrays(tmp_path, {"a": np.zeros(3)})
    with pytest.raises(FileNotFoundError, match="array 'b' is missing"):
        load_arrays(tmp_path, ["a", "b"])


def test_a_mapped_state_dict_becomes_the_model_parameters_without_a_copy(tmp_path):
    model = torch.nn.Embedding(1000, 16)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    state = load_state(tmp_path / "model.pt")
    loaded = torch.nn.Embedding(1000, 16)
    loaded.load_state_dict(state, assign=True)
    assert torch.equal(loaded.weight, model.weight)
    assert loaded.weight.data_ptr() == state["weight"].data_ptr()  # the mapped tensor itself


def _mapped_rss_kib(path: Path) -> int:
    """Resident KiB of this process's mappings of `path` (from /proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            inside = fields[-1] == str(path)
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


def test_only_the_arrays_named_prefaulted_are_mapped_in_at_load(tmp_path):
    save_arrays(tmp_path, {"hot": np.ones(4 << 20, np.float32), "cold": np.ones(4 << 20, np.float32)})
    arrays = load_arrays(tmp_path, prefaulted=["hot"])
    hot, cold = (tmp_path / "hot.npy").resolve(), (tmp_path / "cold.npy").resolve()
    assert _mapped_rss_kib(hot) >= 15 << 10  # 16 MiB, every page mapped in
    assert _mapped_rss_kib(cold) < 1 << 10  # not read yet: its pages count nowhere
    assert float(arrays["cold"][-1]) == 1.0 and arrays["cold"].shape == (4 << 20,)  # readable when read
    state_path = tmp_path / "state.pt"
    torch.save({"hot.weight": torch.ones(4 << 20), "cold.weight": torch.ones(4 << 20)}, state_path)
    state = load_state(state_path, prefaulted=lambda name: name.startswith("hot"))
    assert _mapped_rss_kib(state_path.resolve()) < 17 << 10  # the hot half only (one file, one mapping)
    assert float(state["cold.weight"].sum()) == 4 << 20
