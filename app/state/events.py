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

# KEYS[1] = stream, KEYS[2] = dedup prefix; ARGV = maxlen, ttl_ms, n, then per event: id,
# payload (JSON), n_ops, and n_ops × (kind, key, member, amount, ttl_ms) counter updates that are
# applied only when the event is appended (app/state/counters.py). Returns 1 appended / 0 duplicate
# per event.
_APPEND_LUA = """
local maxlen, ttl, n = ARGV[1], ARGV[2], tonumber(ARGV[3])
local out = {}
local a = 4
for i = 1, n do
  local id, payload, n_ops = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  a = a + 3
  if redis.call('SET', KEYS[2] .. id, '1', 'NX', 'PX', ttl) then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'event_id', id, 'event', payload)
    for j = 0, n_ops - 1 do
      local b = a + 5 * j
      if ARGV[b] == 'z' then
        redis.call('ZINCRBY', ARGV[b + 1], ARGV[b + 3], ARGV[b + 2])
      else
        redis.call('HINCRBYFLOAT', ARGV[b + 1], ARGV[b + 2], ARGV[b + 3])
      end
      redis.call('PEXPIRE', ARGV[b + 1], ARGV[b + 4])
    end
    out[i] = 1
  else
    out[i] = 0
  end
  a = a + 5 * n_ops
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
    # The user as the client named them, when the dataset has its own ids (app/data/ids.py): a new
    # user's index cannot be mapped back, and exports (`rayfeed data export events`) need their id.
    user_ref: int | str | None = None

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

    async def append(self, events: Sequence[StreamEvent], counter_ops: Sequence[Sequence] | None = None) -> list[bool]:
        """Whether each event was appended (False: a duplicate). `counter_ops[i]` (CounterOps of
        app/state/counters.py) are applied atomically with event i's append, and only then.
        Raises StoreUnavailable."""
        if not events:
            return []
        args: list[object] = [self.maxlen, self.dedup_ttl_ms, len(events)]
        for k, event in enumerate(events):
            ops = counter_ops[k] if counter_ops is not None else ()
            args += [event.event_id, event.payload(), len(ops)]
            for op in ops:
                args += op.args()
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
        return _decode(rows)

    async def follow(self, after: str, count: int, block_ms: int) -> list[tuple[str, StreamEvent]]:
        """Entries after `after`, waiting up to `block_ms` for the first (XREAD BLOCK): a new
        event wakes the reader at once. For broadcast readers, where every replica needs every
        event (dynamic embeddings); the client's socket timeout must exceed `block_ms`."""
        try:
            found = await self.client.xread({self.key: after}, count=count, block=block_ms)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"event stream follow: {type(exc).__name__}: {exc}") from exc
        return _decode(found[0][1]) if found else []

    # -- consumer groups: each entry handled once per group, acknowledged after it is processed --
    async def ensure_group(self, group: str, start: str = "0") -> None:
        """Create `group` (reading from `start`; "0" = the whole retained stream) unless it exists."""
        try:
            await self.client.xgroup_create(self.key, group, id=start, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise StoreUnavailable(f"event stream group {group}: {exc}") from exc
        except redis.RedisError as exc:
            raise StoreUnavailable(f"event stream group {group}: {type(exc).__name__}: {exc}") from exc

    async def read_group(self, group: str, consumer: str, count: int, block_ms: int | None = None,
                         pending: bool = False) -> list[tuple[str, StreamEvent]]:
        """New entries for `consumer` of `group` (XREADGROUP >), or with `pending=True` the ones
        it was given before but never acknowledged (to resume after a crash)."""
        try:
            found = await self.client.xreadgroup(group, consumer, {self.key: "0" if pending else ">"},
                                                 count=count, block=None if pending else block_ms)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"event stream group read: {type(exc).__name__}: {exc}") from exc
        return _decode(found[0][1]) if found else []

    async def ack(self, group: str, entry_ids: Sequence[str]) -> int:
        if not entry_ids:
            return 0
        try:
            return int(await self.client.xack(self.key, group, *entry_ids))
        except redis.RedisError as exc:
            raise StoreUnavailable(f"event stream ack: {type(exc).__name__}: {exc}") from exc

    async def last_id(self) -> str:
        """The newest entry's id ("0-0" when empty): where a reader that wants only new events starts."""
        try:
            rows = await self.client.xrevrange(self.key, count=1)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"event stream last id: {type(exc).__name__}: {exc}") from exc
        return _decode(rows)[0][0] if rows else "0-0"

    async def length(self) -> int:
        try:
            return int(await self.client.xlen(self.key))
        except redis.RedisError as exc:
            raise StoreUnavailable(f"event stream length: {type(exc).__name__}: {exc}") from exc


def decode_entries(rows) -> list[tuple[str, StreamEvent]]:
    """XRANGE/XREAD rows (sync or async client) as (entry id, event)."""
    return _decode(rows)


def _decode(rows) -> list[tuple[str, StreamEvent]]:
    out = []
    for entry_id, fields in rows:
        entry_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        if not fields:  # an entry trimmed away while still pending in a group
            continue
        raw = fields.get(b"event", fields.get("event"))
        out.append((entry_id, StreamEvent(**json.loads(raw))))
    return out
