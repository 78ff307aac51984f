"""The item stream: published items, durable in Redis, followed by every replica that holds item data.

    rf:{items}:stream         STREAM  one entry per accepted publish: seq, creator_seq, item (JSON)
    rf:{items}:digests        HASH    item key -> digest of the last accepted content
    rf:{items}:seqs           HASH    item key -> seq (0, 1, 2, ...: assigned once, at first publish)
    rf:{items}:next           INCR    the next item seq
    rf:{items}:creators       HASH    creator key -> creator seq (a new creator gets one at its first item)
    rf:{items}:creators_next  INCR    the next creator seq

A deleted post is a tombstone, `{item_id, creator_id, deleted: true}` under the item's seq
(`retract`; `DELETE /v1/items/{id}`), which every replica applies by dropping the item; an id the
stream never held is answered "absent" and nothing is written. One Lua script per batch does all of it atomically, so a publish is acknowledged only once the
stream has it, and a retried publish of the same content is a no-op ("unchanged"). A second
publish of an id with different content is an update ("updated": the stream carries the new
content under the same seq; replicas apply the latest). Every key carries the `{items}` hash tag,
so the script's keys share one slot on a Redis Cluster.

Replicas turn a seq into a models' index (`app.freshness.published`): the artifact's item slots
come first, published items after them, in seq order, so every replica serving one artifact
agrees on every index without asking anyone.

    store = ItemStreamStore(async_client)
    statuses = await store.publish([record, ...])      # ["published", "unchanged", ...]
    entries = await store.read_after("0-0", count=500, block_ms=1000)
    removed, left = trim_through(sync_client, "1733300000000-4")  # what a version folded: `rayfeed items trim`
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any


from app.state._redis import REDIS_FAILURES
from app.state.errors import StoreUnavailable

STREAM_KEY = "rf:{items}:stream"
DIGESTS_KEY = "rf:{items}:digests"
SEQS_KEY = "rf:{items}:seqs"
NEXT_KEY = "rf:{items}:next"
CREATORS_KEY = "rf:{items}:creators"
CREATORS_NEXT_KEY = "rf:{items}:creators_next"
# Set by the server at acceptance, not by the producer: a retried publish differs only here and
# is still "unchanged".
RECEIPT_FIELDS = ("published_at",)
ALL_KEYS = (STREAM_KEY, DIGESTS_KEY, SEQS_KEY, NEXT_KEY, CREATORS_KEY, CREATORS_NEXT_KEY)

_PUBLISH = """
local out = {}
for i = 1, #ARGV, 4 do
  local key, digest, creator, payload = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if redis.call('HGET', KEYS[2], key) == digest then
    table.insert(out, 'unchanged')
  else
    local status = 'updated'
    local seq = redis.call('HGET', KEYS[3], key)
    if not seq then
      seq = redis.call('INCR', KEYS[4]) - 1
      redis.call('HSET', KEYS[3], key, seq)
      status = 'published'
    end
    local cseq = redis.call('HGET', KEYS[5], creator)
    if not cseq then
      cseq = redis.call('INCR', KEYS[6]) - 1
      redis.call('HSET', KEYS[5], creator, cseq)
    end
    redis.call('HSET', KEYS[2], key, digest)
    redis.call('XADD', KEYS[1], '*', 'seq', seq, 'creator_seq', cseq, 'item', payload)
    table.insert(out, status)
  end
end
return out
"""


_RETRACT = """
local out = {}
for i = 1, #ARGV, 4 do
  local key, digest, creator, payload = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local seq = redis.call('HGET', KEYS[3], key)
  if not seq then
    table.insert(out, 'absent')
  elseif redis.call('HGET', KEYS[2], key) == digest then
    table.insert(out, 'unchanged')
  else
    local cseq = redis.call('HGET', KEYS[5], creator) or '0'
    redis.call('HSET', KEYS[2], key, digest)
    redis.call('XADD', KEYS[1], '*', 'seq', seq, 'creator_seq', cseq, 'item', payload)
    table.insert(out, 'deleted')
  end
end
return out
"""


def id_key(value: object) -> str:
    """A dataset id as a hash field: typed, so the integer 7 and the string "7" stay apart."""
    return f"i:{value}" if isinstance(value, int) else f"s:{value}"


@dataclass(frozen=True)
class StreamedItem:
    """One stream entry: an item's content as published, and the seqs the store gave it."""

    entry_id: str
    seq: int
    creator_seq: int
    item: dict[str, Any]  # item_id, creator_id, created_at, topics, content_rating, min_age, title


def _text(raw) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def decode_entry(entry_id, fields: dict) -> StreamedItem:
    fields = {_text(k): v for k, v in fields.items()}
    return StreamedItem(_text(entry_id), int(fields["seq"]), int(fields["creator_seq"]),
                        json.loads(_text(fields["item"])))


def read_whole_stream(client, page: int = 10_000) -> list[StreamedItem]:
    """Every entry of the item stream, oldest first, over a sync client (`rayfeed train` folds
    them into the next artifact: training/fold.py). Redis errors become StoreUnavailable."""
    out: list[StreamedItem] = []
    after = "-"
    try:
        while True:
            batch = client.xrange(STREAM_KEY, min=after, max="+", count=page)
            out += [decode_entry(entry_id, fields) for entry_id, fields in batch]
            if len(batch) < page:
                return out
            after = "(" + _text(batch[-1][0])
    except REDIS_FAILURES as exc:
        raise StoreUnavailable(f"item stream read: {type(exc).__name__}: {exc}") from exc


def trim_through(client, entry_id: str) -> tuple[int, int]:
    """Remove the stream's entries up to and including `entry_id` (the last one a version's
    training folded in: training/fold.py), over a sync client; (entries removed, entries left).
    The digests and seqs stay, so ids stay taken and a retried publish is still "unchanged"."""
    ms, _, seq = _text(entry_id).partition("-")
    try:
        removed = int(client.xtrim(STREAM_KEY, minid=f"{int(ms)}-{int(seq or 0) + 1}", approximate=False))
        return removed, int(client.xlen(STREAM_KEY))
    except REDIS_FAILURES as exc:
        raise StoreUnavailable(f"item stream trim: {type(exc).__name__}: {exc}") from exc


class ItemStreamStore:
    """The item stream over a redis.asyncio client; Redis errors become StoreUnavailable."""

    def __init__(self, client) -> None:
        self.client = client

    async def publish(self, items: list[dict[str, Any]]) -> list[str]:
        """Append each item whose content changed; per item "published", "updated" or "unchanged"."""
        return await self._run(_PUBLISH, "publish", items)

    async def retract(self, items: list[dict[str, Any]]) -> list[str]:
        """Tombstones for items named by `item_id` and `creator_id` (other fields are ignored): each
        leaves serving on every replica; its id stays taken (its seq is not reused), and publishing
        it again brings it back. Per item "deleted", "unchanged" (already deleted) or "absent"."""
        tombstones = [{"item_id": i["item_id"], "creator_id": i["creator_id"], "deleted": True,
                       "published_at": i.get("published_at", 0.0)} for i in items]
        return await self._run(_RETRACT, "retract", tombstones)

    async def _run(self, script: str, what: str, items: list[dict[str, Any]]) -> list[str]:
        argv: list[str] = []
        for item in items:
            payload = json.dumps(item, sort_keys=True, separators=(",", ":"))
            content = {k: v for k, v in item.items() if k not in RECEIPT_FIELDS}
            digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:32]
            argv += [id_key(item["item_id"]), digest, id_key(item["creator_id"]), payload]
        try:
            statuses = await self.client.eval(script, len(ALL_KEYS), *ALL_KEYS, *argv)
        except REDIS_FAILURES as exc:
            raise StoreUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc
        return [_text(s) for s in statuses]

    async def read_after(self, position: str, count: int, block_ms: int | None) -> list[StreamedItem]:
        """Entries after `position` ("0-0": from the start), at most `count`, waiting up to `block_ms`."""
        try:
            found = await self.client.xread({STREAM_KEY: position}, count=count, block=block_ms)
        except REDIS_FAILURES as exc:
            raise StoreUnavailable(f"item stream read: {type(exc).__name__}: {exc}") from exc
        return [decode_entry(entry_id, fields) for _, entries in found or [] for entry_id, fields in entries]

    async def length(self) -> int:
        try:
            return int(await self.client.xlen(STREAM_KEY))
        except REDIS_FAILURES as exc:
            raise StoreUnavailable(f"item stream length: {type(exc).__name__}: {exc}") from exc
