"""ANN benchmark: FAISS IVF / HNSW against exact search on a synthetic 1M-item catalogue.

The catalogue is a seeded Gaussian mixture in 64-d (Zipf-sized clusters of varying spread,
L2-normalised like two-tower outputs), so neighbourhoods are uneven, not uniform noise.
Queries come from the same mixture. Every search runs one query at a time on one thread
(`faiss.omp_set_num_threads(1)`), the serving shape of a single feed request.

The approximate index's search-time knob (IVF nprobe / HNSW efSearch) is picked on separate
calibration queries: the cheapest setting whose recall@k reaches --target-recall. The
reported recall and latency are then measured on the benchmark queries.

    python benchmarks/ann.py                      # 1M items, IVF, 1000 queries, k=1000
    python benchmarks/ann.py --items 100000       # a quick run
    python benchmarks/ann.py --kind hnsw          # HNSW M=16, efConstruction=40
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.retrieval.config import AnnIndexConfig  # noqa: E402
from app.retrieval.index import AnnIndex  # noqa: E402

SPECTRUM_DECAY = 0.5  # per-dimension scale j^-0.5
SPREAD = (0.3, 0.8)  # within-cluster noise relative to the centres' scale
CLUSTER_ZIPF = 0.8  # cluster size ∝ rank^-0.8


def mixture(
    rng: np.random.Generator, n: int, centres: np.ndarray, scale: np.ndarray, spread: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """n unit vectors: a cluster drawn by `weights`, its centre plus noise (per-dimension `scale`
    times the cluster's `spread`)."""
    cluster = rng.choice(len(centres), size=n, p=weights)
    out = np.empty((n, centres.shape[1]), np.float32)
    for start in range(0, n, 200_000):  # chunks bound peak memory
        c = cluster[start:start + 200_000]
        noise = rng.standard_normal((len(c), centres.shape[1]), dtype=np.float32) * scale
        out[start:start + len(c)] = centres[c] + noise * spread[c, None]
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def catalogue(n_items: int, n_queries: int, dim: int, n_clusters: int, seed: int) -> tuple[np.ndarray, ...]:
    """Items, benchmark queries and calibration queries from one seeded mixture.

    Learned embeddings have a decaying spectrum (a few directions carry most variance), so
    both the centres and the within-cluster noise use per-dimension scale j^(-SPECTRUM_DECAY);
    cluster spreads vary by SPREAD and cluster sizes are Zipf-like (exponent CLUSTER_ZIPF).
    """
    rng = np.random.default_rng(seed)
    scale = np.arange(1, dim + 1, dtype=np.float32) ** -SPECTRUM_DECAY
    scale /= np.linalg.norm(scale)
    centres = rng.standard_normal((n_clusters, dim), dtype=np.float32) * scale
    spread = rng.uniform(*SPREAD, n_clusters).astype(np.float32)
    weights = 1.0 / np.arange(1, n_clusters + 1) ** CLUSTER_ZIPF
    weights /= weights.sum()
    items = mixture(rng, n_items, centres, scale, spread, weights)
    queries = mixture(rng, n_queries, centres, scale, spread, weights)
    calibration = mixture(rng, max(50, n_queries // 5), centres, scale, spread, weights)
    return items, queries, calibration


def one_at_a_time(index: AnnIndex, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Item ids (n, k) and the mean single-query latency in milliseconds."""
    out = np.empty((len(queries), k), np.int64)
    start = time.perf_counter()
    for i in range(len(queries)):
        out[i] = index.search(queries[i:i + 1], k)[0][0]
    return out, (time.perf_counter() - start) / len(queries) * 1e3


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(a, b)) / len(b) for a, b in zip(found, truth)]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--clusters", type=int, default=2000, help="mixture components of the catalogue")
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--kind", choices=("ivf", "hnsw"), default="ivf")
    parser.add_argument("--nlist", type=int, default=4096)
    parser.add_argument("--hnsw-m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=40)
    parser.add_argument("--build-threads", type=int, default=2, help="FAISS threads while building")
    parser.add_argument("--target-recall", type=float, default=0.97, help="calibration target (gate is 0.95)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    t = time.perf_counter()
    items, queries, calibration = catalogue(args.items, args.queries, args.dim, args.clusters, args.seed)
    ids = np.arange(len(items), dtype=np.int64)
    print(f"catalogue: {args.items} items x {args.dim}-d, {args.clusters} clusters, "
          f"{args.queries} queries, k={args.k} ({time.perf_counter() - t:.1f}s)", flush=True)

    faiss.omp_set_num_threads(args.build_threads)
    exact = AnnIndex.build(ids, items, AnnIndexConfig(kind="exact", use_gpu=False))
    t = time.perf_counter()
    if args.kind == "ivf":
        config = AnnIndexConfig(kind="ivf", ivf_nlist=args.nlist, ivf_nprobe=1, use_gpu=False)
        knob, grid = "nprobe", (8, 16, 24, 32, 48, 64, 96, 128, 192, 256)
    else:
        config = AnnIndexConfig(kind="hnsw", hnsw_m=args.hnsw_m, hnsw_ef_construction=args.ef_construction,
                                hnsw_ef_search=args.k, use_gpu=False)
        knob, grid = "efSearch", tuple(int(args.k * f) for f in (1.0, 1.25, 1.5, 2.0, 3.0, 4.0))
    approx = AnnIndex.build(ids, items, config)
    build_s = time.perf_counter() - t
    structure = (
        f"nlist={args.nlist}" if args.kind == "ivf" else f"M={args.hnsw_m} efConstruction={args.ef_construction}"
    )
    print(f"{args.kind} build ({structure}): {build_s:.1f}s on {args.build_threads} threads", flush=True)

    faiss.omp_set_num_threads(1)
    calibration_truth = exact.search(calibration, args.k)[0]
    chosen = grid[-1]
    for value in grid:
        approx.set_search_params(**({"ivf_nprobe": value} if args.kind == "ivf" else {"hnsw_ef_search": value}))
        r = recall(approx.search(calibration, args.k)[0], calibration_truth)
        print(f"  calibration {knob}={value}: recall@{args.k} {r:.4f}", flush=True)
        if r >= args.target_recall:
            chosen = value
            break
    approx.set_search_params(**({"ivf_nprobe": chosen} if args.kind == "ivf" else {"hnsw_ef_search": chosen}))

    truth, exact_ms = one_at_a_time(exact, queries, args.k)
    found, approx_ms = one_at_a_time(approx, queries, args.k)
    r = recall(found, truth)
    speedup = exact_ms / approx_ms
    print(f"exact (IndexFlatIP):        {exact_ms:8.3f} ms/query (1 thread, 1 query at a time)")
    print(f"{args.kind} ({knob}={chosen}):{' ' * max(1, 16 - len(knob) - len(str(chosen)))}{approx_ms:8.3f} ms/query")
    print(f"speed-up: {speedup:.1f}x   recall@{args.k}: {r:.4f}")
    ok = r >= 0.95 and speedup >= 10
    print("PASS" if ok else "FAIL", "(gate: recall >= 0.95 and speed-up >= 10x)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
