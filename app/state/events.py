"""The event stream: every accepted user event appended to a bounded Redis stream.

`/v1/events` appends BEFORE acknowledging, so an acknowledged event is never lost to a crash of
the server. De-duplication is atomic with the append (one Lua script per batch): an event id
already seen within `dedup_ttl_s` is counted as a duplicate and not appended again, so clients
may retry a batch safely.

Consumers (dynamic embeddings, counters, monitors, training data) read the stream with
`EventStream.read` (or XREADGROUP on `stream_key`); each entry's fields are the event's.

Example:
    stream = EventStream(async_client, maxlen=1_000_000, dedup_ttl_s=86_400)
    accepted, duplicates = await stream.append([StreamEvent(...), ...])
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import redis

from app.state.errors import StoreUnavailable

STREAM_KEY = "rf:events"
DEDUP_PREFIX = "rf:events:seen:"

# KEYS[1] = stream; ARGV = maxlen, ttl_ms, n, then per event: id, payload (JSON).
# Returns a flag per event: 1 appended, 0 duplicate.
_APPEND_LUA = """
local maxlen, ttl, n = ARGV[1], ARGV[2], tonumber(ARGV[3])
local out = {}
for i = 0, n - 1 do
  local id, payload = ARGV[4 + 2 * i], ARGV[5 + 2 * i]
  if redis.call('SET', KEYS[2] .. id, '1', 'NX', 'PX', ttl) then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'event_id', id, 'event', payload)
    out[i + 1] = 1
  else
    out[i + 1] = 0
  end
end
return out
"""


@dataclass(frozen=True)
class StreamEvent:
    """One event as stored on the stream (validated by the API before it gets here)."""

    event_id: str
    user_id: int
    type: str
    ts: float
    item_id: int | None = None
    ad_id: int | None = None
    watch_seconds: float | None = None
    position: int | None = None
    request_id: str | None = None
    creator_id: int | None = None

    @staticmethod
    def derive_id(fields: dict[str, object]) -> str:
        """A deterministic id for an event sent without one: same content, same id (so a
        retried batch is de-duplicated even when the client does not name its events)."""
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
        return "d-" + hashlib.sha256(canonical.encode()).hexdigest()[:32]

    def payload(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None}, separators=(",", ":"))


class EventStream:
    """Append-with-dedup and read over one Redis stream (redis.asyncio client)."""

    def __init__(self, client, maxlen: int, dedup_ttl_s: float, key: str = STREAM_KEY) -> None:
        self.client = client
        self.maxlen = maxlen
        self.dedup_ttl_ms = int(dedup_ttl_s * 1000)
        self.key = key
        self._script = client.register_script(_APPEND_LUA)

    async def append(self, events: Sequence[StreamEvent]) -> list[bool]:
        """Whether each event was appended (False: a duplicate). Raises StoreUnavailable."""
        if not events:
            return []
        args: list[object] = [self.maxlen, self.dedup_ttl_ms, len(events)]
        for event in events:
            args += [event.event_id, event.payload()]
        try:
            flags = await self._script(keys=[self.key, DEDUP_PREFIX], args=args)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"event stream append: {type(exc).__name__}: {exc}") from exc
        return [bool(int(f)) for f in flags]

    async def read(self, after: str = "0-0", count: int = 100) -> list[tuple[str, StreamEvent]]:
        """Entries after stream id `after`, oldest first: (entry id, event)."""
        try:
            rows = await self.client.xrange(self.key, min=f"({after}" if after != "0-0" else "-", count=count)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"event stream read: {type(exc).__name__}: {exc}") from exc
        out = []
        for entry_id, fields in rows:
            entry_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            raw = fields.get(b"event", fields.get("event"))
            out.append((entry_id, StreamEvent(**json.loads(raw))))
        return out

    async def length(self) -> int:
        try:
            return int(await self.client.xlen(self.key))
        except redis.RedisError as exc:
            raise StoreUnavailable(f"event stream length: {type(exc).__name__}: {exc}") from exc
