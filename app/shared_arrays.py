"""Read-only model memory shared by every replica on a node: files mapped, not copied.

A 1M-item artifact holds gigabytes of arrays (embeddings, feature tables, the index, the towers'
id tables) that no replica writes. Loaded with `np.load`/`torch.load` each replica keeps a private
copy; mapped from the artifact's files, the pages live once in the node's page cache and every
replica (and a second replica of the same deployment) maps the same pages. Measured in
benchmarks/million_items.py (proportional set size per process).

    save_arrays(directory, {"item_keys": keys, ...})      # one .npy per array
    arrays = load_arrays(directory)                      # read-only np.memmap views
    state = load_state(path)                             # a torch state_dict backed by the file
    model.load_state_dict(state, assign=True)            # parameters ARE the mapped tensors

Everything mapped is read-only: numpy raises on a write; a model built over a mapped state is for
inference (a write to its parameters would copy the page, and change that replica alone).
"""
from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

SUFFIX = ".npy"
PAGE = 4096


def save_arrays(directory: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """One uncompressed .npy file per array (what `np.load(mmap_mode="r")` maps)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        array = np.asarray(array)
        if array.dtype.hasobject:
            raise ValueError(f"array {name!r} holds Python objects: it cannot be memory-mapped")
        np.save(directory / f"{name}{SUFFIX}", np.ascontiguousarray(array), allow_pickle=False)
    return directory


def load_arrays(directory: str | Path, names: Iterable[str] | None = None,
                prefaulted: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays saved under `directory` (all, or `names`), mapped read-only. `prefaulted`: the
    ones the caller reads on its hot path (default all); the others map their pages when read,
    so an array a replica never reads does not count in its memory."""
    directory = Path(directory)
    if names is None:
        names = sorted(p.name.removesuffix(SUFFIX) for p in directory.glob(f"*{SUFFIX}"))
    out = {}
    warm = None if prefaulted is None else set(prefaulted)
    for name in names:
        path = directory / f"{name}{SUFFIX}"
        if not path.exists():
            raise FileNotFoundError(f"{directory}: array {name!r} is missing ({path.name})")
        # A plain ndarray over the mapping: np.memmap's Python-level indexing cost 14 % of the
        # ranking features' time, and nothing here needs its flush/close.
        array = np.load(path, mmap_mode="r", allow_pickle=False).view(np.ndarray)
        out[name] = prefault(array) if warm is None or name in warm else array
    return out


def prefault(array: np.ndarray) -> np.ndarray:
    """Map every page of `array` into this process now (one read per page), so the first
    requests do not pay the faults: at 1M items a cold ranking pass took 3× a warm one."""
    flat = array.reshape(-1).view(np.uint8) if array.flags.c_contiguous and array.size else None
    if flat is not None:
        int(flat[::PAGE].sum())
    return array


def load_state(path: str | Path, prefaulted: Callable[[str], bool] | None = None) -> dict:
    """A torch state_dict whose tensors are backed by the file's pages (torch.load's mmap).
    `prefaulted(name)`: whether to map that tensor's pages now (default: every tensor)."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    for name, tensor in state.items():
        if prefaulted is not None and not prefaulted(name):
            continue
        if isinstance(tensor, torch.Tensor) and tensor.is_contiguous() and tensor.numel():
            prefault(tensor.view(torch.uint8).numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy())
    return state


def release_freed_heap() -> None:
    """Hand the C heap's free pages back to the OS (glibc `malloc_trim`, every thread's arena),
    without a garbage collection (a full one over a loaded replica pauses requests). A request's
    large temporaries (feature matrices of 5000 candidates) are freed onto the heap, which keeps
    them: a 1M-item page loop grew anonymous memory 857 → 1150 MiB, and a trim took it to 932."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def release_unused_memory() -> None:
    """Hand memory freed after a load back to the OS: Arrow's pool (mimalloc) keeps the buffers
    that reading parquet frames freed, and glibc keeps freed heap. At 1M items a Retrieval
    replica's private memory fell ≈ 190 MiB this way (of ≈ 920 MiB after loading the dataset)."""
    gc.collect()
    try:
        import pyarrow

        pyarrow.default_memory_pool().release_unused()
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        pass
    release_freed_heap()
