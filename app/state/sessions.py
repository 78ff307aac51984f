"""Per-user and per-pagination-session state the feed reads and the events write (Redis).

    served items    rf:feed:served:<session>     SET of item ids already on a page of this
                                                 cursor chain (TTL: the chain's lifetime)
    hidden          rf:user:hidden_items:<user>  SETs fed by hide events; the next feed
                    rf:user:hidden_creators:<u>  filters them (TTL refreshed on each hide)
    session         rf:session:<user>            HASH of SessionSignals counters; expires after
                                                 `session_ttl_s` of inactivity (a new session)

One feed request reads everything it needs in ONE round trip (`FeedStateStore.read`).
All methods raise `StoreUnavailable` on any Redis failure, so the caller decides how to degrade.
"""
from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field


from app.api.cursor import Cursor, CursorCodec
from app.collator.types import SessionSignals
from app.pipeline.runner import StageHook, timed_step
from app.state._redis import REDIS_FAILURES
from app.state.errors import StoreUnavailable
from app.state.events import StreamEvent

PREFIX = "rf"
SECRET_KEY = f"{PREFIX}:api:cursor_secret"
COUNTERS = ("impressions", "ad_impressions", "ads_shown", "quick_bounces", "hides")


def served_key(session_id: str) -> str:
    return f"{PREFIX}:feed:served:{session_id}"


def hidden_items_key(user_id: int) -> str:
    return f"{PREFIX}:user:hidden_items:{user_id}"


def hidden_creators_key(user_id: int) -> str:
    return f"{PREFIX}:user:hidden_creators:{user_id}"


def session_key(user_id: int) -> str:
    return f"{PREFIX}:session:{user_id}"


def _ints(values: Iterable[bytes | str]) -> frozenset[int]:
    return frozenset(int(v) for v in values)


def signals_from_counters(counters: dict) -> SessionSignals:
    c = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in counters.items()}
    impressions = max(c.get("impressions", 0), 0)
    return SessionSignals(
        ads_shown_in_session=max(c.get("ads_shown", 0), 0),
        impressions_in_session=impressions,
        ads_in_session_impressions=min(max(c.get("ad_impressions", 0), 0), impressions),
        quick_bounces=max(c.get("quick_bounces", 0), 0),
        hides_in_session=max(c.get("hides", 0), 0),
    )


@dataclass(frozen=True)
class StreamAppend:
    """One more stream entry to send with a page's writes (the live monitor's prediction log)."""

    key: str
    fields: dict[str, str]
    maxlen: int


@dataclass(frozen=True)
class FeedState:
    served_item_ids: frozenset[int] = frozenset()
    hidden_item_ids: frozenset[int] = frozenset()
    hidden_creator_ids: frozenset[int] = frozenset()
    session: SessionSignals = field(default_factory=SessionSignals)


class FeedStateStore:
    """The feed's Redis state over a redis.asyncio client."""

    def __init__(self, client, served_ttl_s: float, session_ttl_s: float, hidden_ttl_s: float, quick_bounce_s: float) -> None:
        self.client = client
        self.served_ttl_ms = int(served_ttl_s * 1000)
        self.session_ttl_ms = int(session_ttl_s * 1000)
        self.hidden_ttl_ms = int(hidden_ttl_s * 1000)
        self.quick_bounce_s = quick_bounce_s

    async def _run(self, what: str, pipe):
        try:
            return await pipe.execute()
        except REDIS_FAILURES as exc:
            raise StoreUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc

    async def ping(self) -> None:
        try:
            await self.client.ping()
        except REDIS_FAILURES as exc:
            raise StoreUnavailable(f"ping: {type(exc).__name__}: {exc}") from exc

    async def cursor_secret(self) -> bytes:
        """One secret shared by every ingress replica: the first to ask creates it (SET NX)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.set(SECRET_KEY, secrets.token_hex(32), nx=True)
        pipe.get(SECRET_KEY)
        _, value = await self._run("cursor secret", pipe)
        return value if isinstance(value, bytes) else str(value).encode()

    async def read(self, user_id: int, session_id: str | None) -> FeedState:
        pipe = self.client.pipeline(transaction=False)
        if session_id:
            pipe.smembers(served_key(session_id))
        pipe.smembers(hidden_items_key(user_id))
        pipe.smembers(hidden_creators_key(user_id))
        pipe.hgetall(session_key(user_id))
        results = await self._run("feed state read", pipe)
        served = _ints(results.pop(0)) if session_id else frozenset()
        items, creators, counters = results
        return FeedState(served, _ints(items), _ints(creators), signals_from_counters(counters))

    async def read_for_page(self, user_id: int, cursor_token: str | None,
                            codec: Callable[[], Awaitable[CursorCodec]], hook: StageHook) -> tuple[Cursor | None, FeedState]:
        """The page's cursor (verified; InvalidCursor when it is not) and the user's state it
        names, as the `feed_state` step of the page."""
        with timed_step(hook, "feed_state", "hydrator") as figures:
            cursor = None
            if cursor_token is not None:
                cursor = (await codec()).decode(cursor_token, user_id, time.time())
            state = await self.read(user_id, cursor.session_id if cursor else None)
            figures.update(served=len(state.served_item_ids), hidden=len(state.hidden_item_ids))
        return cursor, state

    async def record_page(
        self, user_id: int, session_id: str, item_ids: Sequence[int], n_ads: int, append: StreamAppend | None = None
    ) -> bool:
        """After a page is served: its items join the chain's served set; ads count as shown.

        `append`: one stream entry (XADD, MAXLEN ~) sent in the same round trip, last. Its own
        failure is reported, not raised (returns False): a log entry must never cost the page its
        cursor. Returns True otherwise."""
        pipe = self.client.pipeline(transaction=False)
        if item_ids:
            pipe.sadd(served_key(session_id), *item_ids)
        pipe.pexpire(served_key(session_id), self.served_ttl_ms)
        if n_ads:
            pipe.hincrby(session_key(user_id), "ads_shown", n_ads)
            pipe.pexpire(session_key(user_id), self.session_ttl_ms)
        if append is None:
            await self._run("record page", pipe)
            return True
        pipe.xadd(append.key, append.fields, maxlen=append.maxlen, approximate=True)
        try:
            results = await pipe.execute(raise_on_error=False)
        except REDIS_FAILURES as exc:
            raise StoreUnavailable(f"record page: {type(exc).__name__}: {exc}") from exc
        failed = [r for r in results[:-1] if isinstance(r, Exception)]
        if failed:
            raise StoreUnavailable(f"record page: {type(failed[0]).__name__}: {failed[0]}")
        return not isinstance(results[-1], Exception)

    async def apply_events(self, events: Sequence[StreamEvent]) -> None:
        """Session counters and hides from accepted events (after they are on the stream)."""
        if not events:
            return
        pipe = self.client.pipeline(transaction=False)
        for e in events:
            session = session_key(e.user_id)
            touched_session = False
            if e.type == "impression":
                pipe.hincrby(session, "impressions", 1)
                if e.ad_id is not None:
                    pipe.hincrby(session, "ad_impressions", 1)
                touched_session = True
            elif e.type == "watch" and e.watch_seconds is not None and e.watch_seconds < self.quick_bounce_s:
                pipe.hincrby(session, "quick_bounces", 1)
                touched_session = True
            elif e.type == "hide":
                pipe.hincrby(session, "hides", 1)
                touched_session = True
                if e.item_id is not None:
                    pipe.sadd(hidden_items_key(e.user_id), e.item_id)
                    pipe.pexpire(hidden_items_key(e.user_id), self.hidden_ttl_ms)
                if e.creator_id is not None:
                    pipe.sadd(hidden_creators_key(e.user_id), e.creator_id)
                    pipe.pexpire(hidden_creators_key(e.user_id), self.hidden_ttl_ms)
            if touched_session:
                pipe.pexpire(session, self.session_ttl_ms)
        await self._run("apply events", pipe)
