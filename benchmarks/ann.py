"""ANN benchmark: FAISS index kinds against exact search on synthetic catalogues of 100k-10M items.

The catalogue is a seeded Gaussian mixture in 64-d (Zipf-sized clusters of varying spread,
L2-normalised like two-tower outputs), so neighbourhoods are uneven, not uniform noise.
Queries come from the same mixture. Every timed search runs one query at a time on one thread
(`faiss.omp_set_num_threads(1)`), the serving shape of a single feed request; builds and the
ground truth use --build-threads.

For each size, the ground truth (top-k by inner product over every item) is computed once in
batch (faiss.knn: blocked matrix products, all build threads) for the benchmark queries and for
separate calibration queries. Each kind is then built, and its search-time knob is picked on
the calibration queries: the cheapest setting whose recall@k reaches --target-recall (ivf:
nprobe; hnsw: efSearch; ivfpq: nprobe and the re-ranking's k_factor, the pair with the least
calibration time among those that reach it). Latency P50/P99 and recall are then measured on
the benchmark queries. Exact search is timed on the first --exact-queries queries only (one
query at a time over 10M items takes ~0.2 s); its recall is over the same queries.

Index memory: "index MiB" is the size of the serialized FAISS index (what `AnnIndex.save`
writes, counted as it streams); "RSS delta" is the process's resident memory after the build
minus before it (after returning freed heap to the OS), which adds the id map (8 B/item) and the
slack of grown inverted lists. One index is alive at a time.

    python benchmarks/ann.py                                    # 1M items: exact, ivf
    python benchmarks/ann.py --sizes 100k --kinds exact,ivf,hnsw,ivfpq
    python benchmarks/ann.py --sizes 100k,1m,10m --kinds exact,ivf,ivfpq,ivfpq:sq8 --target-recall 0.95

A kind is exact, exact:gpu, hnsw, ivf or ivfpq[:REFINE] (REFINE: flat, the default, fp16, sq8 or
none; see AnnIndexConfig.ivfpq_refine). exact:gpu is the exact index with use_gpu on a machine where
torch sees CUDA: searched through torch on the GPU (app/retrieval/gpu_exact.py), timed on every
query and gated like the approximate kinds.

    python benchmarks/ann.py --sizes 1m,10m --kinds exact,exact:gpu --build-threads 16   # GPU machine
 Exit status 0 when every approximate row meets the gate (recall
>= --gate-recall and P99 <= --gate-p99-ms), else 1.
"""
from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a machine shared with other processes (more
# runnable threads than cores), spinning build threads halve the build speed. Set before FAISS
# loads libgomp; an explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import faiss  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.retrieval.config import AnnIndexConfig  # noqa: E402
from app.retrieval.gpu_exact import cuda_available  # noqa: E402
from app.retrieval.index import AnnIndex  # noqa: E402
from app.shared_arrays import release_unused_memory  # noqa: E402

SPECTRUM_DECAY = 0.5  # per-dimension scale j^-0.5
SPREAD = (0.3, 0.8)  # within-cluster noise relative to the centres' scale
CLUSTER_ZIPF = 0.8  # cluster size ∝ rank^-0.8
CHUNK = 200_000  # rows generated (and normalised) at a time: bounds peak memory at 10M items

NPROBE_GRID = (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
K_FACTOR_GRID = (1, 2, 4, 8, 16)
PLATEAU = 0.002  # a wider nprobe that gains less recall than this: the PQ order, not the lists, limits it
WARMUP_QUERIES = 5
MiB = 2**20


def mixture(
    rng: np.random.Generator, n: int, centres: np.ndarray, scale: np.ndarray, spread: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """n unit vectors: a cluster drawn by `weights`, its centre plus noise (per-dimension `scale`
    times the cluster's `spread`)."""
    cluster = rng.choice(len(centres), size=n, p=weights)
    out = np.empty((n, centres.shape[1]), np.float32)
    for start in range(0, n, CHUNK):  # chunks bound peak memory
        c = cluster[start:start + CHUNK]
        noise = rng.standard_normal((len(c), centres.shape[1]), dtype=np.float32) * scale
        block = centres[c] + noise * spread[c, None]
        out[start:start + len(c)] = block / np.linalg.norm(block, axis=1, keepdims=True)
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


def one_at_a_time(index: AnnIndex, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Item ids (n, k) and each query's latency in milliseconds, one query per search call."""
    for i in range(min(WARMUP_QUERIES, len(queries))):
        index.search(queries[i:i + 1], k)
    out = np.empty((len(queries), k), np.int64)
    latency = np.empty(len(queries))
    for i in range(len(queries)):
        start = time.perf_counter()
        out[i] = index.search(queries[i:i + 1], k)[0][0]
        latency[i] = time.perf_counter() - start
    return out, latency * 1e3


def torch_device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(a, b)) / len(b) for a, b in zip(found, truth)]))


def parse_size(text: str) -> int:
    text = text.strip().lower()
    factor = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if factor > 1 else text) * factor)


def size_label(n: int) -> str:
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def auto_nlist(n: int, cap: int) -> int:
    """The power of two nearest to 4·sqrt(n), at most `cap` (k-means and assignment cost grow with nlist)."""
    return min(cap, 2 ** round(math.log2(4 * math.sqrt(n))))


def rss_bytes() -> int:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):  # not Linux
        return 0


@dataclass
class Row:
    size: int
    kind: str
    build_s: float
    index_mib: float
    rss_mib: float
    p50: float
    p99: float
    recall: float
    knob: str
    timed: int
    gated: bool = True

    def passes(self, gate_recall: float, gate_p99: float) -> bool:
        return self.recall >= gate_recall and self.p99 <= gate_p99


def config_for(kind: str, nlist: int, args: argparse.Namespace) -> AnnIndexConfig:
    base, _, refine = kind.partition(":")
    if base == "exact":
        return AnnIndexConfig(kind="exact", use_gpu=refine == "gpu")
    if base == "hnsw":
        return AnnIndexConfig(kind="hnsw", hnsw_m=args.hnsw_m, hnsw_ef_construction=args.ef_construction,
                              hnsw_ef_search=args.k, use_gpu=False)
    if base == "ivf":
        return AnnIndexConfig(kind="ivf", ivf_nlist=nlist, ivf_nprobe=1, ivf_train_sample=args.train_sample,
                              use_gpu=False)
    return AnnIndexConfig(kind="ivfpq", ivf_nlist=nlist, ivf_nprobe=1, ivf_train_sample=args.train_sample,
                          ivfpq_m=args.pq_m, ivfpq_bits=args.pq_bits, ivfpq_refine=refine or "flat",
                          ivfpq_k_factor=1, use_gpu=False)


def structure(config: AnnIndexConfig, n: int) -> str:
    nlist = min(config.ivf_nlist, max(1, n // 39))
    return {
        "exact": "IndexFlatIP",
        "hnsw": f"M={config.hnsw_m} efConstruction={config.hnsw_ef_construction}",
        "ivf": f"nlist={nlist}",
        "ivfpq": f"nlist={nlist} PQ{config.ivfpq_m}x{config.ivfpq_bits} refine={config.ivfpq_refine}",
    }[config.kind]


def timed_recall(index: AnnIndex, queries: np.ndarray, truth: np.ndarray, k: int) -> tuple[float, float]:
    start = time.perf_counter()
    found = index.search(queries, k)[0]
    return recall(found, truth), time.perf_counter() - start


def calibrate(index: AnnIndex, calibration: np.ndarray, truth: np.ndarray, k: int, target: float) -> str:
    """Set the cheapest search knob that reaches `target` recall on the calibration queries; returns it as text."""
    kind = index.config.kind
    if kind == "exact":
        return "-"
    if kind == "hnsw":
        grid = tuple(int(k * f) for f in (1.0, 1.25, 1.5, 2.0, 3.0, 4.0))
        for value in grid:
            index.set_search_params(hnsw_ef_search=value)
            r, _ = timed_recall(index, calibration, truth, k)
            print(f"    calibration efSearch={value}: recall {r:.4f}", flush=True)
            if r >= target:
                return f"efSearch={value}"
        return f"efSearch={grid[-1]} (target not reached)"
    if kind == "ivf":
        for nprobe in NPROBE_GRID:
            index.set_search_params(ivf_nprobe=nprobe)
            r, _ = timed_recall(index, calibration, truth, k)
            print(f"    calibration nprobe={nprobe}: recall {r:.4f}", flush=True)
            if r >= target:
                return f"nprobe={nprobe}"
        return f"nprobe={NPROBE_GRID[-1]} (target not reached)"
    # ivfpq: for each k_factor the smallest nprobe that reaches the target (a larger k_factor is
    # only worth trying at a smaller nprobe); then the pair with the least calibration time.
    reached: list[tuple[float, int, int, float]] = []  # (seconds, k_factor, nprobe, recall)
    best: tuple[float, int, int] = (-1.0, 1, 1)  # (recall, k_factor, nprobe) if none reaches the target
    factors = K_FACTOR_GRID if index.config.ivfpq_refine != "none" else (1,)
    for k_factor in factors:
        previous = -1.0
        for nprobe in NPROBE_GRID:
            if reached and nprobe >= min(p for _, _, p, _ in reached):
                break
            index.set_search_params(ivf_nprobe=nprobe, ivfpq_k_factor=k_factor)
            r, seconds = timed_recall(index, calibration, truth, k)
            print(f"    calibration k_factor={k_factor} nprobe={nprobe}: recall {r:.4f} "
                  f"({seconds / len(calibration) * 1e3:.2f} ms/query)", flush=True)
            best = max(best, (r, k_factor, nprobe))
            if r >= target:
                reached.append((seconds, k_factor, nprobe, r))
                break
            if r < previous + PLATEAU:
                break
            previous = r
    if reached:
        _, k_factor, nprobe, _ = min(reached)
        note = ""
    else:
        _, k_factor, nprobe = best
        note = " (target not reached)"
    index.set_search_params(ivf_nprobe=nprobe, ivfpq_k_factor=k_factor)
    return f"nprobe={nprobe} k_factor={k_factor}{note}"


def bench_size(n: int, nlist: int, args: argparse.Namespace) -> list[Row]:
    t = time.perf_counter()
    items, queries, calibration = catalogue(n, args.queries, args.dim, args.clusters, args.seed)
    ids = np.arange(n, dtype=np.int64)
    print(f"\n== {size_label(n)} items x {args.dim}-d, {args.clusters} clusters, {len(queries)} queries "
          f"(+{len(calibration)} calibration), k={args.k}: generated in {time.perf_counter() - t:.1f}s", flush=True)

    faiss.omp_set_num_threads(args.build_threads)
    t = time.perf_counter()
    both = np.concatenate([queries, calibration])
    _, truth_rows = faiss.knn(both, items, args.k, metric=faiss.METRIC_INNER_PRODUCT)
    truth, calibration_truth = truth_rows[:len(queries)], truth_rows[len(queries):]
    print(f"  ground truth (faiss.knn, {args.build_threads} threads): {time.perf_counter() - t:.1f}s", flush=True)

    rows: list[Row] = []
    for kind in args.kinds:
        config = config_for(kind, nlist, args)
        release_unused_memory()  # so the next RSS delta is the next index's
        faiss.omp_set_num_threads(args.build_threads)
        rss0, t = rss_bytes(), time.perf_counter()
        index = AnnIndex.build(ids, items, config)
        build_s = time.perf_counter() - t
        rss_mib = (rss_bytes() - rss0) / MiB
        index_mib = index.serialized_bytes() / MiB
        print(f"  {kind} ({structure(config, n)}): built in {build_s:.1f}s on {args.build_threads} threads, "
              f"{index_mib:.0f} MiB serialized, RSS +{rss_mib:.0f} MiB", flush=True)

        faiss.omp_set_num_threads(1)
        knob = calibrate(index, calibration, calibration_truth, args.k, args.target_recall)
        timed = queries if kind != "exact" else queries[:args.exact_queries]
        if index.backend != "faiss-cpu":
            knob = index.backend
        found, latency = one_at_a_time(index, timed, args.k)
        row = Row(n, kind, build_s, index_mib, rss_mib, float(np.percentile(latency, 50)),
                  float(np.percentile(latency, 99)), recall(found, truth[:len(timed)]), knob, len(timed),
                  gated=kind != "exact")
        print(f"  {kind} ({knob}): P50 {row.p50:.2f} ms, P99 {row.p99:.2f} ms, recall@{args.k} {row.recall:.4f} "
              f"over {row.timed} queries", flush=True)
        rows.append(row)
        del index, found
    return rows


def table(rows: list[Row], args: argparse.Namespace) -> str:
    header = (f"| items | kind | build s | index MiB | RSS Δ MiB | P50 ms | P99 ms | recall@{args.k} | search knob "
              "| timed queries | gate |")
    lines = [header, "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    for r in rows:
        gate = ("PASS" if r.passes(args.gate_recall, args.gate_p99_ms) else "FAIL") if r.gated else "-"
        lines.append(
            f"| {size_label(r.size)} | {r.kind} | {r.build_s:.1f} | {r.index_mib:.0f} | {r.rss_mib:.0f} | "
            f"{r.p50:.2f} | {r.p99:.2f} | {r.recall:.4f} | {r.knob} | {r.timed} | {gate} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1m", help="comma-separated catalogue sizes, e.g. 100k,1m,10m")
    parser.add_argument("--kinds", default="exact,ivf",
                        help="comma-separated: exact, hnsw, ivf, ivfpq[:flat|fp16|sq8|none]")
    parser.add_argument("--items", type=int, help="one catalogue size (same as --sizes N)")
    parser.add_argument("--kind", help="one approximate kind, timed beside exact (same as --kinds exact,KIND)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--exact-queries", type=int, default=100,
                        help="exact search is timed (and its recall taken) on this many of the queries")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--clusters", type=int, default=2000, help="mixture components of the catalogue")
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--nlist", default="auto",
                        help="IVF lists: auto (power of two nearest 4·sqrt(n), at most --max-nlist), "
                             "N, or one per size (N1,N2,...)")
    parser.add_argument("--max-nlist", type=int, default=4096)
    parser.add_argument("--train-sample", type=int, default=262_144, help="k-means / PQ training vectors")
    parser.add_argument("--pq-m", type=int, default=32, help="ivfpq sub-quantizers")
    parser.add_argument("--pq-bits", type=int, default=8, help="ivfpq bits per sub-quantizer")
    parser.add_argument("--hnsw-m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=40)
    parser.add_argument("--build-threads", type=int, default=2, help="FAISS threads while building and for truth")
    parser.add_argument("--target-recall", type=float, default=0.97, help="calibration target")
    parser.add_argument("--gate-recall", type=float, default=0.9)
    parser.add_argument("--gate-p99-ms", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    sizes = [args.items] if args.items else [parse_size(s) for s in args.sizes.split(",")]
    args.kinds = ["exact", args.kind] if args.kind else [k.strip() for k in args.kinds.split(",")]
    for kind in args.kinds:
        base, _, refine = kind.partition(":")
        if base not in ("exact", "hnsw", "ivf", "ivfpq") or (refine and kind != "exact:gpu" and (
                base != "ivfpq" or refine not in ("flat", "fp16", "sq8", "none"))):
            parser.error(f"unknown kind {kind!r}")
        if kind == "exact:gpu" and not cuda_available():
            parser.error("exact:gpu needs torch to see a CUDA device")
    if args.nlist == "auto":
        nlists = [auto_nlist(n, args.max_nlist) for n in sizes]
    else:
        nlists = [int(x) for x in args.nlist.split(",")]
        nlists = nlists * len(sizes) if len(nlists) == 1 else nlists
        if len(nlists) != len(sizes):
            parser.error("--nlist takes one value or one per size")

    gpu = torch_device_name() if "exact:gpu" in args.kinds else "not used"
    print(f"machine: {os.cpu_count()} CPUs, FAISS {faiss.__version__}, {faiss.get_num_gpus()} GPUs visible "
          f"to FAISS, torch's CUDA device: {gpu}, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, load average {os.getloadavg()[0]:.1f}; "
          f"timed searches: 1 query per call, 1 thread; "
          f"calibration target recall@{args.k} {args.target_recall}", flush=True)
    started = time.perf_counter()
    rows = [row for n, nlist in zip(sizes, nlists) for row in bench_size(n, nlist, args)]

    print(f"\n{table(rows, args)}\n")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"index MiB: serialized FAISS index (AnnIndex.serialized_bytes); RSS Δ: resident memory after the "
          f"build minus before. exact is timed on its first {args.exact_queries} queries. peak RSS {peak:.0f} MiB; "
          f"load average at the end {os.getloadavg()[0]:.1f}; total {time.perf_counter() - started:.0f}s")
    ok = all(r.passes(args.gate_recall, args.gate_p99_ms) for r in rows if r.gated)
    print("PASS" if ok else "FAIL", f"(gate for approximate kinds: recall@{args.k} >= {args.gate_recall} "
          f"and P99 <= {args.gate_p99_ms} ms)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
