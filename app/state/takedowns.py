"""Takedowns: items and creators removed from serving, durable in Redis, applied by every replica.

    rf:{takedowns}:items      HASH item index    -> {"reason", "at", "external_id"} (JSON)
    rf:{takedowns}:creators   HASH creator index -> the same
    rf:{takedowns}:version    INCR on every change, in the same transaction

(one hash tag: the transaction's keys share one slot on a Redis Cluster)

A takedown is acknowledged only once Redis has it (one script, atomic), so it is never accepted and
lost; with Redis unreachable the admin call fails (503) and nothing changes. Replicas poll the
version (one GET) every `api.takedown_poll_s` and reload both hashes when it moved, so a takedown
reaches every replica within a poll; between polls, and while Redis is unreachable, a replica
keeps applying the set it holds. A restore (the undo) is the same write the other way.

    store = TakedownStore(async_client)
    await store.take_down("item", 50, reason="copyright claim", now=time.time())
    current = await store.load()          # TakedownSet(version, items, creators)
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal


from app.state._redis import REDIS_FAILURES
from app.state.errors import StoreUnavailable

Kind = Literal["item", "creator"]
KEYS: dict[str, str] = {"item": "rf:{takedowns}:items", "creator": "rf:{takedowns}:creators"}
VERSION_KEY = "rf:{takedowns}:version"

# KEYS: the kind's hash, the version; ARGV: index, record. Answers {added, version}.
_TAKE_DOWN = "return {redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]), redis.call('INCR', KEYS[2])}"
# KEYS: the kind's hash, the version; ARGV: index. Answers {removed, version}.
_RESTORE = "return {redis.call('HDEL', KEYS[1], ARGV[1]), redis.call('INCR', KEYS[2])}"
# KEYS: the version, the items' hash, the creators' hash.
_LOAD = "return {redis.call('GET', KEYS[1]), redis.call('HKEYS', KEYS[2]), redis.call('HKEYS', KEYS[3])}"


@dataclass(frozen=True)
class TakedownSet:
    """What one replica holds: every taken-down item and creator (models' indices), and the
    version it was read at (-1: never read)."""

    version: int = -1
    items: frozenset[int] = frozenset()
    creators: frozenset[int] = frozenset()

    @property
    def loaded(self) -> bool:
        return self.version >= 0


@dataclass(frozen=True)
class Takedown:
    kind: Kind
    index: int
    reason: str
    at: float
    external_id: object = None
    details: dict = field(default_factory=dict)


def _decode(raw) -> dict:
    return json.loads(raw.decode() if isinstance(raw, bytes) else raw)


class TakedownStore:
    """The takedown hashes over a redis.asyncio client; Redis errors become StoreUnavailable."""

    def __init__(self, client) -> None:
        self.client = client

    async def _run(self, what: str, script: str, script_keys: list[str], *args) -> list:
        """One script: atomic like MULTI, and on one slot (the keys share a hash tag)."""
        try:
            return await self.client.eval(script, len(script_keys), *script_keys, *args)
        except REDIS_FAILURES as exc:
            raise StoreUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc

    async def take_down(self, kind: Kind, index: int, reason: str, now: float, external_id: object = None) -> int:
        """Record the takedown (idempotent: a second one keeps the first's time); the new version."""
        record = json.dumps({"reason": reason, "at": now, "external_id": external_id})
        _, version = await self._run(f"take down {kind} {index}", _TAKE_DOWN, [KEYS[kind], VERSION_KEY], str(index), record)
        return int(version)

    async def restore(self, kind: Kind, index: int) -> tuple[bool, int]:
        """Undo a takedown: (whether there was one, the new version)."""
        removed, version = await self._run(f"restore {kind} {index}", _RESTORE, [KEYS[kind], VERSION_KEY], str(index))
        return bool(removed), int(version)

    async def version(self) -> int:
        try:
            raw = await self.client.get(VERSION_KEY)
        except REDIS_FAILURES as exc:
            raise StoreUnavailable(f"takedown version: {type(exc).__name__}: {exc}") from exc
        return int(raw) if raw is not None else 0

    async def load(self) -> TakedownSet:
        """Everything taken down, read at one version (one script: the version and both hashes together)."""
        version, items, creators = await self._run("takedowns load", _LOAD, [VERSION_KEY, KEYS["item"], KEYS["creator"]])
        return TakedownSet(int(version) if version is not None else 0,
                           frozenset(int(i) for i in items), frozenset(int(c) for c in creators))

    async def get(self, kind: Kind, index: int) -> Takedown | None:
        try:
            raw = await self.client.hget(KEYS[kind], str(index))
        except REDIS_FAILURES as exc:
            raise StoreUnavailable(f"takedown {kind} {index}: {type(exc).__name__}: {exc}") from exc
        if raw is None:
            return None
        fields = _decode(raw)
        return Takedown(kind, index, fields.get("reason", ""), float(fields.get("at", 0.0)), fields.get("external_id"))


class TakedownFollower:
    """One replica's view: refreshed from the store when its version moved; kept as it is while
    Redis is unreachable (the takedowns it holds still apply)."""

    def __init__(self) -> None:
        self.current = TakedownSet()

    async def refresh(self, store: TakedownStore) -> TakedownSet:
        """Reload when the version moved; raises StoreUnavailable (the held set stays)."""
        version = await store.version()
        if version != self.current.version:
            self.current = await store.load()
        return self.current
