"""Tunables of the HTTP API, declared once. Wired into RayfeedConfig as `api`."""
from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from app._config_base import Section


class ApiConfig(Section):
    """Page sizes, pagination state, event intake and the admin token's source."""

    default_limit: int = Field(20, ge=1, le=1000, description="page size when the request gives none")
    min_limit: int = Field(1, ge=1, le=1000, description="smallest page a client may ask for")
    max_limit: int = Field(100, ge=1, le=1000, description="largest page a client may ask for")
    max_pages: int = Field(50, ge=1, le=10_000, description="pages one cursor chain may reach")
    served_ttl_s: float = Field(
        1800.0, gt=0, le=7 * 86_400, description="how long a pagination session's served items stay in Redis"
    )
    cursor_max_age_s: float = Field(
        1800.0, gt=0, le=7 * 86_400, description="a cursor older than this is rejected (its served set has expired)"
    )
    max_events_per_request: int = Field(500, ge=1, le=100_000, description="larger event batches get 413")
    event_stream_maxlen: int = Field(
        1_000_000, ge=1000, le=100_000_000, description="approximate length bound of the Redis event stream (XADD MAXLEN ~)"
    )
    event_stream_partitions: int = Field(
        1, ge=1, le=1024, description="keys the event stream is split into by user (hash-tagged: spread over a Redis "
        "Cluster's masters); every writer and reader must agree (app/state/events.py)"
    )
    event_dedup_ttl_s: float = Field(
        86_400.0, gt=0, le=30 * 86_400, description="an event id seen within this window counts as a duplicate"
    )
    max_event_age_s: float = Field(
        7 * 86_400.0, gt=0, description="events with a timestamp further than this from world time are rejected"
    )
    session_ttl_s: float = Field(1800.0, gt=0, le=86_400, description="idle time after which session counters reset")
    hidden_ttl_s: float = Field(
        90 * 86_400.0, gt=0, description="how long a user's hidden items and creators are remembered"
    )
    quick_bounce_s: float = Field(
        3.0, ge=0, le=600, description="a watch event shorter than this counts as a quick bounce"
    )
    redis_timeout_s: float = Field(0.05, gt=0, le=10, description="socket timeout of the ingress's Redis calls")
    redis_max_connections: int = Field(
        32, ge=1, le=10_000, description="bounded async connection pool of one ingress replica"
    )
    redis_breaker_failures: int = Field(
        3, ge=1, le=1000, description="consecutive Redis failures that open the ingress's circuit breaker"
    )
    redis_breaker_reset_s: float = Field(
        1.0, gt=0, le=600, description="how long an open breaker skips Redis before one probe call is let through"
    )
    request_timeout_s: float = Field(
        5.0, gt=0, le=120,
        description="deadline of a feed request from its arrival at the ingress; carried to every stage (504 past it)",
    )
    release_linger_s: float = Field(
        0.25, ge=0, le=60,
        description="a page's unplaced ads are released with the ingress's next auction call, or in a call of "
                    "their own once they have waited this long (0: in a call of their own at once)",
    )
    rate_limit_per_s: float = Field(
        100.0, ge=0, le=1_000_000,
        description="per-client requests/s on the public endpoints across all ingress replicas (0 turns the limit off)",
    )
    replica_heartbeat_s: float = Field(
        1.0, gt=0, le=60,
        description="ingress replicas count each other this often (Redis heartbeat) to take their share of the rate limit",
    )
    rate_limit_burst: float = Field(
        200.0, ge=1, le=1_000_000, description="per-client bucket size (requests) across all ingress replicas")
    rate_limit_max_clients: int = Field(
        100_000, ge=1, le=10_000_000, description="client buckets one replica keeps (least recently used evicted)"
    )
    max_inflight_feeds: int = Field(
        8, ge=0, le=10_000,
        description="most feeds one ingress replica works on at once; more are answered 503 + Retry-After (0: no bound)",
    )
    shed_delay_s: float = Field(
        0.4, ge=0, le=10,
        description="a refused feed is answered after about this × (refusals waiting / in-flight bound), jittered, so "
                    "clients retrying at once are refused at most ≈ bound / shed_delay_s times a second (0: at once)",
    )
    shed_delay_max_s: float = Field(4.0, ge=0, le=60, description="the longest a refusal is held before its 503")
    shed_handover_max_wait_s: float = Field(
        0.025, ge=0, le=60,
        description="a slot freed while refusals are held goes to the newest one held at most this long (0: none; "
                    "an older one keeps its hold and its 503, so an admitted feed's wait stays short)",
    )
    admission_target_s: float = Field(
        0.2, ge=0, le=60,
        description="feeds finishing slower than this shrink the replica's in-flight bound, faster ones grow it back "
                    "to max_inflight_feeds (app/api/admission.py; 0: the bound stays max_inflight_feeds)",
    )
    admission_min_inflight: int = Field(1, ge=1, le=10_000, description="the adaptive in-flight bound never goes below this")
    admission_backoff: float = Field(
        0.5, gt=0, lt=1, description="factor the in-flight bound is cut by after a slow feed (at most once per window)")
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024, description="larger request bodies are refused with 413"
    )
    counter_retention_days: float = Field(
        14.0, gt=0, le=3650, description="days the real-time engagement counters (app/state/counters.py) are kept"
    )
    takedown_poll_s: float = Field(
        0.25, gt=0, le=60,
        description="how often a replica looks for new takedowns in Redis (a takedown reaches every replica within it)",
    )
    producer_token_env: str = Field(
        "RAYFEED_PRODUCER_TOKEN", min_length=1,
        description="environment variable holding the producer bearer token (POST /v1/items; not the admin token)",
    )
    producer_token_file: Path | None = Field(
        None, description="file holding the producer bearer token (used when the environment variable is unset)"
    )
    max_publish_items: int = Field(500, ge=1, le=10_000, description="most items one POST /v1/items may carry")
    item_read_count: int = Field(
        500, ge=1, le=100_000, description="item stream entries a replica reads per XREAD (app/state/items.py)")
    item_read_block_ms: int = Field(
        1000, ge=1, le=60_000, description="how long a replica's item stream read waits for new entries")
    admin_token_env: str = Field(
        "RAYFEED_ADMIN_TOKEN", min_length=1, description="environment variable holding the admin bearer token"
    )
    admin_token_file: Path | None = Field(
        None, description="file holding the admin bearer token (used when the environment variable is unset)"
    )

    @model_validator(mode="after")
    def _limits_ordered(self) -> "ApiConfig":
        if not self.min_limit <= self.default_limit <= self.max_limit:
            raise ValueError("need min_limit <= default_limit <= max_limit")
        return self
