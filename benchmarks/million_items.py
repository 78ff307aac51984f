"""Serving figures on a 1M-item synthetic catalogue (issue 4): 5000 → 500 → 100 → 50.

    rayfeed bench million                       build (or reuse) and measure in-process
    rayfeed bench million --serve --closed 1,4 --open 2,4,8 --seconds 20
    rayfeed bench million --rebuild             rebuild the artifact even when one matches
    rayfeed bench million --contract            the same world through the table contract (issue 17)

1. **Build** (cached under `--root`, default runs/million/; never the app's artifacts/): the
   synthetic world (100k users, 1M items, 50k creators, ~3.1M interactions; generated once and
   kept as parquet under <root>/data_cache), then the organic models trained with the production
   code (training/organic.py's steps, training/ranker.py, training/ads.py) at REDUCED settings so
   the build fits 2 cores in minutes: the two-tower sees one epoch over a sample of interactions,
   the ranker learns from the retrieval candidates of a sample of users, one epoch; no refit.
   Published as a version of <root>/artifacts with the timings and settings in its manifest.
   **A latency benchmark, not a quality one**: the models are under-trained on purpose.
2. **In-process** (one thread, torch threads 1): the same FeedService the CLI uses (organic +
   ads + notifications + collator), per request: end to end, per part (query hydration,
   retrieval, ranking, reranking, ads, collate), per stage, and the candidate counts each part
   passes on (sources → merged set → ranked → reranked → page).
With `--contract` the world goes through your-data's path instead of the generator's: it is
exported once (`rayfeed data export synthetic DIR --string-ids`, in its own process, kept under
<root>/contract-<world>) and every step above reads it as `data.dataset: tables`: read with
pyarrow, validated, ids mapped (users u1.., items m1.., creators c1..), trained and served.
3. **Served** (`--serve`): a private Ray + Serve + Redis with serve_config.yaml's app (one
   replica per deployment, as benchmarks/served_app.py deploys it) pointed at that artifact
   root and the 1M world through user_config, and the load steps of `rayfeed bench serve`.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import resource
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script (rayfeed bench million): `benchmarks` importable
    sys.path.insert(0, str(REPO))

DEFAULT_ROOT = REPO / "runs" / "million"
WORLD = {"n_users": 100_000, "n_items": 1_000_000, "n_creators": 50_000}
PAGE = 50
# Applied when measuring, not part of the build (the artifact does not depend on them): the
# default sources (ann 2000, co-engagement 1500, social 750, trending 750) overlap and lose the
# user's seen items, leaving ≈ 3800 merged candidates on this world; fetching 4000 from the ANN
# index lets the merge's backfill top the set up to total_candidates = 5000.
SERVING = {"retrieval": {"sources": {"ann_k": 4000}}}
PARTS = ("query", "retrieval", "ranking", "reranking", "ads", "collate", "other", "total")


@dataclasses.dataclass(frozen=True)
class Reduction:
    """What the build reduces so it finishes on 2 shared cores (every value printed and kept in
    the manifest)."""

    # One two-tower step costs ≈ 3.5 s on one shared core whatever the batch: dense Adam over the
    # 135M parameters of the 1M-row id and history embedding tables dominates. So: few, large steps.
    two_tower_rows: int = 250_000  # interactions the two-tower's single epoch sees (seeded sample)
    two_tower_epochs: int = 1
    two_tower_batch: int = 8192
    ranker_users: int = 1_000  # users whose label window + retrieval candidates train the ranker
    ranker_epochs: int = 1
    baseline_users: int = 30  # live-monitor baseline (the served Monitor deployment reads it)


def million_overrides(root: Path, world: dict[str, int], reduction: Reduction) -> dict:
    """RayfeedConfig overrides for the 1M world: dataset, artifact root, reduced training, and the
    reference sizes (5000 candidates → 500 ranked → 100 reranked; the page of 50 is the request's
    limit). Absolute paths, so Serve replicas resolve them wherever they run."""
    root = Path(root).resolve()
    return {
        "data": {"dataset": "synthetic", "cache_dir": str(root / "data_cache"), "synthetic": dict(world)},
        "artifacts": {"root": str(root / "artifacts"), "version": None},
        "training": {"storage_dir": str(root / "train"), "refit_retrieval": False},
        "retrieval": {
            "two_tower": {"epochs": reduction.two_tower_epochs, "batch_size": reduction.two_tower_batch,
                          "torch_threads": 1},
            # benchmarks/ann.py on 1M × 64-d: nlist 4096, nprobe 96 → recall@1000 0.98, 1.1 ms/query.
            "index": {"kind": "ivf", "ivf_nlist": 4096, "ivf_nprobe": 96},
            "sources": {"total_candidates": 5000},
        },
        "ranking": {"output_size": 500, "training": {"epochs": reduction.ranker_epochs, "threads": 1}},
        "reranking": {"output_size": 100},
        "observability": {"live_monitor": {"baseline_users": reduction.baseline_users}},
    }


def contract_overrides(overrides: dict, root: Path, world: dict[str, int]) -> dict:
    """The same overrides with the world read through the table contract from <root>/contract-<world>."""
    name = "million-contract-" + "-".join(str(world[k]) for k in WORLD)
    tables = {"uri": str(Path(root).resolve() / name), "name": name}
    return {**overrides, "data": {**overrides["data"], "dataset": "tables", "tables": tables}}


def export_contract(overrides: dict, log: Callable[[str], None] = print) -> dict:
    """Export the synthetic world to the contract once, as a user would (`rayfeed data export
    synthetic DIR --string-ids`), in its own process so the build's peak memory is the contract
    path's alone. A `.complete` marker keeps a half-written export from being reused."""
    import subprocess

    directory = Path(overrides["data"]["tables"]["uri"])
    marker = directory / ".complete"
    if marker.exists():
        log(f"contract: reusing {directory} (exported in {json.loads(marker.read_text())['export_s']:.0f}s)")
        return json.loads(marker.read_text())
    data = overrides["data"]
    env = {**os.environ, "RAYFEED_DATA__CACHE_DIR": data["cache_dir"],
           **{f"RAYFEED_DATA__SYNTHETIC__{k.upper()}": str(v) for k, v in data["synthetic"].items()}}
    command = [sys.executable, "-m", "cli.main", "data", "export", "synthetic", str(directory), "--string-ids"]
    log(f"contract: {' '.join(command[2:])}")
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, env=env, check=True)
    figures = {"export_s": round(time.perf_counter() - started, 1),
               "bytes": sum(f.stat().st_size for f in directory.glob("*.parquet"))}
    marker.write_text(json.dumps(figures))
    log(f"contract: exported in {figures['export_s']:.0f}s, {figures['bytes'] / 2**20:.0f} MiB of parquet")
    return figures


def build_key(overrides: dict, reduction: Reduction) -> str:
    payload = json.dumps({"overrides": overrides, "reduction": dataclasses.asdict(reduction)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def split_for_reduced_training(
    interactions: pd.DataFrame, label_fraction: float, ranker_users: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(history, labels) for fit-style training where only `ranker_users` users (a seeded sample)
    are the ranker's labelled users: their newest `label_fraction` of interactions are labels,
    every other interaction (the other users' tails included) is history. history + labels is
    the whole log, as in production training."""
    from training.organic import production_split

    history, labels = production_split(interactions, label_fraction)
    users = np.sort(labels["user_id"].unique())
    rng = np.random.default_rng(seed)
    chosen = rng.choice(users, size=min(ranker_users, len(users)), replace=False)
    labelled = labels["user_id"].isin(chosen).to_numpy()
    history = pd.concat([history, labels[~labelled]], ignore_index=True)
    return history, labels[labelled].reset_index(drop=True)


class Phases:
    """Wall seconds per build phase, printed as they end."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.seconds: dict[str, float] = {}
        self.log = log
        self.started = time.perf_counter()

    def run(self, name: str, fn: Callable[[], object]) -> object:
        start = time.perf_counter()
        out = fn()
        self.seconds[name] = round(time.perf_counter() - start, 1)
        self.log(f"  {name}: {self.seconds[name]:.1f}s  (build so far {time.perf_counter() - self.started:.0f}s, "
                 f"peak RSS {peak_rss_gib():.1f} GiB)")
        return out


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def build(config, reduction: Reduction, key: str, log: Callable[[str], None] = print):
    """Train and publish the reduced 1M-item artifact; the steps of training/organic.py's
    fit_organic + train_and_publish, with the two reductions (two-tower rows, ranker users)."""
    from app.artifacts import ArtifactStore
    from app.data import SNAPSHOT_DIR, load_dataset
    from app.data.snapshot import write_snapshot
    from app.organic import OrganicModels
    from app.retrieval.engagement import EngagementLog, ItemNeighbours
    from app.retrieval.two_tower import train_two_tower_in_process
    from training.ads import train_ads
    from training.monitor_baseline import save_monitor_baseline
    from training.organic import retrieve_for_training
    from training.ranker import fit_ranker

    phases = Phases(log)
    dataset = phases.run("world (generate or read the parquet cache)", lambda: load_dataset(config.data))
    log(f"  world: {dataset.name}: {dataset.n_users} users, {dataset.n_items} items, "
        f"{len(dataset.creators)} creators, {len(dataset.interactions)} interactions, "
        f"{len(dataset.social_edges)} friend edges")
    history, labels = split_for_reduced_training(
        dataset.interactions, config.training.label_fraction, reduction.ranker_users, config.data.seed)
    full = pd.concat([history, labels], ignore_index=True)
    rows = history.sample(n=min(reduction.two_tower_rows, len(history)), random_state=config.data.seed)
    two_tower = phases.run(
        f"two-tower ({len(rows)} sampled interactions, {reduction.two_tower_epochs} epoch)",
        lambda: train_two_tower_in_process(dataset, rows, config.retrieval.two_tower, on_epoch=None))
    state = phases.run("retrieval state as of history (user embeddings, IVF index, engagement log, "
                       "co-engagement neighbours)",
                       lambda: OrganicModels.build(dataset, history, two_tower, None, config))
    candidates = phases.run(f"retrieval for the ranker's {labels['user_id'].nunique()} labelled users",
                            lambda: retrieve_for_training(state, labels, config))
    log(f"  candidates per labelled user: mean {np.mean([len(c) for c in candidates.values()]):.0f}")
    ranker = phases.run(
        f"ranker (examples, {reduction.ranker_epochs} epoch in-process, serving feature tables over all interactions)",
        lambda: fit_ranker(history, labels, dataset.items, dataset.users, config.ranking, serving_history=full,
                           candidates=candidates, use_ray=False, log=lambda m: log(f"    {m}")))

    def serving_state() -> OrganicModels:
        # What OrganicModels.build(dataset, full, two_tower, ranker, config) makes, minus a second
        # IVF build: the item embeddings (and so the index) do not depend on the history.
        sources = config.retrieval.sources
        return dataclasses.replace(
            state, two_tower=two_tower.with_histories(full), engagements=EngagementLog(full),
            neighbours=ItemNeighbours.build(full, sources.coengagement_neighbours, sources.coengagement_shrink),
            ranker=ranker,
            meta={"as_of": float(full["timestamp"].max())})

    models = phases.run("serving state over all interactions", serving_state)
    store = ArtifactStore(config.artifacts.root)
    version, staging = store.new_version()
    try:
        phases.run("save organic artifacts", lambda: models.save(staging / "organic"))
        if dataset.ids is not None:  # as training/organic.py's train_and_publish: replicas load the
            dataset.ids.save(staging / "ids")  # dataset's id maps and snapshot from the artifact alone
        phases.run("save the dataset snapshot", lambda: write_snapshot(dataset, staging / SNAPSHOT_DIR))
        phases.run(f"monitor baseline ({reduction.baseline_users} users)",
                   lambda: save_monitor_baseline(models, config, staging / "organic"))
        bundle, ads_figures = phases.run(
            "ads (ad world, pCTR/pCVR models, forecast)",
            lambda: train_ads(dataset, dataset.interactions, config.ads, now=models.meta["as_of"]))
        phases.run("save ads artifacts", lambda: bundle.save(staging / "ads"))
        total = time.perf_counter() - phases.started
        manifest = {
            "dataset": dataset.name, "as_of": models.meta["as_of"], "train_seconds": total, **ads_figures,
            "million_build": {
                "key": key, "reduction": dataclasses.asdict(reduction), "phases_s": phases.seconds,
                "total_s": round(total, 1), "peak_rss_gib": round(peak_rss_gib(), 2),
                "note": "latency benchmark artifact: models under-trained on purpose (see reduction)",
            },
        }
        published = store.publish(version, staging, manifest)
    except BaseException:
        store.discard(staging)
        raise
    log(f"build: {total:.0f}s in all; published {published.version} under {store.root}")
    return published


def find_build(config, key: str):
    """The latest published version built with the same overrides and reduction, else None."""
    from app.artifacts import ArtifactNotFound, ArtifactStore

    store = ArtifactStore(config.artifacts.root)
    for version in reversed(store.versions()):
        try:
            found = store.get(version)
        except ArtifactNotFound:
            continue
        if found.manifest().get("million_build", {}).get("key") == key:
            return found
    return None


# ----------------------------------------------------------------------------- in-process


def _timed(fn: Callable, sink: dict, key: str) -> Callable:
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            sink[key] = sink.get(key, 0.0) + time.perf_counter() - start
    return wrapper


def instrument_part(part, name: str, sink: dict, counts: dict) -> None:
    """Time one organic part's `run` in place and record how many candidates it passes on."""
    run = _timed(part.run, sink, name)

    def counted(*args, _run=run, **kwargs):
        out = _run(*args, **kwargs)
        counts[name] = len(out.candidates) if out.candidates is not None else len(out.entries)
        return out

    part.run = counted


def instrument(service, sink: dict, counts: dict) -> None:
    """Time each part of FeedService.page in place (instance attributes shadow the methods), so
    the measured path is FeedService.page itself; record what each organic part passes on."""
    for name in ("retrieval", "ranking", "reranking"):
        instrument_part(getattr(service.organic, name), name, sink, counts)
    if service.ads is not None:
        service.ads.serve = _timed(service.ads.serve, sink, "ads")
    service.collator.collate = _timed(service.collator.collate, sink, "collate")


def cascade_variants(service, config) -> dict:
    """The ranking part as configured (cascade on when the artifact has a pre-ranker) and the same
    models with the cascade off, sharing the service's hook: the two rows of one run."""
    from app.organic import RankingPart

    on = service.organic.ranking
    off_config = config.model_copy(update={"ranking": config.ranking.model_copy(
        update={"cascade": config.ranking.cascade.model_copy(update={"enabled": False})})})
    off = RankingPart(on.ranker, off_config, on.hook, on.version)
    return {f"cascade {on.cascade.split(':')[0]}": on, "cascade off": off}


def cascade_agreement(service, parts: dict, requests: list, top: int = 100) -> dict:
    """On the same retrieval output, how much of the DCN-on-everything top `top` the cascade's
    top `top` holds (mean share), and each ranking part's time on it."""
    import copy

    (on_name, on), (off_name, off) = list(parts.items())
    overlaps, seconds = [], {on_name: [], off_name: []}
    for request in requests:
        work = service.organic.retrieval.run(request, service.live)
        tops = {}
        for name, part in ((on_name, on), (off_name, off)):
            start = time.perf_counter()
            ranked = part.run(copy.deepcopy(work)).candidates
            seconds[name].append(1000 * (time.perf_counter() - start))
            tops[name] = set(ranked.item_ids[:top].tolist())
        overlaps.append(len(tops[on_name] & tops[off_name]) / max(len(tops[off_name]), 1))
    return {"requests": len(requests), "top": top, "overlap_mean": float(np.mean(overlaps)),
            "overlap_min": float(np.min(overlaps)), "ranking_ms": {k: percentiles(v) for k, v in seconds.items()}}


def retrieval_counts(page, source_names: set[str]) -> dict:
    """What the retrieval part fetched per source and kept through its filters (from the page's
    stage records)."""
    fetched = {r.name: r.n_out for r in page.records if r.kind == "source" and r.name in source_names}
    merge = next((r for r in page.records if r.name == "source_merge"), None)
    return {"sources": fetched, "fetched": sum(fetched.values()), "after_filters": merge.n_in if merge else 0}


def percentiles(values, ps=(50, 95, 99)) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    out = {f"p{p}": float(np.percentile(a, p)) for p in ps}
    out["mean"] = float(a.mean())
    return out


def measure_in_process(config, requests: int, warmup: int, seed: int, log: Callable[[str], None] = print) -> dict:
    """FeedService.page, one thread: the cascade on and off (same users, one after the other),
    then the cascade's agreement with the DCN on everything, per variant figures."""
    import torch

    from app.bootstrap import build_feed_service, load_artifacts, world_clock
    from app.organic import OrganicRequest
    from app.state.local_redis import LocalRedis

    torch.set_num_threads(1)
    started = time.perf_counter()
    loaded = load_artifacts(config)
    load_s = time.perf_counter() - started
    log(f"in-process: artifacts {loaded.version.version} loaded in {load_s:.0f}s (peak RSS {peak_rss_gib():.1f} GiB)")
    local = None if config.redis_url else LocalRedis.start()
    try:
        clock = world_clock(loaded)
        service = build_feed_service(loaded, config, config.redis_url or local.url, clock)
        sink: dict[str, float] = {}
        counts: dict[str, object] = {}
        variants = cascade_variants(service, config)
        instrument(service, sink, counts)
        for name, part in variants.items():
            if part is not service.organic.ranking:
                instrument_part(part, "ranking", sink, counts)
        users = loaded.dataset.users["user_id"].to_numpy()
        out: dict[str, object] = {"requests": requests, "load_s": round(load_s, 1)}
        for variant, part in variants.items():
            service.organic.ranking = part
            out[variant] = page_figures(service, sink, counts, users, clock, requests, warmup, seed)
        service.organic.ranking = next(iter(variants.values()))
        rng = random.Random(seed + 1)
        sample = [OrganicRequest(int(users[rng.randrange(len(users))]), clock(), PAGE, uuid.uuid4().hex)
                  for _ in range(min(requests, 100))]
        out["agreement"] = cascade_agreement(service, variants, sample)
        out["sample_page"] = sample_page(service, sample[0])
        log(f"in-process: a page in the dataset's ids: {out['sample_page']}")
    finally:
        if local is not None:
            local.stop()
    out["peak_rss_gib"] = round(peak_rss_gib(), 2)
    return out


def sample_page(service, request) -> dict:
    """The user and first items of one page as the response body names them (the dataset's ids)."""
    if service.ids.ids is not None:
        external = service.ids.ids.users.to_external([request.user_id])[0]
        request = dataclasses.replace(request, external_user_id=external)
    body = service.page(request).body
    items = [slot.get("item_id") for slot in body.get("items", []) if slot.get("item_id") is not None]
    return {"user_id": body.get("user_id"), "first_items": items[:5], "n_slots": len(body.get("items", []))}


def page_figures(service, sink: dict, counts: dict, users: np.ndarray, clock, requests: int, warmup: int,
                 seed: int) -> dict:
    from app.organic import OrganicRequest

    source_names = {source.name for source in service.organic.retrieval.runner.sources}
    rng = random.Random(seed)
    parts: dict[str, list[float]] = {p: [] for p in PARTS}
    stages: dict[str, list[float]] = {}
    sizes: dict[str, list[int]] = {}
    for i in range(warmup + requests):
        sink.clear()
        counts.clear()
        start = time.perf_counter()
        request = OrganicRequest(int(users[rng.randrange(len(users))]), clock(), PAGE, uuid.uuid4().hex)
        page = service.page(request)
        total = time.perf_counter() - start
        if i < warmup:
            if i == warmup - 1:
                # A replica builds its item feature table at its first request, in the background,
                # and again once a minute (≈ 0.3 s of CPU at 1M items): warm means built.
                service.organic.ranking.ranker.store.item_table.wait(120)
            continue
        hydration = next((r.seconds for r in page.records if r.name == "query_hydration"), 0.0)
        sink["query"] = hydration
        sink["retrieval"] = sink.get("retrieval", 0.0) - hydration  # the part's own time holds it
        counts.update(retrieval_counts(page, source_names))
        timed = {p: sink.get(p, 0.0) for p in PARTS if p not in ("other", "total")}
        timed["other"] = total - sum(timed.values())  # notifications, collator entries, releases
        timed["total"] = total
        for p, s in timed.items():
            parts[p].append(1000 * s)
        for record in page.records:
            stages.setdefault(record.name, []).append(1000 * record.seconds)
        kinds = [str(getattr(s.kind, "value", s.kind)) for s in page.slots]
        row = {
            "fetched": counts.get("fetched", 0),
            "after_filters": counts.get("after_filters", 0), "retrieval": counts.get("retrieval", 0),
            "ranking": counts.get("ranking", 0), "reranking": counts.get("reranking", 0),
            "page": len(page.slots), "page_organic": kinds.count("organic"),
            "page_ads": kinds.count("ad"), "page_notifications": kinds.count("notification"),
        }
        row.update({f"source_{k}": v for k, v in counts.get("sources", {}).items()})
        for k, v in row.items():
            sizes.setdefault(k, []).append(int(v))
    return {
        "requests": requests,
        "parts_ms": {p: percentiles(v) for p, v in parts.items()},
        "stages_ms": {s: percentiles(v) for s, v in stages.items()},
        "counts": {k: {"mean": float(np.mean(v)), "min": int(np.min(v)), "max": int(np.max(v))} for k, v in sizes.items()},
        "throughput_one_thread_rps": 1000.0 / float(np.mean(parts["total"])),
    }


def print_in_process_run(run: dict, log: Callable[[str], None] = print) -> None:
    for variant, fig in run.items():
        if isinstance(fig, dict) and "parts_ms" in fig:
            log(f"\n[{variant}]")
            print_in_process(fig, log)
    a = run["agreement"]
    r = a["ranking_ms"]
    log(f"\ncascade agreement on {a['requests']} requests' retrieval output: the cascade's top {a['top']} holds "
        f"{a['overlap_mean']:.3f} of the DCN-on-everything top {a['top']} on average (min {a['overlap_min']:.2f}); "
        "ranking part " + ", ".join(f"{k} mean {v['mean']:.1f} / P99 {v['p99']:.1f} ms" for k, v in r.items()))
    names = [k for k in run if isinstance(run[k], dict) and "parts_ms" in run[k]]
    if len(names) == 2:
        a_, b_ = (run[n]["parts_ms"]["total"] for n in names)
        log(f"page P99: {names[0]} {a_['p99']:.1f} ms vs {names[1]} {b_['p99']:.1f} ms "
            f"(ratio {a_['p99'] / b_['p99']:.2f}); mean {a_['mean']:.1f} vs {b_['mean']:.1f} ms")


def print_in_process(fig: dict, log: Callable[[str], None] = print) -> None:
    log(f"in-process, one thread, {fig['requests']} requests (page of {PAGE}):")
    log(f"  {'part':<10} {'mean':>8} {'P50':>8} {'P95':>8} {'P99':>8}   ms")
    for p in PARTS:
        v = fig["parts_ms"][p]
        log(f"  {p:<10} {v['mean']:8.1f} {v['p50']:8.1f} {v['p95']:8.1f} {v['p99']:8.1f}")
    log(f"  ≈ {fig['throughput_one_thread_rps']:.1f} req/s per core")
    log("  stages (mean / P99 ms): " + ", ".join(
        f"{s} {v['mean']:.1f}/{v['p99']:.1f}" for s, v in fig["stages_ms"].items()))
    c = fig["counts"]

    def n(key: str) -> str:
        v = c.get(key, {"mean": 0, "min": 0, "max": 0})
        return f"{v['mean']:.0f} [{v['min']}–{v['max']}]"

    log("  candidates (mean [min–max]): sources " + ", ".join(
        f"{k[7:]} {n(k)}" for k in sorted(c) if k.startswith("source_")))
    log(f"    fetched {n('fetched')} rows (an item from several sources counts once per source) → "
        f"{n('after_filters')} after the seen/unknown/hidden/rating filters → merged {n('retrieval')} → ranked {n('ranking')} → reranked {n('reranking')} "
        f"→ page {n('page')} ({n('page_organic')} organic, {n('page_ads')} ads, "
        f"{n('page_notifications')} notifications)")


# ----------------------------------------------------------------------------- served


def measure_served(overrides: dict, version: str, args, log: Callable[[str], None] = print) -> dict:
    import asyncio

    from app.state.local_redis import LocalRedis
    from benchmarks import served_app
    from benchmarks.serve_load import _print_step, closed_loop, open_loop

    server = LocalRedis.start()
    os.environ["REDIS_URL"] = server.url
    work = Path(args.root).resolve() / "serve-work"
    work.mkdir(parents=True, exist_ok=True)
    figures: dict[str, object] = {"steps": []}
    try:
        url, port = served_app.start_serve("rayfeed-bench-million")
        rayfeed = {k: overrides[k] for k in ("data", "retrieval", "ranking", "reranking")}
        rayfeed["retrieval"] = {"index": overrides["retrieval"]["index"], "sources": overrides["retrieval"]["sources"]}
        rayfeed["ranking"] = {"output_size": overrides["ranking"]["output_size"]}

        def app_config(replicas: dict[str, int] | None = None) -> dict:
            return served_app.app_config(Path(overrides["artifacts"]["root"]), version, port, rayfeed, replicas)

        config = app_config()
        started = time.perf_counter()
        served_app.deploy(config, url, timeout_s=args.deploy_timeout)
        figures["deploy_s"] = round(time.perf_counter() - started, 1)
        log(f"served: app ready in {figures['deploy_s']:.0f}s at {url}")
        users = overrides["data"]["synthetic"]["n_users"]
        prefix = "u" if overrides["data"]["dataset"] == "tables" else ""  # the contract export's user ids
        asyncio.run(closed_loop(url, 1, 120, args.warmup, users, PAGE, args.timeout, user_prefix=prefix))
        for c in [int(x) for x in args.closed.split(",") if x.strip()]:
            step = asyncio.run(closed_loop(url, c, args.seconds, args.max_requests, users, PAGE, args.timeout,
                                           user_prefix=prefix)).summary()
            figures["steps"].append(step)
            _print_step(step)
        for r in [float(x) for x in args.open_rates.split(",") if x.strip()]:
            step = asyncio.run(open_loop(url, r, args.seconds, args.max_requests, users, PAGE, args.timeout,
                                         user_prefix=prefix)).summary()
            figures["steps"].append(step)
            _print_step(step)
        log("served app memory (after the load steps):")
        figures["memory"] = served_app.process_memory()
        figures["memory_total_gib"] = served_app.print_process_memory(figures["memory"], log)
        if args.second_replica:
            doubled = app_config({"Retrieval": 2, "Ranking": 2})
            figures["second_replica"] = second_replica_cost(doubled, url, users, figures["memory"], args, log, prefix)
    finally:
        served_app.stop_all(server, work)
    return figures


def second_replica_cost(doubled: dict, url: str, users: int, before: list[dict], args,
                        log: Callable[[str], None], user_prefix: str = "") -> dict:
    """Redeploy as `doubled` (a second Retrieval and a second Ranking replica), send a few requests
    so both have served, and report what the machine's Ray processes hold now against `before` (PSS)."""
    import asyncio

    from benchmarks import served_app
    from benchmarks.serve_load import closed_loop

    served_app.deploy(doubled, url, timeout_s=args.deploy_timeout)
    asyncio.run(closed_loop(url, 4, 10.0, 200, users, PAGE, args.timeout, user_prefix=user_prefix))
    after = served_app.process_memory()
    log("served app memory with 2 Retrieval and 2 Ranking replicas:")
    total_after = served_app.print_process_memory(after, log)
    total_before = sum(r["pss_mib"] for r in before) / 1024

    def replicas(rows: list[dict], deployment: str) -> list[float]:
        return [r["pss_mib"] for r in rows if r["process"].endswith(f":{deployment}")]

    out = {"total_before_gib": total_before, "total_after_gib": total_after,
           "added_gib": total_after - total_before, "memory": after}
    for deployment in ("Retrieval", "Ranking"):
        out[deployment] = {"before_mib": replicas(before, deployment), "after_mib": replicas(after, deployment)}
    log(f"  a second Retrieval and a second Ranking replica added {out['added_gib']:.2f} GiB PSS in all "
        f"(Retrieval replicas {out['Retrieval']['after_mib']} MiB, Ranking {out['Ranking']['after_mib']} MiB)")
    return out


# ----------------------------------------------------------------------------- main


# The served 1M app measured 5.6 GiB PSS, 7.0 with the second replicas (session 16; 13.3 GiB before
# the artifact was mapped), plus room for replicas loading side by side; scaled by the catalogue
# for smaller worlds.
SERVED_MEMORY_GIB = 10.0


def available_memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("inf")


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rayfeed bench million", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="cache of the world and artifacts")
    parser.add_argument("--rebuild", action="store_true", help="build a new artifact even if one matches")
    parser.add_argument("--build-only", action="store_true", help="build (or find) the artifact and stop")
    parser.add_argument("--requests", type=int, default=200, help="in-process requests measured (0: skip)")
    parser.add_argument("--warmup", type=int, default=10, help="requests sent first and not measured")
    parser.add_argument("--world", default=",".join(str(v) for v in WORLD.values()),
                        help="users,items,creators of the synthetic world (a smaller one: a quick check of the "
                             "benchmark itself, not its figures)")
    parser.add_argument("--contract", action="store_true",
                        help="read the world through the table contract (exported once with string ids) instead "
                             "of the generator: your data's read, validate, id-map, train and serve path at 1M")
    parser.add_argument("--two-tower-rows", type=int, default=Reduction.two_tower_rows)
    parser.add_argument("--ranker-users", type=int, default=Reduction.ranker_users)
    parser.add_argument("--serve", action="store_true",
                        help=f"also measure the served app over HTTP (a private Ray + Serve + Redis; needs ≈ "
                             f"{SERVED_MEMORY_GIB:.0f} GiB available, refused below that)")
    parser.add_argument("--second-replica", action="store_true",
                        help="after the served steps, add a second Retrieval and Ranking replica and print what "
                             "they cost in memory (PSS per process)")
    parser.add_argument("--closed", default="1,4", help="closed-loop concurrencies (served)")
    parser.add_argument("--open", dest="open_rates", default="", help="open-loop rates in req/s (served)")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each served step")
    parser.add_argument("--max-requests", type=int, default=1000, help="requests per served step at most")
    parser.add_argument("--timeout", type=float, default=10.0, help="client timeout per request (s)")
    parser.add_argument("--deploy-timeout", type=float, default=1200.0, help="seconds to wait for the app")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here (default <root>/figures.json)")
    args = parser.parse_args(argv)

    from config import load_config

    reduction = Reduction(two_tower_rows=args.two_tower_rows, ranker_users=args.ranker_users)
    world = dict(zip(WORLD, (int(v) for v in args.world.split(","))))
    overrides = million_overrides(args.root, world, reduction)
    figures: dict[str, object] = {}
    if args.contract:
        overrides = contract_overrides(overrides, args.root, world)
        figures["contract"] = export_contract(overrides)
    config = load_config(overrides=overrides)
    key = build_key(overrides, reduction)
    figures.update({"machine": f"{os.cpu_count()} cores (shared), no GPU", "serving_overrides": SERVING,
                    "load_average_start": load_average(), "reduction": dataclasses.asdict(reduction)})
    print(f"1M-item serving benchmark: world {world}, artifacts under {config.artifacts.root}")
    print("LATENCY benchmark, not quality: models trained at reduced settings "
          f"({dataclasses.asdict(reduction)})")
    found = None if args.rebuild else find_build(config, key)
    if found is None:
        print("build:")
        found = build(config, reduction, key)
    else:
        print(f"build: reusing {found.version} (built in {found.manifest()['million_build']['total_s']:.0f}s)")
    figures["artifact"] = found.version
    figures["build"] = found.manifest()["million_build"]
    if args.build_only:
        return 0
    from config import deep_merge

    serving = deep_merge(overrides, SERVING)
    pinned = load_config(overrides={**serving, "artifacts": {"root": str(config.artifacts.root), "version": found.version}})
    if args.requests:
        figures["in_process"] = measure_in_process(pinned, args.requests, args.warmup, seed=1)
        print_in_process_run(figures["in_process"])
    figures["load_average_after_in_process"] = load_average()
    needed = max(2.0, SERVED_MEMORY_GIB * world["n_items"] / WORLD["n_items"])
    if args.serve and available_memory_gib() < needed:  # MemAvailable: this process's own share is already out
        # On a shared machine Ray's memory monitor would kill workers (other people's too) before
        # the app were ready.
        print(f"served: skipped: {available_memory_gib():.1f} GiB available, the served app needs ≈ "
              f"{needed:.0f} GiB at this size (run with --requests 0: this process then holds no models)")
        figures["served"] = {"skipped": "not enough memory"}
    elif args.serve:
        figures["served"] = measure_served(serving, found.version, args)
    figures["load_average_end"] = load_average()
    print(f"load average: start {figures['load_average_start']}, end {figures['load_average_end']}")
    out = args.json or Path(args.root) / "figures.json"
    out.write_text(json.dumps(figures, indent=2, default=str))
    print(f"figures: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
