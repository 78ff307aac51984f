"""Fine-tune the serving artifact on recent events, gate it offline, publish it as a new version.

    parent artifact ─┐
    events (stream) ─┴─> history = dataset ∪ every fresh interaction so far
                         window  = its last `window_days`; newest `holdout_fraction` held out
                         two-tower: Ray Train, warm start from the base (or parent), L2-SP anchor to it
                         gate:      Recall@k on the held-out interactions, candidate vs parent
                         ranker:    Ray Train, warm start, on the window's retrieval candidates
                         publish:   new version (parent's ads and monitor baseline carried over)

Every fine-tune starts again from the *base* (the fully trained ancestor) by default, on the
whole recent window (old interactions in it act as a replay sample), with the L2-SP anchor to the
base: the prequential replay (docs/freshness.md) found exactly that stable, while chaining
updates on the latest events alone was erratic. `training.fine_tune.start_from: parent` chains.

The gate runs before the ranker, so a candidate that would be refused costs only the two-tower
job. Both models are scored on the same held-out interactions with the same (pre-holdout)
histories, so the comparison is like for like. Publishing moves LATEST but swaps nothing: the
caller (training/retrain_runner.py) asks the serving app to reload the version it names.

Example:
    outcome = fine_tune(config, engagement_interactions(events, config.training.fine_tune.implied_ratings),
                        reason="calibration[click] critical", new_events=event_log(events))
    if outcome.version: ...  # POST /admin/reload {"version": outcome.version}
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from app.artifacts import ArtifactStore, ArtifactVersion, artifact_store
from config import RayfeedConfig
from app.data import load_dataset
from app.data.tables import Dataset
from app.evaluation.metrics import recall_at_k
from app.organic import OrganicModels
from app.ranking.artifacts import RankerArtifacts
from app.retrieval.two_tower import TwoTowerArtifacts, train_two_tower_in_process
from app.state.events import StreamEvent

Log = Callable[[str], None]
DAY = 86_400.0
FRESH_FILE = "fresh_interactions.parquet"  # <version>/organic/: every stream interaction trained on so far
FRESH_EVENTS_FILE = "fresh_events.parquet"  # <version>/organic/: every stream item event (impressions too)
FRESH_COLUMNS = ("user_id", "item_id", "rating", "timestamp", "event_id")
EVENT_COLUMNS = ("user_id", "item_id", "event", "timestamp", "value", "position", "request_id", "event_id")


def event_log(events: Sequence[StreamEvent]) -> pd.DataFrame:
    """Stream events about items, impressions included, as the contract's event rows: the ranker's
    labels (app/data/labels.py) come from them, not from implied ratings."""
    rows = [(e.user_id, e.item_id, e.type, e.ts, e.watch_seconds, e.position if e.position is not None else -1,
             e.request_id, e.event_id) for e in events if e.item_id is not None]
    frame = pd.DataFrame(rows, columns=list(EVENT_COLUMNS))
    return frame.astype({"user_id": np.int64, "item_id": np.int64, "timestamp": np.float64, "value": np.float64,
                         "position": np.int64})


def engagement_interactions(events: Sequence[StreamEvent], implied_ratings: Mapping[str, float]) -> pd.DataFrame:
    """Stream events as the models' history (two-tower, co-engagement, features): engagements get
    their implied rating; impressions, hides and ad events are not in it (the ranker's labels come
    from `event_log`, impressions included)."""
    rows = [(e.user_id, e.item_id, implied_ratings[e.type], e.ts, e.event_id)
            for e in events if e.item_id is not None and e.type in implied_ratings]
    frame = pd.DataFrame(rows, columns=list(FRESH_COLUMNS))
    return frame.astype({"user_id": np.int64, "item_id": np.int64, "rating": np.float64, "timestamp": np.float64})


@dataclass(frozen=True)
class GateReport:
    passed: bool
    metric: str
    candidate: float
    current: float
    tolerance: float
    n_users: int
    reason: str

    @property
    def summary(self) -> str:
        verdict = "passed" if self.passed else "refused"
        return (f"gate {verdict}: {self.metric} candidate {self.candidate:.4f} vs serving {self.current:.4f} "
                f"(tolerance {self.tolerance}, {self.n_users} users){'' if self.passed else ': ' + self.reason}")


@dataclass(frozen=True)
class FineTuneOutcome:
    parent: str
    version: str | None  # None: refused by the gate, nothing published
    gate: GateReport
    new_interactions: int
    seconds: float


def holdout_recall(two_tower: TwoTowerArtifacts, history: pd.DataFrame, holdout: pd.DataFrame, k: int) -> tuple[float, int]:
    """Mean Recall@k of the held-out items, user embeddings encoded from `history` (the same for
    every model compared), already-seen items excluded."""
    tt = two_tower.with_histories(history)
    known = holdout[holdout["user_id"].isin(tt.user_ids)]
    truth = known.groupby("user_id")["item_id"].agg(lambda s: set(s.tolist()))
    if truth.empty:
        return float("nan"), 0
    seen = history.groupby("user_id")["item_id"].agg(lambda s: set(s.tolist()))
    users = truth.index.to_numpy(np.int64)
    rows = np.searchsorted(tt.user_ids, users)
    scores = tt.user_embeddings[rows] @ tt.item_embeddings.T
    hits = np.zeros((len(users), k), dtype=bool)
    n_relevant = np.zeros(len(users), dtype=np.int64)
    for r, user in enumerate(users):
        already = seen.get(user, set())
        if already:
            scores[r, np.isin(tt.item_ids, list(already))] = -np.inf
        top = tt.item_ids[np.argsort(-scores[r])[:k]]
        relevant = truth[user] - already
        hits[r] = np.isin(top, list(relevant))
        n_relevant[r] = len(relevant)
    keep = n_relevant > 0
    return float(recall_at_k(hits[keep], n_relevant[keep], k).mean()) if keep.any() else float("nan"), int(keep.sum())


def _accumulated(parent: ArtifactVersion, name: str, new: pd.DataFrame) -> pd.DataFrame:
    """The parent's stored frame plus the new rows, each stream event once (by event id)."""
    previous = parent.path / "organic" / name
    frame = pd.concat([pd.read_parquet(previous) if previous.exists() else new.iloc[:0], new], ignore_index=True)
    return frame.drop_duplicates("event_id", keep="first").reset_index(drop=True)


def _history(dataset: Dataset, parent: ArtifactVersion, new: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training history, every fresh interaction so far): the dataset plus the parent's fresh
    interactions plus the new ones, each stream event counted once (by event id)."""
    fresh = _accumulated(parent, FRESH_FILE, new)
    base = dataset.interactions[["user_id", "item_id", "rating", "timestamp"]]
    history = pd.concat([base, fresh[["user_id", "item_id", "rating", "timestamp"]]], ignore_index=True)
    return history.sort_values(["timestamp", "user_id", "item_id"], kind="stable", ignore_index=True), fresh


def _train_two_tower(dataset: Dataset, window: pd.DataFrame, current: TwoTowerArtifacts, config: RayfeedConfig,
                     use_ray: bool) -> TwoTowerArtifacts:
    ft = config.training.fine_tune
    tt_config = current.config.model_copy(update={"epochs": ft.two_tower_epochs, "lr": ft.two_tower_lr})
    warm = dict(init_state=current.state_dict, anchor_l2=ft.anchor_l2, features=current.features)
    if not use_ray:
        return train_two_tower_in_process(dataset, window, tt_config, on_epoch=None, **warm)
    from training.two_tower import train_two_tower

    retrieval = config.retrieval.model_copy(update={"two_tower": tt_config})
    return train_two_tower(dataset, window, retrieval, config.training.storage_dir, job=config.training.two_tower, **warm)


def start_version(store: ArtifactStore, parent: ArtifactVersion, start_from: str) -> ArtifactVersion:
    """The version whose weights a fine-tune starts from and is anchored to: the parent, or the
    base (the fully trained ancestor: follow the manifests' `parent` links)."""
    if start_from == "parent":
        return parent
    version, seen = parent, set()
    while (above := version.manifest().get("parent")) and above not in seen:
        seen.add(version.version)
        try:
            version = store.get(above)
        except FileNotFoundError:  # the ancestor was cleaned away: the oldest one left
            break
    return version


def _fine_tune_ranker(dataset: Dataset, history: pd.DataFrame, window_start: float, current: OrganicModels,
                      start: RankerArtifacts, two_tower: TwoTowerArtifacts, config: RayfeedConfig, use_ray: bool,
                      log: Log, events: pd.DataFrame | None = None):
    """The ranker continued on the window, over the candidates the new retrieval produces (the
    same src_* features as serving), from the parent's weights. Its labels come from the window's
    stream events (app/data/labels.py): the impressions, engaged with or not, when the stream has
    them; else each engagement's own events (a like is a like, not an implied rating)."""
    from app.data.labels import event_head_labels, impression_labels
    from training.organic import retrieve_for_training
    from training.ranker import fit_ranker

    ft = config.training.fine_tune
    before, labels = history[history["timestamp"] < window_start], history[history["timestamp"] >= window_start]
    impressions = None
    window_events = events[events["timestamp"] >= window_start] if events is not None else None
    if window_events is not None and len(window_events):
        tables = config.data.tables
        if (window_events["event"] == "impression").any():
            impressions = impression_labels(window_events, tables.watch_seconds_cap, tables.label_window_s)
            log(f"ranker fine-tune: learning from {len(impressions)} impressions "
                f"({impressions['click'].mean():.1%} clicked) in the window")
        heads = event_head_labels(window_events, tables.watch_seconds_cap)
        labels = labels.merge(heads, on=["user_id", "item_id"], how="left")
    if ft.ranker_epochs == 0 or labels.empty:
        from app.ranking.artifacts import RankerArtifacts
        from app.ranking.features import FeatureStore

        ranker = current.ranker
        return RankerArtifacts(ranker.config, FeatureStore.build(history, dataset.items, dataset.users, ranker.config.features),
                               ranker.model)
    saved = start.config
    training = saved.training.model_copy(update={"epochs": ft.ranker_epochs, "lr": ft.ranker_lr})
    ranking = saved.model_copy(update={"training": training, "weights": config.ranking.weights})
    retrieval_state = OrganicModels.build(dataset, before, two_tower, None, config)
    candidates = retrieve_for_training(retrieval_state, impressions if impressions is not None else labels, config)
    return fit_ranker(
        before, labels, dataset.items, dataset.users, ranking, serving_history=history, candidates=candidates,
        use_ray=use_ray, storage_path=config.training.storage_dir, job=config.training.ranker, log=log,
        init_state={k: v.detach().clone() for k, v in start.model.state_dict().items()}, impressions=impressions,
    )


def fine_tune(config: RayfeedConfig, new_interactions: pd.DataFrame, *, reason: str, use_ray: bool = True,
              log: Log = print, dataset: Dataset | None = None, new_events: pd.DataFrame | None = None
              ) -> FineTuneOutcome:
    """Fine-tune the configured artifact version (default LATEST) on `new_interactions`
    (`engagement_interactions` of stream events) and, for the ranker's labels, `new_events`
    (`event_log` of the same events, impressions included); `dataset` defaults to `config.data`'s."""
    started = time.perf_counter()
    ft = config.training.fine_tune
    store = artifact_store(config.artifacts)
    parent = store.get(config.artifacts.version) if config.artifacts.version else store.latest()
    dataset = dataset if dataset is not None else load_dataset(config.data)
    current = OrganicModels.load(parent.path / "organic", dataset, config)
    history, fresh = _history(dataset, parent, new_interactions)
    events = _accumulated(parent, FRESH_EVENTS_FILE, new_events) if new_events is not None else None
    as_of = float(history["timestamp"].max())
    window_start = as_of - ft.window_days * DAY
    window = history[history["timestamp"] >= window_start]
    cutoff = float(window["timestamp"].quantile(1.0 - ft.holdout_fraction))
    train_window, holdout = window[window["timestamp"] <= cutoff], window[window["timestamp"] > cutoff]
    pre_holdout = history[history["timestamp"] <= cutoff]
    log(f"fine-tune of {parent.version} ({reason}): {len(new_interactions)} new interactions, window "
        f"{len(train_window)} + {len(holdout)} held out")

    start = start_version(store, parent, ft.start_from)
    start_organic = start.path / "organic"
    start_two_tower = current.two_tower if start == parent else TwoTowerArtifacts.load(start_organic / "two_tower")
    start_ranker = current.ranker if start == parent else RankerArtifacts.load(start_organic / "ranker", config.ranking)
    candidate = _train_two_tower(dataset, train_window, start_two_tower, config, use_ray)
    cand_recall, n_users = holdout_recall(candidate, pre_holdout, holdout, ft.gate_k)
    cur_recall, _ = holdout_recall(current.two_tower, pre_holdout, holdout, ft.gate_k)
    finite = all(np.isfinite(v).all() for v in (candidate.user_embeddings, candidate.item_embeddings))
    passed = finite and np.isfinite(cand_recall) and cand_recall >= cur_recall - ft.gate_tolerance
    gate = GateReport(bool(passed), f"recall@{ft.gate_k}", cand_recall, cur_recall, ft.gate_tolerance, n_users,
                      "" if passed else ("non-finite embeddings" if not finite else "candidate trails the serving model"))
    log(gate.summary)
    if not gate.passed:
        return FineTuneOutcome(parent.version, None, gate, len(new_interactions), time.perf_counter() - started)

    # The gate is passed: the ranker may learn from the whole window, held-out part included.
    ranker = _fine_tune_ranker(dataset, history, window_start, current, start_ranker, candidate, config, use_ray, log,
                               events)
    models = OrganicModels.build(dataset, history, candidate, ranker, config)
    models.meta.update({**current.meta, "as_of": as_of, "parent": parent.version, "fine_tuned": reason})
    version, staging = store.new_version()
    try:
        shutil.copytree(parent.path, staging, dirs_exist_ok=True)  # ads bundle, monitor baseline
        (staging / "manifest.json").unlink(missing_ok=True)
        models.save(staging / "organic")
        fresh.to_parquet(staging / "organic" / FRESH_FILE, index=False)
        if events is not None:
            events.to_parquet(staging / "organic" / FRESH_EVENTS_FILE, index=False)
        manifest = {**parent.manifest(), "as_of": as_of, "parent": parent.version, "started_from": start.version,
                    "reason": reason,
                    "gate": asdict(gate), "new_interactions": int(len(new_interactions)),
                    "fine_tune_seconds": time.perf_counter() - started}
        manifest.pop("version", None)
        published = store.publish(version, staging, manifest)
    except BaseException:
        store.discard(staging)
        raise
    log(f"published {published.version} ({time.perf_counter() - started:.0f}s)")
    return FineTuneOutcome(parent.version, published.version, gate, len(new_interactions), time.perf_counter() - started)
