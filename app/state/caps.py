"""Frequency caps: per ad and per advertiser per user per day, per category per session.

A cap counts reservations, not just impressions: an ad that wins an auction takes its place
under every cap at once (atomically), so concurrent requests can never together exceed a cap.
The collator's verdict then commits the reservation (the impression happened) or releases it
(the ad was not placed). A reservation nobody commits or releases keeps counting: the user
sees fewer ads, never more.

Every operation is idempotent per reservation id: reserving, committing or releasing the same id
twice has the effect of once.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import redis

from app.state import keys
from app.state._redis import as_str, is_cluster, unavailable_on_redis_error
from app.state.clock import day_index, seconds_to_day_end


class CapStatus(StrEnum):
    RESERVED = "R"
    COMMITTED = "C"
    RELEASED = "X"
    CAPPED = "F"  # a cap is full: nothing was counted
    UNKNOWN = "U"  # no such reservation (never made, or its record expired)


@dataclass(frozen=True)
class CapClaim:
    """One ad's claim on a user's caps. A limit of None means uncapped."""

    user_id: int
    ad_id: int
    advertiser_id: int
    category: str
    session_id: str
    ad_limit: int | None
    advertiser_limit: int | None
    category_limit: int | None


@dataclass(frozen=True)
class CapCounts:
    """Reserved-or-shown counts for one user, read in one round trip before the auction."""

    ad: dict[int, int]
    advertiser: dict[int, int]
    category: dict[str, int]


class CapStore(Protocol):
    def counts(
        self,
        user_id: int,
        session_id: str,
        ad_ids: Iterable[int],
        advertiser_ids: Iterable[int],
        categories: Iterable[str],
        now: float,
    ) -> CapCounts:
        """Current counts (a snapshot for filtering; `reserve` is the authoritative check)."""
        ...

    def reserve(self, reservation_id: str, claim: CapClaim, now: float) -> CapStatus:
        """Atomically check every cap of `claim` and count it under all of them, or none.

        Returns RESERVED, CAPPED, or the earlier outcome when the id was seen before."""
        ...

    def commit(self, reservation_id: str, now: float) -> CapStatus: ...

    def release(self, reservation_id: str, now: float) -> CapStatus: ...


def _limit_arg(limit: int | None) -> int:
    return -1 if limit is None else limit


class InMemoryCapStore:
    """The reference implementation: one process, one lock. Same contract as `RedisCapStore`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._ledger: dict[str, tuple[str, tuple[str, str, str]]] = {}

    @staticmethod
    def _keys(claim: CapClaim, now: float) -> tuple[str, str, str]:
        day = day_index(now)
        return (
            keys.ad_user_day(day, claim.user_id, claim.ad_id),
            keys.advertiser_user_day(day, claim.user_id, claim.advertiser_id),
            keys.session_category(claim.user_id, claim.session_id, claim.category),
        )

    def counts(self, user_id, session_id, ad_ids, advertiser_ids, categories, now) -> CapCounts:
        day = day_index(now)
        with self._lock:
            return CapCounts(
                ad={a: self._counts.get(keys.ad_user_day(day, user_id, a), 0) for a in ad_ids},
                advertiser={a: self._counts.get(keys.advertiser_user_day(day, user_id, a), 0) for a in advertiser_ids},
                category={c: self._counts.get(keys.session_category(user_id, session_id, c), 0) for c in categories},
            )

    def reserve(self, reservation_id: str, claim: CapClaim, now: float) -> CapStatus:
        cap_keys = self._keys(claim, now)
        limits = (claim.ad_limit, claim.advertiser_limit, claim.category_limit)
        with self._lock:
            if reservation_id in self._ledger:
                return CapStatus(self._ledger[reservation_id][0])
            if any(limit is not None and self._counts.get(k, 0) >= limit for k, limit in zip(cap_keys, limits)):
                return CapStatus.CAPPED
            for k in cap_keys:
                self._counts[k] = self._counts.get(k, 0) + 1
            self._ledger[reservation_id] = (CapStatus.RESERVED.value, cap_keys)
            return CapStatus.RESERVED

    def commit(self, reservation_id: str, now: float) -> CapStatus:
        with self._lock:
            if reservation_id not in self._ledger:
                return CapStatus.UNKNOWN
            state, cap_keys = self._ledger[reservation_id]
            if state == CapStatus.RESERVED:
                self._ledger[reservation_id] = (CapStatus.COMMITTED.value, cap_keys)
                return CapStatus.COMMITTED
            return CapStatus(state)

    def release(self, reservation_id: str, now: float) -> CapStatus:
        with self._lock:
            if reservation_id not in self._ledger:
                return CapStatus.UNKNOWN
            state, cap_keys = self._ledger[reservation_id]
            if state != CapStatus.RESERVED:
                return CapStatus(state)
            for k in cap_keys:
                self._counts[k] = max(0, self._counts.get(k, 0) - 1)
            self._ledger[reservation_id] = (CapStatus.RELEASED.value, cap_keys)
            return CapStatus.RELEASED


# Each step is a Lua function of (KEYS, ARGV): the store's scripts call one once, and
# app/state/reservations.py calls them for every ad of a page in one script. Every key of a
# step but the owner pointer shares the user's hash slot (app/state/keys.py).

# KEYS: ad counter, advertiser counter, category counter, ledger, and the owner pointer when it is
# written in the same step (one server; on a Redis Cluster it hashes elsewhere and is written
# just before). ARGV: ad limit, advertiser limit, category limit (-1 = none), day ttl, session
# ttl, ledger ttl, user id.
RESERVE_LUA = """
local function cap_reserve(KEYS, ARGV)
  local state = redis.call('HGET', KEYS[4], 'state')
  if state then return state end
  for i = 1, 3 do
    local limit = tonumber(ARGV[i])
    if limit >= 0 and tonumber(redis.call('GET', KEYS[i]) or '0') >= limit then return 'F' end
  end
  local ttls = {ARGV[4], ARGV[4], ARGV[5]}
  for i = 1, 3 do
    redis.call('INCR', KEYS[i])
    redis.call('EXPIRE', KEYS[i], ttls[i])
  end
  redis.call('HSET', KEYS[4], 'state', 'R', 'k1', KEYS[1], 'k2', KEYS[2], 'k3', KEYS[3])
  redis.call('EXPIRE', KEYS[4], ARGV[6])
  if KEYS[5] then redis.call('SET', KEYS[5], ARGV[7], 'NX', 'EX', ARGV[6]) end
  return 'R'
end
"""

# KEYS: ledger
_COMMIT = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'U' end
if state == 'R' then
  redis.call('HSET', KEYS[1], 'state', 'C')
  return 'C'
end
return state
"""

# KEYS: ledger, then the three counters it names (read by the caller just before).
# Returns an error reply (a table) when the ledger names other counters.
RELEASE_LUA = """
local function cap_release(KEYS, ARGV)
  local state = redis.call('HGET', KEYS[1], 'state')
  if not state then return 'U' end
  if state ~= 'R' then return state end
  for i = 2, 4 do
    if redis.call('HGET', KEYS[1], 'k' .. (i - 1)) ~= KEYS[i] then return redis.error_reply('cap ledger keys changed') end
  end
  for i = 2, 4 do
    if tonumber(redis.call('GET', KEYS[i]) or '0') > 0 then redis.call('DECR', KEYS[i]) end
  end
  redis.call('HSET', KEYS[1], 'state', 'X')
  return 'X'
end
"""

_RESERVE = RESERVE_LUA + "return cap_reserve(KEYS, ARGV)\n"
_RELEASE = RELEASE_LUA + "return cap_release(KEYS, ARGV)\n"

LEDGER_FIELDS = ("k1", "k2", "k3")


def count_keys(
    user_id: int, session_id: str, ad_ids: list[int], advertiser_ids: list[int], categories: list[str], now: float
) -> list[str]:
    """The counters `counts` reads, in the order `counts_from` expects their values."""
    day = day_index(now)
    return (
        [keys.ad_user_day(day, user_id, a) for a in ad_ids]
        + [keys.advertiser_user_day(day, user_id, a) for a in advertiser_ids]
        + [keys.session_category(user_id, session_id, c) for c in categories]
    )


def counts_from(values: list, ad_ids: list[int], advertiser_ids: list[int], categories: list[str]) -> CapCounts:
    counts = [int(v) if v is not None else 0 for v in values]
    n_ad, n_adv = len(ad_ids), len(advertiser_ids)
    return CapCounts(
        ad=dict(zip(ad_ids, counts[:n_ad])),
        advertiser=dict(zip(advertiser_ids, counts[n_ad : n_ad + n_adv])),
        category=dict(zip(categories, counts[n_ad + n_adv :])),
    )


class RedisCapStore:
    """Caps in Redis: each check-and-increment is one Lua script, TTLs set in the same step.

    Day counters expire `key_grace_s` after their day ends; session counters `session_ttl_s`
    after their last increment; a reservation's ledger lives as long as its day counters.
    A reservation is found by id through its owner pointer (the user id): on one server the
    reserve script writes it, on a Redis Cluster (another slot) a SET NX just before does, so a
    hold is never unreachable. Every Redis failure raises `StoreUnavailable`.
    """

    def __init__(self, client: redis.Redis, session_ttl_s: int, key_grace_s: int) -> None:
        self._client = client
        self._session_ttl_s = session_ttl_s
        self._key_grace_s = key_grace_s
        self.split_owner = is_cluster(client)  # the owner pointer is its own step
        self._reserve = client.register_script(_RESERVE)
        self._commit = client.register_script(_COMMIT)
        self._release = client.register_script(_RELEASE)

    def _day_ttl(self, now: float) -> int:
        return int(seconds_to_day_end(now)) + 1 + self._key_grace_s

    @property
    def client(self) -> redis.Redis:
        return self._client

    def counts(self, user_id, session_id, ad_ids, advertiser_ids, categories, now) -> CapCounts:
        ad_ids, advertiser_ids, categories = list(ad_ids), list(advertiser_ids), list(categories)
        names = count_keys(user_id, session_id, ad_ids, advertiser_ids, categories, now)
        if not names:
            return CapCounts({}, {}, {})
        with unavailable_on_redis_error("reading frequency caps"):
            values = self._client.mget(names)  # one user's counters: one slot
        return counts_from(values, ad_ids, advertiser_ids, categories)

    def reserve_call(self, reservation_id: str, claim: CapClaim, now: float, with_owner: bool = True
                     ) -> tuple[list[str], list[object]]:
        """KEYS and ARGV of `cap_reserve` for one claim; `with_owner=False` leaves the owner
        pointer to `write_owner` (a Redis Cluster)."""
        day = day_index(now)
        cap_keys = [
            keys.ad_user_day(day, claim.user_id, claim.ad_id),
            keys.advertiser_user_day(day, claim.user_id, claim.advertiser_id),
            keys.session_category(claim.user_id, claim.session_id, claim.category),
            keys.cap_ledger(claim.user_id, reservation_id),
        ]
        if with_owner:
            cap_keys.append(keys.cap_owner(reservation_id))
        args: list[object] = [
            _limit_arg(claim.ad_limit),
            _limit_arg(claim.advertiser_limit),
            _limit_arg(claim.category_limit),
            self._day_ttl(now),
            self._session_ttl_s,
            self.ledger_ttl(now),
            claim.user_id,
        ]
        return cap_keys, args

    def ledger_ttl(self, now: float) -> int:
        return max(self._day_ttl(now), self._session_ttl_s)

    def write_owner(self, pipe, reservation_id: str, claim: CapClaim, now: float) -> None:
        """Queue the owner pointer's SET NX on `pipe` (first writer wins: it never moves)."""
        pipe.set(keys.cap_owner(reservation_id), claim.user_id, nx=True, ex=self.ledger_ttl(now))

    def reserve(self, reservation_id: str, claim: CapClaim, now: float) -> CapStatus:
        cap_keys, args = self.reserve_call(reservation_id, claim, now, with_owner=not self.split_owner)
        with unavailable_on_redis_error("reserving frequency caps"):
            if self.split_owner:
                self.write_owner(self._client, reservation_id, claim, now)
            return CapStatus(as_str(self._reserve(keys=cap_keys, args=args)))

    def ledger_of(self, reservation_id: str) -> str | None:
        """The ledger key of a reservation (None: no owner recorded, so none was held)."""
        user = as_str(self._client.get(keys.cap_owner(reservation_id)))
        return None if user is None else keys.cap_ledger(int(user), reservation_id)

    def commit(self, reservation_id: str, now: float) -> CapStatus:
        with unavailable_on_redis_error("committing frequency caps"):
            ledger = self.ledger_of(reservation_id)
            if ledger is None:
                return CapStatus.UNKNOWN
            return CapStatus(as_str(self._commit(keys=[ledger])))

    def release(self, reservation_id: str, now: float) -> CapStatus:
        with unavailable_on_redis_error("releasing frequency caps"):
            ledger = self.ledger_of(reservation_id)
            if ledger is None:
                return CapStatus.UNKNOWN
            counters = self._client.hmget(ledger, list(LEDGER_FIELDS))
            if any(c is None for c in counters):
                return CapStatus.UNKNOWN
            return CapStatus(as_str(self._release(keys=[ledger, *(as_str(c) for c in counters)])))
