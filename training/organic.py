"""Trains the whole organic pipeline and publishes it as one artifact version.

    fit_organic(history, labels):
      1. two-tower on `history` (Ray Train);
      2. retrieval state as of `history`; the retrieval pipeline runs for every labelled user
         at their last history time, giving the candidates the ranker will see at serving;
      3. ranker examples from those candidates (positives = the user's `labels`), Ray Train;
      4. serving state rebased on history + labels: engagement logs, neighbours, feature
         tables, and the two-tower refit on all of it (`training.refit_retrieval`; otherwise
         user embeddings are only re-encoded from the newest histories).

The same function serves offline evaluation (history = train split, labels = validation,
scored on test) and production training (history = each user's older 90%, labels = the rest),
so the figures we report are those of the models we serve.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import pandas as pd

from app.artifacts import ArtifactVersion, artifact_store
from config import RayfeedConfig
from app.data import SNAPSHOT_DIR
from app.data.labels import impression_labels
from app.data.snapshot import write_snapshot
from app.data.tables import Dataset
from app.organic import OrganicModels, retrieval_pipeline
from app.pipeline import Candidates
from app.retrieval.two_tower import TwoTowerArtifacts, train_two_tower_in_process
from training.ads import train_ads
from training.fold import STREAM_THROUGH
from training.monitor_baseline import save_monitor_baseline
from training.ranker import SORT_KEYS, fit_ranker, split_user_tail

Log = Callable[[str], None]


def retrieve_for_training(models: OrganicModels, labels: pd.DataFrame, config: RayfeedConfig) -> dict[int, Candidates]:
    """The retrieval pipeline's output for each labelled user, as of their last history event."""
    runner = retrieval_pipeline(models, config)
    times = {}
    for user_id in labels["user_id"].unique():
        timeline = models.engagements.recent_items(int(user_id), now=float("inf"), limit=1)[1]
        times[int(user_id)] = float(timeline[0]) if len(timeline) else models.engagements.last_timestamp
    out: dict[int, Candidates] = {}
    # In time order: the trending counts then move forward incrementally from one user's `now` to
    # the next (app/retrieval/engagement.py) instead of being recounted for each user.
    for user_id, now in sorted(times.items(), key=lambda kv: (kv[1], kv[0])):
        query = models.query(user_id, now=now, limit=config.reranking.output_size)
        out[user_id] = runner.run(query).candidates
    return {user_id: out[user_id] for user_id in times}  # the labels' order, as before


def _train_two_tower(
    dataset: Dataset, interactions: pd.DataFrame, config: RayfeedConfig, use_ray: bool, log: Log
) -> TwoTowerArtifacts:
    if not use_ray:
        return train_two_tower_in_process(dataset, interactions, config.retrieval.two_tower)
    from training.two_tower import train_two_tower

    log("two-tower: training with Ray Train")
    return train_two_tower(dataset, interactions, config.retrieval, config.training.storage_dir,
                           job=config.training.two_tower)


def fit_organic(
    dataset: Dataset,
    history: pd.DataFrame,
    labels: pd.DataFrame,
    config: RayfeedConfig,
    *,
    use_ray: bool = True,
    log: Log = print,
) -> OrganicModels:
    started = time.perf_counter()
    two_tower = _train_two_tower(dataset, history, config, use_ray, log)
    log(f"two-tower: done ({time.perf_counter() - started:.0f}s)")

    retrieval_state = OrganicModels.build(dataset, history, two_tower, None, config)
    candidates = retrieve_for_training(retrieval_state, labels, config)
    log(f"retrieval: candidates for {len(candidates)} users "
        f"(mean {sum(map(len, candidates.values())) / max(len(candidates), 1):.0f}) ({time.perf_counter() - started:.0f}s)")

    serving_history = pd.concat([history, labels], ignore_index=True)
    impressions = window_impressions(dataset, history, config)
    if impressions is not None:
        log(f"ranker: learning from {len(impressions)} logged impressions "
            f"({impressions['click'].mean():.1%} clicked) in the label window")
    ranker = fit_ranker(
        history, labels, dataset.items, dataset.users, config.ranking,
        serving_history=serving_history, candidates=candidates, use_ray=use_ray,
        storage_path=config.training.storage_dir, log=log, impressions=impressions, job=config.training.ranker,
    )
    log(f"ranker: done ({time.perf_counter() - started:.0f}s)")
    if config.training.refit_retrieval:
        two_tower = _train_two_tower(dataset, serving_history, config, use_ray, log)
        log(f"two-tower: refit on history + labels for serving ({time.perf_counter() - started:.0f}s)")
    models = OrganicModels.build(dataset, serving_history, two_tower, ranker, config)
    models.meta.update({"as_of": models.engagements.last_timestamp, "train_seconds": time.perf_counter() - started})
    return models


def window_impressions(dataset: Dataset, history: pd.DataFrame, config: RayfeedConfig) -> pd.DataFrame | None:
    """The logged impressions after each user's history (the label window), labelled with the
    engagements that followed them (app/data/labels.py); None when the log has no impressions."""
    events = dataset.events
    if events is None or not (events["event"] == "impression").any():
        return None
    labelled = impression_labels(events, config.data.tables.watch_seconds_cap, config.data.tables.label_window_s)
    cut = history.groupby("user_id")["timestamp"].max()
    after = labelled["timestamp"].to_numpy() > cut.reindex(labelled["user_id"]).fillna(-1).to_numpy()
    return labelled[after].reset_index(drop=True)


def production_split(interactions: pd.DataFrame, label_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each user's newest `label_fraction` of interactions become the ranker's labels."""
    ordered = interactions.sort_values(SORT_KEYS, kind="stable", ignore_index=True)
    return split_user_tail(ordered, label_fraction)


def train_and_publish(dataset: Dataset, config: RayfeedConfig, *, use_ray: bool = True, log: Log = print) -> ArtifactVersion:
    """Production training on the whole dataset; publishes organic + ads artifacts atomically."""
    store = artifact_store(config.artifacts)
    version, staging = store.new_version()
    try:
        history, labels = production_split(dataset.interactions, config.training.label_fraction)
        models = fit_organic(dataset, history, labels, config, use_ray=use_ray, log=log)
        models.save(staging / "organic")
        if dataset.ids is not None:  # the user's ids: every replica and the next training map them so
            dataset.ids.save(staging / "ids")
        write_snapshot(dataset, staging / SNAPSHOT_DIR)  # replicas need only the artifact, on any node
        log(f"monitor baseline: {save_monitor_baseline(models, config, staging / 'organic').name}")
        bundle, ads_figures = train_ads(dataset, dataset.interactions, config.ads, now=models.engagements.last_timestamp)
        bundle.save(staging / "ads")
        log(f"ads: {len(bundle.world.campaigns)} campaigns, pCTR log-loss {ads_figures['ads.pctr_logloss']:.4f} "
            f"vs constant {ads_figures['ads.constant_logloss']:.4f}")
        manifest = {
            "dataset": dataset.name,
            "as_of": models.meta["as_of"],
            "train_seconds": models.meta["train_seconds"],
            **ads_figures,
        }
        if STREAM_THROUGH in dataset.meta:  # the item stream's entries this version folded in
            manifest[STREAM_THROUGH] = dataset.meta[STREAM_THROUGH]
        return store.publish(version, staging, manifest)
    except BaseException:
        store.discard(staging)
        raise
