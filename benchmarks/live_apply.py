"""What a batch of live events costs a Retrieval replica at 1M items, before and after incremental
trending (issue #19 item 5): the apply (`LiveEngagement.observe`, what deployments/retrieval.py's
follower runs per XREAD batch) and the trending source of the next request.

    python benchmarks/live_apply.py                      # or: rayfeed bench live-apply
    python benchmarks/live_apply.py --batches 1000 --legacy-batches 30
    python benchmarks/live_apply.py --users 10000 --items 50000     # a smaller cached world

1. **World**: the cached synthetic world of that size under `--data-cache` (default data_cache/,
   any `synthetic-<users>u-<items>i-*` directory; the 1M world is ≈ 3.1M interactions), else it
   is generated with benchmarks/million_items.py's WORLD (≈ 1 min) and cached there.
2. **Replica state**: an `EngagementLog` over every interaction, and a `LiveEngagement` attached
   to it with a two-tower of the world's size (features, 1M-row id and history tables, user
   histories). The tower is untrained: re-encoding costs the same as with trained weights.
3. **Stream**: `--batches` batches of `--batch-size` click events, seeded: users uniform, items
   drawn from the log (popularity as in the world), the clock advancing ≈ 1 s per batch from
   the log's newest event, `--late-fraction` of the events stamped up to 60 s late. Per batch:
   `LiveEngagement.observe(batch)` (timed: the apply; the log's `add_arrays` inside it too),
   then `TrendingSource.fetch` as of the batch's newest event (timed: the next request's
   trending), with the default sources config (half-life 7 days, horizon 10 half-lives, k 750).
4. **Before**: the same batches (the first `--legacy-batches` of them, since each costs ≈ 0.5 s)
   through a second `LiveEngagement` attached to `LegacyEngagementLog`, the log as it was before
   this change (every batch becomes a frame, every `add` concatenates the 3.1M-event timeline
   and groups with pandas; every trending call after an add recounts the whole window). Its
   start state is the same log's.

Prints the P50/P99/max of each (ms; wall time, and the apply's CPU time too, which a busy
machine's scheduling does not inflate), the ratio before/after, the garbage collections that ran
during each run (a full one walks every Python object of the process, the loaded world's
included: ≈ 0.2 s here, and it lands in whichever batch allocates at that moment; `--gc-freeze`
shows the figures with the loaded state frozen), whether the incremental trending equals the
recount (`EngagementLog.trending_recount`) after the run, and the acceptance check (apply P99 ≤
10 ms). One thread (torch and BLAS), like a replica's event loop.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script (rayfeed bench live-apply)
    sys.path.insert(0, str(REPO))

ACCEPT_APPLY_P99_MS = 10.0


class LegacyEngagementLog:
    """The engagement log's write and trending paths before incremental trending (commit
    c651272's app/retrieval/engagement.py, verbatim in what they do): `add` concatenates the
    global timeline (O(events) per batch) and groups the batch with pandas; `trending` recounts
    the window whenever an `add` happened since the cached call. Only what the benchmark calls."""

    def __init__(self) -> None:
        self._ts = np.zeros(0, np.float64)
        self._items = np.zeros(0, np.int64)
        self._users: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._trending_cache = None
        self.version = 0

    @classmethod
    def like(cls, log) -> LegacyEngagementLog:
        """The same events as an `EngagementLog`, without rebuilding the per-user timelines."""
        legacy = cls()
        ts, items = log.timeline()
        legacy._ts, legacy._items = ts.copy(), items.copy()
        legacy._users = dict(log._users.items())  # arrays are never written in place: sharing is safe
        return legacy

    def __len__(self) -> int:
        return len(self._ts)

    def add_arrays(self, user_ids, item_ids, timestamps) -> int:
        """What app/freshness/live.py's `_add_to_log` did before: build a frame, then `add`."""
        return self.add(pd.DataFrame({"user_id": user_ids, "item_id": item_ids, "timestamp": timestamps}))

    def add(self, events: pd.DataFrame) -> int:
        frame = pd.DataFrame({
            "user_id": events["user_id"].to_numpy(np.int64),
            "item_id": events["item_id"].to_numpy(np.int64),
            "timestamp": events["timestamp"].to_numpy(np.float64),
        })
        if frame.empty:
            return 0
        frame = frame.sort_values(["timestamp", "item_id"], kind="stable")
        ts, items = frame["timestamp"].to_numpy(), frame["item_id"].to_numpy()
        in_order = len(self._ts) == 0 or ts[0] >= self._ts[-1]
        self._ts = np.concatenate([self._ts, ts])
        self._items = np.concatenate([self._items, items])
        if not in_order:
            order = np.argsort(self._ts, kind="stable")
            self._ts, self._items = self._ts[order], self._items[order]
        for user, group in frame.groupby("user_id", sort=False):
            new_ts, new_items = group["timestamp"].to_numpy(), group["item_id"].to_numpy()
            old = self._users.get(int(user))
            if old is not None:
                late = len(old[0]) and new_ts[0] < old[0][-1]
                new_ts, new_items = np.concatenate([old[0], new_ts]), np.concatenate([old[1], new_items])
                if late:
                    order = np.argsort(new_ts, kind="stable")
                    new_ts, new_items = new_ts[order], new_items[order]
            self._users[int(user)] = (new_ts, new_items)
        self.version += 1
        return len(frame)

    def trending(self, now: float, half_life_s: float, horizon_s: float, k: int) -> tuple[np.ndarray, np.ndarray]:
        from app.retrieval.engagement import _top_k, decay

        end = int(np.searchsorted(self._ts, now, side="right"))
        start = int(np.searchsorted(self._ts, now - horizon_s, side="left"))
        key = (float(half_life_s), float(horizon_s), int(k), self.version, start, end)
        if self._trending_cache is not None and self._trending_cache[0] == key:
            cached_now, items, counts = self._trending_cache[1]
            return items, (counts * np.exp2((cached_now - now) / half_life_s)).astype(np.float32)
        items, inverse = np.unique(self._items[start:end], return_inverse=True)
        counts = np.bincount(inverse, weights=decay(now - self._ts[start:end], half_life_s), minlength=len(items))
        top = _top_k(counts, k)
        items, counts = items[top], counts[top]
        self._trending_cache = (key, (float(now), items, counts))
        return items, counts.astype(np.float32)


def find_world(data_cache: Path, n_users: int, n_items: int) -> Path | None:
    found = sorted(p for p in data_cache.glob(f"synthetic-{n_users}u-{n_items}i-*") if (p / "meta.json").exists())
    return found[0] if found else None


def load_world(data_cache: Path, n_users: int, n_items: int, log=print):
    """The cached synthetic world of that size (whatever its creator count and seed), else a
    generated one (million_items.WORLD's creators at 1M items), cached for the next run."""
    from app.data import load_dataset
    from app.data.config import DataConfig
    from app.data.synthetic import _read_world, spec_from_config

    directory = find_world(data_cache, n_users, n_items)
    if directory is not None:
        log(f"  world: reading {directory}")
        config = DataConfig(dataset="synthetic", synthetic={"n_users": n_users, "n_items": n_items})
        return _read_world(directory, spec_from_config(config))
    from benchmarks.million_items import WORLD

    creators = WORLD["n_creators"] if n_items == WORLD["n_items"] else max(n_items // 20, 1)
    config = DataConfig(dataset="synthetic", cache_dir=data_cache,
                        synthetic={"n_users": n_users, "n_items": n_items, "n_creators": creators})
    log(f"  world: none cached under {data_cache}: generating {n_users} users × {n_items} items (cached after)")
    return load_dataset(config)


def untrained_two_tower(dataset):
    """A two-tower of the world's size with initial weights: the same tables and user-tower work
    per re-encode as a trained one. Stored embeddings are zeros (observe never reads them)."""
    from app.retrieval.config import TwoTowerConfig
    from app.retrieval.features import TowerFeatures
    from app.retrieval.two_tower import ModelTables, TwoTowerArtifacts, build_model, serving_histories

    config = TwoTowerConfig()
    features = TowerFeatures.from_dataset(dataset, config)
    model = build_model(features, config, ModelTables.build(features, dataset))
    return TwoTowerArtifacts(
        features=features, config=config,
        weights={k: v.detach().numpy().copy() for k, v in model.state_dict().items()},
        user_ids=features.user_ids.copy(),
        user_embeddings=np.zeros((len(features.user_ids), config.embedding_dim), np.float32),
        item_ids=features.item_ids.copy(),
        item_embeddings=np.zeros((len(features.item_ids), config.embedding_dim), np.float32),
        user_histories=serving_histories(features, dataset.interactions, config.history_length),
    )


def make_batches(interactions: pd.DataFrame, n_batches: int, size: int, late_fraction: float, seed: int):
    """Seeded click batches, (events, newest ts) each, and how many events were stamped late."""
    from app.state.events import StreamEvent

    rng = np.random.default_rng(seed)
    users = np.unique(interactions["user_id"].to_numpy(np.int64))
    logged_items = interactions["item_id"].to_numpy(np.int64)
    clock = float(interactions["timestamp"].max()) + 1.0
    batches, n_late = [], 0
    for b in range(n_batches):
        clock += float(rng.exponential(1.0))
        ts = clock - rng.uniform(0.0, 1.0, size)
        late = rng.random(size) < late_fraction
        ts[late] -= rng.uniform(1.0, 60.0, int(late.sum()))
        n_late += int(late.sum())
        who = rng.choice(users, size)
        what = logged_items[rng.integers(0, len(logged_items), size)]
        events = [StreamEvent(event_id=f"b{b}-{j}", user_id=int(u), type="click", ts=float(t), item_id=int(i))
                  for j, (u, i, t) in enumerate(zip(who, what, ts))]
        batches.append((events, float(ts.max())))
    return batches, n_late


def percentiles(values: list[float]) -> dict[str, float]:
    a = np.asarray(values) * 1000.0
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "max": float(a.max())}


def run_replica(log, two_tower, batches, sources_config, label: str, report=print) -> dict[str, list[float]]:
    """Per batch: the replica's apply (LiveEngagement.observe), then one request's trending source."""
    from app.freshness.live import LiveEngagement
    from app.pipeline.candidates import FeedQuery
    from app.retrieval.config import DynamicEmbeddingConfig
    from app.retrieval.sources import TrendingSource

    live = LiveEngagement(two_tower, DynamicEmbeddingConfig())
    live.attach(SimpleNamespace(two_tower=two_tower, engagements=log))
    source = TrendingSource(log, sources_config)
    add_times: list[float] = []
    add = log.add_arrays

    def timed_add(*arrays):
        start = time.perf_counter()
        try:
            return add(*arrays)
        finally:
            add_times.append(time.perf_counter() - start)

    log.add_arrays = timed_add  # LiveEngagement reaches the log through models.engagements
    pauses: list[tuple[int, float]] = []  # (generation, seconds) of each garbage collection
    gc_start = [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            gc_start[0] = time.perf_counter()
        else:
            pauses.append((info["generation"], time.perf_counter() - gc_start[0]))

    start = time.perf_counter()
    source.fetch(FeedQuery(user_id=0, now=batches[0][1] - 2.0))
    first = time.perf_counter() - start
    report(f"  {label}: first trending call (before any batch) {first * 1000:.1f} ms")
    apply_times, apply_cpu, trending_times = [], [], []
    started = time.perf_counter()
    gc.callbacks.append(on_gc)
    for n, (events, now) in enumerate(batches):
        start, cpu = time.perf_counter(), time.thread_time()
        live.observe(events)
        apply_times.append(time.perf_counter() - start)
        apply_cpu.append(time.thread_time() - cpu)
        start = time.perf_counter()
        source.fetch(FeedQuery(user_id=events[0].user_id, now=now))
        trending_times.append(time.perf_counter() - start)
        if (n + 1) % max(len(batches) // 5, 1) == 0:
            report(f"  {label}: {n + 1}/{len(batches)} batches ({time.perf_counter() - started:.1f} s)")
    gc.callbacks.remove(on_gc)
    del log.add_arrays
    return {"apply": apply_times, "apply_cpu": apply_cpu, "add": add_times, "trending": trending_times,
            "gc": pauses}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--data-cache", type=Path, default=REPO / "data_cache")
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--legacy-batches", type=int, default=40,
                        help="batches through the old log (≈ 0.5 s each at 1M items); 0: skip")
    parser.add_argument("--late-fraction", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gc-freeze", action="store_true",
                        help="gc.freeze() after loading, so collections skip the loaded state's objects")
    args = parser.parse_args(argv)

    import torch

    from app.retrieval.config import SourcesConfig
    from app.retrieval.engagement import EngagementLog

    torch.set_num_threads(1)
    t = time.perf_counter()
    print(f"live apply at {args.users} users × {args.items} items: {args.batches} batches of {args.batch_size} "
          f"events ({args.late_fraction:.0%} late by 1–60 s), one thread")
    dataset = load_world(args.data_cache, args.users, args.items)
    interactions = dataset.interactions[["user_id", "item_id", "timestamp"]]
    print(f"  world: {len(interactions)} interactions, {dataset.n_users} users, {dataset.n_items} items "
          f"({time.perf_counter() - t:.1f} s)")
    t = time.perf_counter()
    log = EngagementLog(interactions)
    print(f"  engagement log: {len(log)} events ({time.perf_counter() - t:.1f} s)")
    legacy = LegacyEngagementLog.like(log) if args.legacy_batches > 0 else None
    t = time.perf_counter()
    two_tower = untrained_two_tower(dataset)
    print(f"  two-tower (untrained, {two_tower.features.n_item_rows} item rows): {time.perf_counter() - t:.1f} s")
    batches, n_late = make_batches(interactions, args.batches, args.batch_size, args.late_fraction, args.seed)
    sources = SourcesConfig()
    horizon = sources.trending_half_life_s * sources.trending_horizon_half_lives
    if args.gc_freeze:
        gc.collect()
        gc.freeze()
        print(f"  gc.freeze(): {gc.get_freeze_count()} objects left out of later collections")
    print(f"  trending: half-life {sources.trending_half_life_s / 86400:g} d, horizon {horizon / 86400:g} d, "
          f"k {sources.trending_k}")

    after = run_replica(log, two_tower, batches, sources, "incremental")
    before = None
    if legacy is not None:
        before = run_replica(legacy, two_tower, batches[: args.legacy_batches], sources, "before (recount)")

    now = batches[-1][1]
    items, counts = log.trending(now, sources.trending_half_life_s, horizon, sources.trending_k)
    ref_items, ref_counts = log.trending_recount(now, sources.trending_half_life_s, horizon, sources.trending_k)
    same = np.array_equal(items, ref_items) and np.allclose(counts, ref_counts, rtol=1e-5)

    print()
    print(f"{'ms per batch':<34} {'after P50':>9} {'P99':>8} {'max':>8}" +
          (f" │ {'before P50':>10} {'P99':>8} {'max':>8} │ {'P50 ×':>7} {'P99 ×':>7}" if before else ""))
    rows = [("apply (LiveEngagement.observe)", "apply"), ("  its CPU time (this thread)", "apply_cpu"),
            ("  of which the engagement log", "add"),
            ("next request's trending source", "trending")]
    for label, key in rows:
        a = percentiles(after[key])
        line = f"{label:<34} {a['p50']:>9.3f} {a['p99']:>8.3f} {a['max']:>8.3f}"
        if before:
            b = percentiles(before[key])
            line += (f" │ {b['p50']:>10.3f} {b['p99']:>8.3f} {b['max']:>8.3f} │ "
                     f"{b['p50'] / a['p50']:>7.1f} {b['p99'] / a['p99']:>7.1f}")
        print(line)
    both = percentiles([x + y for x, y in zip(after["apply"], after["trending"])])
    print(f"{'apply + trending':<34} {both['p50']:>9.3f} {both['p99']:>8.3f} {both['max']:>8.3f}")
    print()
    print(f"after: {len(after['apply'])} batches ({n_late} events stamped 1–60 s late); before: "
          f"{len(before['apply']) if before else 0} batches (the first ones of the same stream)")
    for label, run in (("after", after), ("before", before)):
        if run:
            full = [t * 1000 for g, t in run["gc"] if g == 2]
            print(f"garbage collections during the {label} run: {len(run['gc'])}, of which {len(full)} full "
                  f"(generation 2){f', longest {max(full):.0f} ms (in the max above)' if full else ''}")
    print(f"incremental trending after the run equals the recount: {'yes' if same else 'NO'}")
    p99 = percentiles(after["apply"])["p99"]
    verdict = "PASS" if p99 <= ACCEPT_APPLY_P99_MS else "FAIL"
    print(f"acceptance: apply P99 {p99:.2f} ms ≤ {ACCEPT_APPLY_P99_MS:g} ms: {verdict}")
    return 0 if same and verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
