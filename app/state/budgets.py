"""Daily campaign budgets: reserve at auction, commit on impression, release on loss.

Money is kept in integer micro-units. A reservation holds `amount` against the campaign's
budget for the day until it is committed (it becomes spend) or released (it is freed). The
invariant `spent + reserved <= budget` holds after every operation, so no interleaving of
requests can overspend. A reservation that is neither committed nor released within its TTL is
reclaimed by the next reservation on that campaign (so a crashed request cannot strand
budget); a commit that arrives after that is still charged if the budget has room, else not.

Every operation is idempotent per reservation id.
"""
from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import redis

from app.state import keys
from app.state._redis import MICROS, as_str, is_cluster, to_micros_down, to_micros_up, unavailable_on_redis_error
from app.state.clock import day_index, seconds_to_day_end

# Reclaiming stale reservations is bounded per call so one reserve never does unbounded work.
_RECLAIM_BATCH = 64
SNAPSHOT_FIELDS = ["spent", "reserved"]


class BudgetStatus(StrEnum):
    RESERVED = "R"
    COMMITTED = "C"
    RELEASED = "X"
    EXPIRED = "E"  # reclaimed before commit/release, and a late commit found no room
    INSUFFICIENT = "I"  # the budget has no room: nothing was reserved
    UNKNOWN = "U"


@dataclass(frozen=True)
class BudgetState:
    """A campaign's day in currency units."""

    budget: float
    spent: float
    reserved: float

    @property
    def remaining(self) -> float:
        return max(0.0, self.budget - self.spent - self.reserved)


class BudgetStore(Protocol):
    def snapshot(self, daily_budgets: Mapping[int, float], now: float) -> dict[int, BudgetState]:
        """Today's state of each campaign (a read for pacing and filtering)."""
        ...

    def reserve(
        self, reservation_id: str, campaign_id: int, amount: float, daily_budget: float, now: float
    ) -> BudgetStatus:
        """Atomically hold `amount` if `spent + reserved + amount <= daily_budget`.

        Returns RESERVED, INSUFFICIENT, or the earlier outcome when the id was seen before."""
        ...

    def commit(self, reservation_id: str, now: float) -> BudgetStatus: ...

    def release(self, reservation_id: str, now: float) -> BudgetStatus: ...


def _state(budget: int, spent: int, reserved: int) -> BudgetState:
    return BudgetState(budget / MICROS, spent / MICROS, reserved / MICROS)


@dataclass
class _Day:
    budget: int = 0
    spent: int = 0
    reserved: int = 0


class InMemoryBudgetStore:
    """The reference implementation: one process, one lock. Same contract as `RedisBudgetStore`."""

    def __init__(self, reservation_ttl_s: float) -> None:
        self._ttl = reservation_ttl_s
        self._lock = threading.Lock()
        self._days: dict[tuple[int, int], _Day] = {}
        self._ledger: dict[str, tuple[tuple[int, int], str, int]] = {}  # id -> (campaign day, state, amount)
        self._pending: dict[str, float] = {}  # id -> expires at

    def snapshot(self, daily_budgets: Mapping[int, float], now: float) -> dict[int, BudgetState]:
        day = day_index(now)
        with self._lock:
            out = {}
            for campaign_id, budget in daily_budgets.items():
                d = self._days.get((campaign_id, day), _Day())
                out[campaign_id] = _state(to_micros_down(budget), d.spent, d.reserved)
            return out

    def _reclaim(self, key: tuple[int, int], now: float) -> None:
        stale = sorted(
            (expires, rid) for rid, expires in self._pending.items()
            if expires <= now and self._ledger[rid][0] == key
        )[:_RECLAIM_BATCH]
        for _, rid in stale:
            _, _, amount = self._ledger[rid]
            self._days[key].reserved -= amount
            self._ledger[rid] = (key, BudgetStatus.EXPIRED.value, amount)
            del self._pending[rid]

    def reserve(self, reservation_id, campaign_id, amount, daily_budget, now) -> BudgetStatus:
        key = (campaign_id, day_index(now))
        micros, budget = to_micros_up(amount), to_micros_down(daily_budget)
        with self._lock:
            d = self._days.setdefault(key, _Day())
            self._reclaim(key, now)
            if reservation_id in self._ledger:
                return BudgetStatus(self._ledger[reservation_id][1])
            d.budget = budget
            if d.spent + d.reserved + micros > budget:
                return BudgetStatus.INSUFFICIENT
            d.reserved += micros
            self._ledger[reservation_id] = (key, BudgetStatus.RESERVED.value, micros)
            self._pending[reservation_id] = now + self._ttl
            return BudgetStatus.RESERVED

    def commit(self, reservation_id: str, now: float) -> BudgetStatus:
        with self._lock:
            if reservation_id not in self._ledger:
                return BudgetStatus.UNKNOWN
            key, state, amount = self._ledger[reservation_id]
            d = self._days[key]
            if state == BudgetStatus.RESERVED:
                d.reserved -= amount
            elif state != BudgetStatus.EXPIRED or d.spent + d.reserved + amount > d.budget:
                return BudgetStatus(state)
            d.spent += amount
            self._ledger[reservation_id] = (key, BudgetStatus.COMMITTED.value, amount)
            self._pending.pop(reservation_id, None)
            return BudgetStatus.COMMITTED

    def release(self, reservation_id: str, now: float) -> BudgetStatus:
        with self._lock:
            if reservation_id not in self._ledger:
                return BudgetStatus.UNKNOWN
            key, state, amount = self._ledger[reservation_id]
            if state != BudgetStatus.RESERVED:
                return BudgetStatus(state)
            self._days[key].reserved -= amount
            self._ledger[reservation_id] = (key, BudgetStatus.RELEASED.value, amount)
            del self._pending[reservation_id]
            return BudgetStatus.RELEASED


# Each step is a Lua function of (KEYS, ARGV): the store's scripts call one once, and
# app/state/reservations.py calls them for every ad of a page in one script.

# KEYS: budget hash, ledger hash, pending zset (one campaign: one slot), and the owner string when
# it is written in the same step (one server; on a Redis Cluster it hashes elsewhere and is
# written just before, SET NX). ARGV: reservation id, amount, budget, now, expires at, key ttl, owner value, reclaim batch
RESERVE_LUA = """
local function budget_reserve(KEYS, ARGV)
  local rid, amount, budget = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
  local stale = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[4], 'LIMIT', 0, tonumber(ARGV[8]))
  for _, id in ipairs(stale) do
    local entry = redis.call('HGET', KEYS[2], id)
    if entry and string.sub(entry, 1, 1) == 'R' then
      local held = string.sub(entry, 3)
      redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(held))
      redis.call('HSET', KEYS[2], id, 'E|' .. held)
    end
    redis.call('ZREM', KEYS[3], id)
  end
  local prior = redis.call('HGET', KEYS[2], rid)
  if prior then return string.sub(prior, 1, 1) end
  redis.call('HSET', KEYS[1], 'budget', ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[6])
  local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
  local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
  if spent + reserved + amount > budget then return 'I' end
  redis.call('HINCRBY', KEYS[1], 'reserved', amount)
  redis.call('HSET', KEYS[2], rid, 'R|' .. ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[6])
  redis.call('ZADD', KEYS[3], ARGV[5], rid)
  redis.call('EXPIRE', KEYS[3], ARGV[6])
  if KEYS[4] then redis.call('SET', KEYS[4], ARGV[7], 'EX', ARGV[6]) end
  return 'R'
end
"""

# KEYS: budget hash, ledger hash, pending zset; ARGV: reservation id
_COMMIT = """
local entry = redis.call('HGET', KEYS[2], ARGV[1])
if not entry then return 'U' end
local state, held = string.sub(entry, 1, 1), string.sub(entry, 3)
local amount = tonumber(held)
if state == 'R' then
  redis.call('HINCRBY', KEYS[1], 'reserved', -amount)
elseif state == 'E' then
  local b = redis.call('HMGET', KEYS[1], 'budget', 'spent', 'reserved')
  if tonumber(b[2] or '0') + tonumber(b[3] or '0') + amount > tonumber(b[1]) then return 'E' end
else
  return state
end
redis.call('HINCRBY', KEYS[1], 'spent', amount)
redis.call('HSET', KEYS[2], ARGV[1], 'C|' .. held)
redis.call('ZREM', KEYS[3], ARGV[1])
return 'C'
"""

# KEYS: budget hash, ledger hash, pending zset; ARGV: reservation id
RELEASE_LUA = """
local function budget_release(KEYS, ARGV)
  local entry = redis.call('HGET', KEYS[2], ARGV[1])
  if not entry then return 'U' end
  local state, held = string.sub(entry, 1, 1), string.sub(entry, 3)
  if state ~= 'R' then return state end
  redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(held))
  redis.call('HSET', KEYS[2], ARGV[1], 'X|' .. held)
  redis.call('ZREM', KEYS[3], ARGV[1])
  return 'X'
end
"""

_RESERVE = RESERVE_LUA + "return budget_reserve(KEYS, ARGV)\n"
_RELEASE = RELEASE_LUA + "return budget_release(KEYS, ARGV)\n"


def snapshot_keys(campaign_ids: list[int], now: float) -> list[str]:
    """The budget hashes `snapshot` reads (fields spent, reserved), one per campaign."""
    day = day_index(now)
    return [keys.budget(campaign_id, day) for campaign_id in campaign_ids]


def states_from(rows: list, daily_budgets: Mapping[int, float]) -> dict[int, BudgetState]:
    """`snapshot`'s answer from the (spent, reserved) rows of `snapshot_keys`, in order."""
    return {
        campaign_id: _state(to_micros_down(budget), int(spent or 0), int(reserved or 0))
        for (campaign_id, budget), (spent, reserved) in zip(daily_budgets.items(), rows)
    }


class RedisBudgetStore:
    """Budgets in Redis: each step is one Lua script; keys get their TTL in that same script.

    Keys of a campaign's day expire `key_grace_s` after the day ends. Pending reservations are
    scored by the injected clock, so tests move time without sleeping. A reservation is found
    by id through its owner string ('campaign:day'): written by the reserve script on one server,
    by a SET NX just before it on a Redis Cluster (another slot). Every Redis failure raises
    `StoreUnavailable`.
    """

    def __init__(self, client: redis.Redis, reservation_ttl_s: float, key_grace_s: int) -> None:
        self._client = client
        self._ttl = reservation_ttl_s
        self._key_grace_s = key_grace_s
        self.split_owner = is_cluster(client)  # the owner string is its own step
        self._reserve = client.register_script(_RESERVE)
        self._commit = client.register_script(_COMMIT)
        self._release = client.register_script(_RELEASE)

    @staticmethod
    def campaign_keys(campaign_id: int, day: int) -> list[str]:
        return [keys.budget(campaign_id, day), keys.budget_ledger(campaign_id, day), keys.budget_pending(campaign_id, day)]

    @property
    def client(self) -> redis.Redis:
        return self._client

    def snapshot(self, daily_budgets: Mapping[int, float], now: float) -> dict[int, BudgetState]:
        names = snapshot_keys(list(daily_budgets), now)
        with unavailable_on_redis_error("reading budgets"):
            pipe = self._client.pipeline(transaction=False)
            for name in names:
                pipe.hmget(name, SNAPSHOT_FIELDS)
            rows = pipe.execute() if names else []
        return states_from(rows, daily_budgets)

    def _key_ttl(self, now: float) -> int:
        return int(seconds_to_day_end(now)) + 1 + self._key_grace_s

    def reserve_call(self, reservation_id: str, campaign_id: int, amount: float, daily_budget: float, now: float,
                     with_owner: bool = True) -> tuple[list[str], list[object]]:
        """KEYS and ARGV of `budget_reserve` for one reservation; `with_owner=False` leaves the
        owner string to `write_owner` (a Redis Cluster)."""
        day = day_index(now)
        key_ttl = self._key_ttl(now)
        args: list[object] = [
            reservation_id,
            to_micros_up(amount),
            to_micros_down(daily_budget),
            repr(float(now)),
            repr(float(now + self._ttl)),
            key_ttl,
            f"{campaign_id}:{day}",
            _RECLAIM_BATCH,
        ]
        owner = [keys.budget_reservation_owner(reservation_id)] if with_owner else []
        return [*self.campaign_keys(campaign_id, day), *owner], args

    def write_owner(self, pipe, reservation_id: str, campaign_id: int, now: float) -> None:
        """Queue the owner string's SET NX on `pipe` (first writer wins: it never moves)."""
        pipe.set(keys.budget_reservation_owner(reservation_id), f"{campaign_id}:{day_index(now)}", nx=True,
                 ex=self._key_ttl(now))

    def reserve(self, reservation_id, campaign_id, amount, daily_budget, now) -> BudgetStatus:
        script_keys, args = self.reserve_call(reservation_id, campaign_id, amount, daily_budget, now,
                                              with_owner=not self.split_owner)
        with unavailable_on_redis_error("reserving budget"):
            if self.split_owner:
                self.write_owner(self._client, reservation_id, campaign_id, now)
            return BudgetStatus(as_str(self._reserve(keys=script_keys, args=args)))

    @staticmethod
    def owner_keys(owner: str) -> list[str]:
        """KEYS of `budget_release` for a reservation whose owner string is `owner`."""
        campaign_id, day = (int(x) for x in owner.split(":"))
        return RedisBudgetStore.campaign_keys(campaign_id, day)

    def _settle(self, script, reservation_id: str, what: str) -> BudgetStatus:
        with unavailable_on_redis_error(what):
            owner = as_str(self._client.get(keys.budget_reservation_owner(reservation_id)))
            if owner is None:
                return BudgetStatus.UNKNOWN
            return BudgetStatus(as_str(script(keys=self.owner_keys(owner), args=[reservation_id])))

    def commit(self, reservation_id: str, now: float) -> BudgetStatus:
        return self._settle(self._commit, reservation_id, "committing budget")

    def release(self, reservation_id: str, now: float) -> BudgetStatus:
        return self._settle(self._release, reservation_id, "releasing budget")
