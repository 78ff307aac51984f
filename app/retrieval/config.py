"""Every tunable of retrieval, declared once with its default and bounds.

Three sections (model + training, ANN index, candidate sources and merge) composed into
`RetrievalConfig`, which serve_config.yaml and the Ray Tune search space both read.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from app._config_base import Section

DAY = 86_400.0
LEGACY_JOB_KEYS = frozenset({"num_workers", "use_gpu"})  # see TwoTowerConfig._drop_job_keys


class TwoTowerConfig(Section):
    """The two-tower model and how it is trained (in-batch softmax with logQ correction)."""

    embedding_dim: int = Field(64, ge=4, le=1024, description="output dimension of both towers")
    id_dim: int = Field(64, ge=4, le=1024, description="user/item id embedding width")
    feature_dim: int = Field(16, ge=2, le=256, description="width of each categorical feature embedding")
    hidden_dim: int = Field(128, ge=8, le=4096, description="hidden layer width of each tower's MLP")
    history_length: int = Field(
        20, ge=0, le=1000,
        description="recent items averaged into the user tower (0 disables the history feature)",
    )
    creator_buckets: int = Field(
        4096, ge=16, le=10_000_000,
        description="creators get their own embedding row up to this many; beyond it, ids are hashed",
    )
    zip_prefix_len: int = Field(3, ge=1, le=5, description="zip-code digits kept as the user's region feature")
    min_feature_count: int = Field(
        2, ge=1, le=1000, description="categorical values seen fewer times share the out-of-vocabulary row"
    )
    age_bucket_edges: tuple[int, ...] = Field(
        (18, 25, 35, 45, 50, 56), description="user age buckets (MovieLens-1M style edges)"
    )
    year_bucket_years: int = Field(5, ge=1, le=50, description="release-year bucket width; year 0 = unknown")
    user_id_dropout: float = Field(
        0.1, ge=0, le=0.9,
        description="share of training rows whose user id is replaced by the unknown-user row, "
        "so cold-start users (no id row) still get a useful embedding from features + history",
    )
    epochs: int = Field(4, ge=1, le=1000, description="passes over the training interactions")
    batch_size: int = Field(1024, ge=8, le=1_000_000, description="rows per step; the other rows are negatives")
    lr: float = Field(3e-3, gt=0, le=1.0, description="Adam learning rate")
    weight_decay: float = Field(1e-6, ge=0, le=1.0, description="Adam L2 penalty")
    temperature_init: float = Field(0.1, gt=0, le=10.0, description="initial softmax temperature")
    temperature_min: float = Field(0.02, gt=0, le=10.0, description="temperature is clamped from below")
    temperature_max: float = Field(1.0, gt=0, le=10.0, description="temperature is clamped from above")
    learn_temperature: bool = Field(True, description="train log(temperature) with the towers")
    logq_correction: bool = Field(
        True, description="subtract log(sampling probability) of each in-batch item from its logits"
    )
    min_positive_rating: float = Field(
        0.0, ge=0, le=5,
        description="interactions rated below this are not positives (0: every interaction is one)",
    )
    rating_weighted: bool = Field(False, description="weight each positive's loss by rating / mean rating")
    seed: int = Field(0, description="seeds initialisation and batch order")
    torch_threads: int = Field(1, ge=1, le=256, description="intra-op threads per training worker")

    @model_validator(mode="before")
    @classmethod
    def _drop_job_keys(cls, data: object) -> object:
        """Workers and GPUs moved to `training.two_tower` (training/config.py); artifacts saved
        before carry them in their meta.json and must still load."""
        if isinstance(data, dict) and LEGACY_JOB_KEYS & data.keys():
            return {k: v for k, v in data.items() if k not in LEGACY_JOB_KEYS}
        return data

    @model_validator(mode="after")
    def _bounds_are_ordered(self) -> TwoTowerConfig:
        if not self.temperature_min <= self.temperature_init <= self.temperature_max:
            raise ValueError("need temperature_min <= temperature_init <= temperature_max")
        if list(self.age_bucket_edges) != sorted(set(self.age_bucket_edges)):
            raise ValueError("age_bucket_edges must be strictly increasing")
        return self


class AnnIndexConfig(Section):
    """The FAISS index over item embeddings (inner product on L2-normalised vectors)."""

    kind: Literal["exact", "hnsw", "ivf", "ivfpq"] = Field(
        "ivf",
        description="exact (IndexFlatIP, the reference), hnsw (IndexHNSWFlat), ivf (IndexIVFFlat) or ivfpq "
        "(IndexIVFPQ whose shortlist of k x ivfpq_k_factor is re-ranked on stored vectors, see ivfpq_refine); "
        "ivf is the default because retrieval asks for large k, where HNSW's efSearch >= k makes it "
        "slow (benchmarks/ann.py: 1M items, k=1000: IVF 18x faster than exact, HNSW 3x). ivfpq is for "
        "catalogues whose float32 vectors do not fit: per 64-d item it holds 104 bytes with sq8 refine, 168 "
        "with fp16, 40 with none, against ivf's 264; with flat refine (296) it saves nothing and, at 64-d, "
        "is a little slower than ivf (10M items: P50 1.8 vs 1.4 ms at recall@1000 0.95)",
    )
    hnsw_m: int = Field(32, ge=4, le=256, description="HNSW graph degree M")
    hnsw_ef_construction: int = Field(80, ge=8, le=4096, description="HNSW efConstruction")
    hnsw_ef_search: int = Field(128, ge=1, le=100_000, description="HNSW efSearch (raised to k when k is larger)")
    ivf_nlist: int = Field(
        4096, ge=1, le=1_000_000,
        description="IVF coarse clusters of ivf and ivfpq (capped at n_items / 39 when building)",
    )
    ivf_nprobe: int = Field(
        96, ge=1, le=1_000_000,
        description="IVF clusters scanned per query, ivf and ivfpq "
        "(ivf: 96 of 4096 gives recall@1000 0.98 on the 1M benchmark)",
    )
    ivf_train_sample: int = Field(
        262_144, ge=1_000, le=100_000_000,
        description="the coarse quantizer's k-means (and ivfpq's PQ codebooks) see at most this many "
        "vectors (seeded sample)",
    )
    ivfpq_m: int = Field(
        32, ge=1, le=256,
        description="ivfpq: PQ sub-quantizers, each coding dim / m dimensions (must divide the dimension); "
        "a code is m x ivfpq_bits bits. 32 for 64-d: at m=16 the PQ order is too coarse for recall@1000 "
        "(10M items, nprobe 32 of 4096: a shortlist of 8k gave 0.94 at m=16, one of 2k 0.97 at m=32)",
    )
    ivfpq_bits: int = Field(
        8, ge=4, le=12, description="ivfpq: bits per sub-quantizer code (2^bits centroids per sub-space)"
    )
    ivfpq_refine: Literal["flat", "fp16", "sq8", "none"] = Field(
        "flat",
        description="ivfpq: what the PQ shortlist is re-ranked on: flat (the float32 vectors, exact scores, "
        "4 x dim bytes per item), fp16 (2 x dim), sq8 (8-bit scalar quantizer, dim bytes) or none (PQ "
        "scores only, the smallest index: the PQ code alone)",
    )
    ivfpq_k_factor: float = Field(
        2.0, ge=1.0, le=64.0,
        description="ivfpq: the PQ search fetches k x this many candidates for the re-ranking "
        "(ignored when ivfpq_refine is none); 2 with flat refine: recall@1000 0.95 at 100k-10M items "
        "(benchmarks/ann.py), 1 loses 0.05-0.10 to the PQ order",
    )
    use_gpu: bool = Field(
        True,
        description="move flat/IVF indexes to every GPU when FAISS sees one (hnsw and ivfpq stay on CPU); "
        "with a CPU-only FAISS and torch seeing CUDA, an exact index searches through torch on the GPU",
    )
    omp_threads: int | None = Field(
        None, ge=1, le=1024, description="FAISS OpenMP threads (process-wide); None keeps FAISS's default"
    )


class SourcesConfig(Section):
    """Candidate sources, their quotas and the merge."""

    ann_k: int = Field(2000, ge=1, le=100_000, description="items fetched from the embedding index")
    ann_overfetch_seen: bool = Field(
        True, description="fetch k + |seen items| so k survive the seen-item filter"
    )
    social_k: int = Field(750, ge=1, le=100_000, description="items fetched from friends' engagements")
    social_window_s: float = Field(
        60 * DAY, gt=0, le=3650 * DAY, description="friends' engagements older than this are ignored"
    )
    social_half_life_s: float = Field(14 * DAY, gt=0, le=3650 * DAY, description="time decay of a friend's engagement")
    social_events_per_friend: int = Field(
        200, ge=1, le=1_000_000, description="most recent engagements read per friend"
    )
    trending_k: int = Field(750, ge=1, le=100_000, description="items fetched from trending")
    trending_half_life_s: float = Field(7 * DAY, gt=0, le=3650 * DAY, description="half-life of trending counts")
    trending_horizon_half_lives: float = Field(
        10.0, gt=0, le=100, description="events older than this many half-lives are ignored (weight < 0.1%)"
    )
    coengagement_k: int = Field(1500, ge=1, le=100_000, description="items fetched from item-to-item neighbours")
    coengagement_neighbours: int = Field(
        100, ge=1, le=100_000, description="neighbours precomputed per item"
    )
    coengagement_recent_items: int = Field(20, ge=1, le=10_000, description="user's recent items used as seeds")
    coengagement_shrink: float = Field(10.0, ge=0, le=1e6, description="added to the cosine denominator")
    quotas: dict[str, int] = Field(
        default_factory=lambda: {"ann": 2000, "coengagement": 1500, "social": 750, "trending": 750, "fresh": 200},
        description="most candidates each source may place in the merged set (by source name)",
    )
    total_candidates: int = Field(5000, ge=1, le=1_000_000, description="merged candidate set size")
    backfill: bool = Field(
        True, description="when quotas leave room under total_candidates, fill it with the best leftovers"
    )

    @model_validator(mode="after")
    def _quotas_are_non_negative(self) -> SourcesConfig:
        bad = {k: v for k, v in self.quotas.items() if v < 0}
        if bad:
            raise ValueError(f"quotas must be >= 0, got {bad}")
        return self


class DynamicEmbeddingConfig(Section):
    """Dynamic user embeddings: each Retrieval replica follows the event stream and re-encodes an
    engaging user's embedding within milliseconds, with the trained weights untouched."""

    enabled: bool = Field(True, description="follow the event stream (needs REDIS_URL); off: stored embeddings only")
    engagement_types: tuple[str, ...] = Field(
        ("click", "like", "share", "watch", "conversion"),
        description="event types that count as engaging with an item (hide and impression do not)",
    )
    min_watch_seconds: float = Field(
        10.0, ge=0, le=86_400, description="a watch event shorter than this is a bounce, not engagement"
    )
    max_fresh_items: int = Field(200, ge=1, le=100_000, description="newest fresh items kept per user")
    active_session_s: float = Field(
        1800.0, gt=0, le=30 * DAY, description="a user with an event this recent is in an active session"
    )
    dynamic_weight_active: float = Field(
        0.8, ge=0, le=1,
        description="static+dynamic ensemble: weight of the re-encoded embedding for users in an active session",
    )
    dynamic_weight_idle: float = Field(
        0.4, ge=0, le=1, description="the same weight for users whose last event is older than active_session_s"
    )
    read_block_ms: int = Field(
        250, ge=1, le=60_000,
        description="XREAD BLOCK timeout: a new event wakes the reader at once, this only bounds idle polls",
    )
    read_count: int = Field(1000, ge=1, le=100_000, description="stream entries read per call")
    retained_engagements: int = Field(
        1_000_000, ge=1, le=100_000_000,
        description="engagements a replica keeps to re-apply when it swaps in a newly loaded artifact",
    )


class FreshItemsConfig(Section):
    """The fresh-items lane (app/retrieval/fresh.py): published items young enough, by the user's
    embedding, under their own quota (`sources.quotas.fresh`)."""

    window_s: float = Field(2 * DAY, gt=0, le=365 * DAY, description="items published within this are fresh")
    k: int = Field(200, ge=0, le=100_000, description="items the lane fetches (its quota bounds what it places)")
    retention_s: float = Field(
        7 * DAY, gt=0, le=3650 * DAY,
        description="published items older than this (behind the newest publish) leave the fresh index; "
                    "they stay in the catalogue, reachable by the other sources")

    @model_validator(mode="after")
    def _window_within_retention(self) -> FreshItemsConfig:
        if self.window_s > self.retention_s:
            raise ValueError(f"window_s {self.window_s} is longer than retention_s {self.retention_s}")
        return self


class RetrievalConfig(Section):
    """Retrieval: the two-tower model, its ANN index, and the candidate sources and merge."""

    two_tower: TwoTowerConfig = Field(default_factory=TwoTowerConfig)
    index: AnnIndexConfig = Field(default_factory=AnnIndexConfig)
    sources: SourcesConfig = Field(default_factory=SourcesConfig)
    dynamic: DynamicEmbeddingConfig = Field(default_factory=DynamicEmbeddingConfig)
    fresh: FreshItemsConfig = Field(default_factory=FreshItemsConfig)
