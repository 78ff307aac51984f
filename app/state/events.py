"""The event stream: every accepted user event appended to a bounded Redis stream.

`/v1/events` appends BEFORE acknowledging, so an acknowledged event is never lost to a crash of
the server. De-duplication is atomic with the append (one Lua script per batch): an event id
already seen within `dedup_ttl_s` is counted as a duplicate and not appended again, so clients
may retry a batch safely.

Consumers (dynamic embeddings, counters, monitors, training data) read the stream with
`EventStream.read` / `follow` / `read_group`; each entry's fields are the event's.

Partitions (`api.event_stream_partitions`, P = 1 by default): the stream may be split into P
keys by user (`user_id % P`), each with its own hash tag, so that on a Redis Cluster each
partition, its de-duplication keys and the counters its events move live in one slot (the append
script touches one slot), and the partitions spread over the masters:

    P = 1, one server      rf:events, rf:events:seen:<id>, counters as named in counters.py
    otherwise              rf:events:{ev:<p>}, rf:events:{ev:<p>}:seen:<id>, <counter>:{ev:<p>}

One user's events stay in order (one partition); across partitions there is no total order.
With P > 1 an entry id is "<p>/<id>" and a reading position names every partition's
("<id0>,<id1>,..."; one id applies to all, "0-0" reads from the start): `position_after(position,
entries)` moves it past what was read.

Example:
    stream = EventStream(async_client, maxlen=1_000_000, dedup_ttl_s=86_400, partitions=4)
    accepted = await stream.append([StreamEvent(...), ...])
    entries = await stream.follow(position, count=500, block_ms=1000)
    position = stream.position_after(position, entries)
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import asyncio

import redis

from app.state._redis import REDIS_FAILURES, is_cluster
from app.state.errors import StoreUnavailable

STREAM_KEY = "rf:events"
DEDUP_PREFIX = "rf:events:seen:"


@dataclass(frozen=True)
class EventPartitions:
    """The stream's P partition keys and the slot each event's keys live in (see the module)."""

    count: int = 1
    tagged: bool = False  # hash-tagged names: a Redis Cluster, or P > 1
    base: str = STREAM_KEY

    @classmethod
    def of(cls, client, count: int, base: str = STREAM_KEY) -> "EventPartitions":
        if count < 1:
            raise ValueError(f"api.event_stream_partitions must be >= 1, got {count}")
        return cls(count, count > 1 or is_cluster(client), base)

    def tag(self, p: int) -> str:
        return f"{{ev:{p}}}"

    def key(self, p: int) -> str:
        return f"{self.base}:{self.tag(p)}" if self.tagged else self.base

    def keys(self) -> list[str]:
        return [self.key(p) for p in range(self.count)]

    def of_user(self, user_id: int) -> int:
        return int(user_id) % self.count

    def dedup_prefix(self, p: int) -> str:
        return f"{self.key(p)}:seen:" if self.tagged else DEDUP_PREFIX

    def local(self, key: str, p: int) -> str:
        """`key` (a counter) named into partition `p`'s slot."""
        return f"{key}:{self.tag(p)}" if self.tagged else key

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
    """Append-with-dedup and read over the partitioned Redis stream (redis.asyncio client, one
    server or a Redis Cluster)."""

    def __init__(self, client, maxlen: int, dedup_ttl_s: float, key: str = STREAM_KEY, partitions: int = 1) -> None:
        self.client = client
        self.partitions = EventPartitions.of(client, partitions, key)
        self.maxlen = max(1, maxlen // self.partitions.count)  # `maxlen` bounds the whole stream
        self.dedup_ttl_ms = int(dedup_ttl_s * 1000)
        self.key = self.partitions.key(0)
        self._script = client.register_script(_APPEND_LUA)
        # one XREAD over every partition blocks until any has news; a cluster serves the
        # partitions from different nodes, so it reads them one call each
        self._one_call = self.partitions.count == 1 or not is_cluster(client)

    async def append(self, events: Sequence[StreamEvent], counter_ops: Sequence[Sequence] | None = None) -> list[bool]:
        """Whether each event was appended (False: a duplicate). `counter_ops[i]` (CounterOps of
        app/state/counters.py) are applied atomically with event i's append, and only then.
        Raises StoreUnavailable (some partitions may have taken theirs: a retry is de-duplicated)."""
        if not events:
            return []
        parts = self.partitions
        by_partition: dict[int, list[int]] = {}
        for i, event in enumerate(events):
            by_partition.setdefault(parts.of_user(event.user_id), []).append(i)
        calls = []
        for p, indices in by_partition.items():
            args: list[object] = [self.maxlen, self.dedup_ttl_ms, len(indices)]
            for i in indices:
                ops = counter_ops[i] if counter_ops is not None else ()
                args += [events[i].event_id, events[i].payload(), len(ops)]
                for op in ops:
                    kind, key, *rest = op.args()
                    args += [kind, parts.local(key, p), *rest]
            calls.append(self._script(keys=[parts.key(p), parts.dedup_prefix(p)], args=args))
        try:
            replies = await asyncio.gather(*calls)
        except REDIS_FAILURES as exc:
            raise StoreUnavailable(f"event stream append: {type(exc).__name__}: {exc}") from exc
        flags = [False] * len(events)
        for indices, reply in zip(by_partition.values(), replies):
            for i, f in zip(indices, reply):
                flags[i] = bool(int(f))
        return flags

    # -- positions: one id per partition ------------------------------------------------------------
    def _positions(self, position: str) -> list[str]:
        ids = position.split(",")
        if len(ids) == 1:
            return ids * self.partitions.count
        if len(ids) != self.partitions.count:
            raise ValueError(f"stream position {position!r} names {len(ids)} partitions, the stream has {self.partitions.count}")
        return ids

    def position_after(self, position: str, entries: Sequence[tuple[str, StreamEvent]]) -> str:
        """The position past `entries` (read from `position`)."""
        if self.partitions.count == 1:
            return entries[-1][0] if entries else position
        ids = self._positions(position)
        for entry_id, _ in entries:
            p, _, raw = entry_id.partition("/")
            ids[int(p)] = raw
        return ",".join(ids)

    def _entries(self, p: int, rows) -> list[tuple[str, StreamEvent]]:
        out = _decode(rows)
        if self.partitions.count == 1:
            return out
        return [(f"{p}/{entry_id}", event) for entry_id, event in out]

    def _merged(self, found: dict[str, list]) -> list[tuple[str, StreamEvent]]:
        """Rows per partition key as entries, oldest first across partitions (by entry time)."""
        index = {key: p for p, key in enumerate(self.partitions.keys())}
        out = []
        for key, rows in found.items():
            key = key.decode() if isinstance(key, bytes) else key
            out += self._entries(index[key], rows)
        if self.partitions.count > 1:
            out.sort(key=lambda e: tuple(int(x) for x in e[0].split("/")[1].split("-")))
        return out

    async def read(self, after: str = "0-0", count: int = 100) -> list[tuple[str, StreamEvent]]:
        """Entries after position `after`, oldest first: (entry id, event); at most `count` per
        partition."""
        positions = self._positions(after)

        async def one(key: str, pos: str):
            return await self.client.xrange(key, min=f"({pos}" if pos != "0-0" else "-", count=count)

        try:
            rows = await asyncio.gather(*(one(k, pos) for k, pos in zip(self.partitions.keys(), positions)))
        except REDIS_FAILURES as exc:
            raise StoreUnavailable(f"event stream read: {type(exc).__name__}: {exc}") from exc
        return self._merged(dict(zip(self.partitions.keys(), rows)))

    async def follow(self, after: str, count: int, block_ms: int) -> list[tuple[str, StreamEvent]]:
        """Entries after `after` (at most `count` per partition), waiting up to `block_ms` for the
        first (XREAD BLOCK): a new
        event wakes the reader at once (on a Redis Cluster with P > 1: one blocking read per
        partition, the first to answer wins, the others are cancelled). For broadcast readers,
        where every replica needs every event (dynamic embeddings); the client's socket timeout
        must exceed `block_ms`."""
        streams = dict(zip(self.partitions.keys(), self._positions(after)))
        try:
            if self._one_call:
                return self._merged(dict(await self.client.xread(streams, count=count, block=block_ms) or []))
            found = await self._each_partition(lambda k, pos: self.client.xread({k: pos}, count=count), streams)
            if not found:
                found = await self._first_to_answer(streams, count, block_ms)
        except REDIS_FAILURES as exc:
            raise StoreUnavailable(f"event stream follow: {type(exc).__name__}: {exc}") from exc
        return self._merged(found)

    async def _first_to_answer(self, streams: dict[str, str], count: int, block_ms: int) -> dict:
        """A blocking XREAD per partition; the first answer wins and the rest are cancelled
        (XREAD moves nothing on the server, so a cancelled read loses nothing; its connection is
        dropped and made again)."""
        tasks = [asyncio.ensure_future(self.client.xread({k: pos}, count=count, block=block_ms))
                 for k, pos in streams.items()]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return {key: rows for task in done for key, rows in (task.result() or [])}

    async def _each_partition(self, call, streams: dict[str, str]) -> dict:
        """`call(key, position)` for every partition at once; the rows found, by key."""
        replies = await asyncio.gather(*(call(k, pos) for k, pos in streams.items()))
        return {key: rows for reply in replies for key, rows in (reply or [])}

    # -- consumer groups: each entry handled once per group, acknowledged after it is processed --
    async def ensure_group(self, group: str, start: str = "0") -> None:
        """Create `group` on every partition (reading from `start`; "0" = the whole retained
        stream) unless it exists."""
        for key in self.partitions.keys():
            try:
                await self.client.xgroup_create(key, group, id=start, mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise StoreUnavailable(f"event stream group {group}: {exc}") from exc
            except REDIS_FAILURES as exc:
                raise StoreUnavailable(f"event stream group {group}: {type(exc).__name__}: {exc}") from exc

    async def read_group(self, group: str, consumer: str, count: int, block_ms: int | None = None,
                         pending: bool = False) -> list[tuple[str, StreamEvent]]:
        """New entries for `consumer` of `group` (XREADGROUP >), or with `pending=True` the ones
        it was given before but never acknowledged (to resume after a crash); at most `count`
        per partition."""
        streams = {key: "0" if pending else ">" for key in self.partitions.keys()}
        block = None if pending else block_ms
        try:
            if self._one_call:
                found = await self.client.xreadgroup(group, consumer, streams, count=count, block=block)
                return self._merged(dict(found or []))
            return self._merged(await self._each_partition(
                lambda k, pos: self.client.xreadgroup(group, consumer, {k: pos}, count=count, block=block), streams))
        except REDIS_FAILURES as exc:
            raise StoreUnavailable(f"event stream group read: {type(exc).__name__}: {exc}") from exc

    async def ack(self, group: str, entry_ids: Sequence[str]) -> int:
        if not entry_ids:
            return 0
        by_key: dict[str, list[str]] = {}
        for entry_id in entry_ids:
            p, raw = entry_id.split("/") if self.partitions.count > 1 else (0, entry_id)
            by_key.setdefault(self.partitions.key(int(p)), []).append(raw)
        try:
            return sum([int(await self.client.xack(key, group, *ids)) for key, ids in by_key.items()])
        except REDIS_FAILURES as exc:
            raise StoreUnavailable(f"event stream ack: {type(exc).__name__}: {exc}") from exc

    async def last_id(self) -> str:
        """The newest position ("0-0" when empty): where a reader that wants only new events starts."""
        try:
            rows = await asyncio.gather(*(self.client.xrevrange(key, count=1) for key in self.partitions.keys()))
        except REDIS_FAILURES as exc:
            raise StoreUnavailable(f"event stream last id: {type(exc).__name__}: {exc}") from exc
        return ",".join(_decode(r)[0][0] if r else "0-0" for r in rows)

    async def length(self) -> int:
        try:
            return sum([int(await self.client.xlen(key)) for key in self.partitions.keys()])
        except REDIS_FAILURES as exc:
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
