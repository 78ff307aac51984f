"""A page's ads against caps and budgets together: read both, hold every winner, release the rest.

The ad server touches caps and budgets three times per request: a snapshot before eligibility,
a hold for each auction winner, and a release of the winners the collator did not place. Each
hold is the two stores' steps in order: reserve the user's caps, then the campaign's budget,
and give the caps back when the budget has no room. Holds run in auction order, so a winner
sees the caps and budgets its predecessors took (or gave back).

`StoreReservations` does exactly that through the `CapStore` and `BudgetStore` protocols: the
reference, for any pair of stores. `RedisReservations` runs the same Lua steps (the stores'
own script functions) for every winner in ONE script call, reads the snapshot in one pipeline
and releases in two round trips, instead of two round trips per winner and four per release.
Both fail with `StoreUnavailable`; after a failed `reserve` any of the ids may hold something,
so the caller releases them all.

Example:
    reservations = RedisReservations(RedisCapStore(client, ...), RedisBudgetStore(client, ...))
    counts, budgets = reservations.snapshot(user_id, session_id, ad_ids, advertiser_ids, categories, daily, now)
    outcomes = reservations.reserve([AdReservation("r-1:7", claim, campaign_id=3, amount=0.02, daily_budget=50.0)], now)
    reservations.release(["r-1:7"], now)
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from app.state import keys
from app.state._redis import as_str, unavailable_on_redis_error
from app.state.budgets import (
    RELEASE_LUA as BUDGET_RELEASE_LUA,
    RESERVE_LUA as BUDGET_RESERVE_LUA,
    BudgetState,
    BudgetStatus,
    BudgetStore,
    RedisBudgetStore,
    snapshot_keys,
    states_from,
)
from app.state.caps import (
    LEDGER_FIELDS,
    RELEASE_LUA as CAP_RELEASE_LUA,
    RESERVE_LUA as CAP_RESERVE_LUA,
    CapClaim,
    CapCounts,
    CapStatus,
    CapStore,
    RedisCapStore,
    count_keys,
    counts_from,
)
from app.state.errors import StoreUnavailable

_HELD_CAP = (CapStatus.RESERVED, CapStatus.COMMITTED)  # a repeated id finds its own hold
_HELD_BUDGET = (BudgetStatus.RESERVED, BudgetStatus.COMMITTED)


@dataclass(frozen=True)
class AdReservation:
    """One winner's claim: its caps and `amount` (the price) against its campaign's day."""

    reservation_id: str
    claim: CapClaim
    campaign_id: int
    amount: float
    daily_budget: float


@dataclass(frozen=True)
class ReservationOutcome:
    """What a hold found. `budget` is None when the caps were not held (no budget was tried)."""

    cap: CapStatus
    budget: BudgetStatus | None = None

    @property
    def caps_held(self) -> bool:
        return self.cap in _HELD_CAP

    @property
    def held(self) -> bool:
        return self.caps_held and self.budget in _HELD_BUDGET


class ReservationStore(Protocol):
    def snapshot(
        self,
        user_id: int,
        session_id: str,
        ad_ids: Iterable[int],
        advertiser_ids: Iterable[int],
        categories: Iterable[str],
        daily_budgets: Mapping[int, float],
        now: float,
    ) -> tuple[CapCounts, dict[int, BudgetState]]:
        """`CapStore.counts` and `BudgetStore.snapshot` together."""
        ...

    def reserve(self, reservations: Sequence[AdReservation], now: float) -> list[ReservationOutcome]:
        """Hold each in order: caps, then budget, caps given back when the budget is not held.
        Idempotent per reservation id."""
        ...

    def release(self, reservation_ids: Sequence[str], now: float) -> None:
        """Free each id's budget, then its caps (committed holds stay). Idempotent. Raises
        `StoreUnavailable` when some could not be released (budgets expire, caps keep counting)."""
        ...


class StoreReservations:
    """The reference: each step through the store protocols, one reservation at a time."""

    def __init__(self, caps: CapStore, budgets: BudgetStore) -> None:
        self.caps = caps
        self.budgets = budgets

    def snapshot(self, user_id, session_id, ad_ids, advertiser_ids, categories, daily_budgets, now):
        counts = self.caps.counts(user_id, session_id, ad_ids, advertiser_ids, categories, now)
        return counts, self.budgets.snapshot(daily_budgets, now)

    def reserve(self, reservations: Sequence[AdReservation], now: float) -> list[ReservationOutcome]:
        outcomes = []
        for r in reservations:
            cap = self.caps.reserve(r.reservation_id, r.claim, now)
            if cap not in _HELD_CAP:
                outcomes.append(ReservationOutcome(cap))
                continue
            budget = self.budgets.reserve(r.reservation_id, r.campaign_id, r.amount, r.daily_budget, now)
            if budget not in _HELD_BUDGET:
                self.caps.release(r.reservation_id, now)
            outcomes.append(ReservationOutcome(cap, budget))
        return outcomes

    def release(self, reservation_ids: Sequence[str], now: float) -> None:
        failure: StoreUnavailable | None = None
        for rid in reservation_ids:
            for store in (self.budgets, self.caps):
                try:
                    store.release(rid, now)
                except StoreUnavailable as exc:  # try the rest, then report the first
                    failure = failure or exc
        if failure is not None:
            raise failure


# KEYS: the cap counters of `count_keys`, then the budget hashes of `snapshot_keys`.
# ARGV: how many cap counters. One string answers all (a reply per value costs more to parse):
# the counters, then each budget's spent and reserved, comma-separated, '' for a missing one.
_SNAPSHOT = """
local n, out = tonumber(ARGV[1]), {}
for i = 1, n do out[#out + 1] = redis.call('GET', KEYS[i]) or '' end
for i = n + 1, #KEYS do
  local row = redis.call('HMGET', KEYS[i], 'spent', 'reserved')
  out[#out + 1] = row[1] or ''
  out[#out + 1] = row[2] or ''
end
return table.concat(out, ',')
"""

# KEYS: per reservation, the 4 of cap_reserve then the 4 of budget_reserve.
# ARGV: per reservation, the 6 of cap_reserve then the 8 of budget_reserve.
# Returns per reservation: the cap status, then the budget status when one was tried. It stops
# after a reservation answered with a trailing '?': its caps must be given back but its ledger
# names the counters of another day or session (a replayed id), which the script was not given;
# the caller releases them through the store, then holds the rest, so the order stays exact.
_RESERVE = CAP_RESERVE_LUA + CAP_RELEASE_LUA + BUDGET_RESERVE_LUA + """
local out = {}
for h = 0, #KEYS / 8 - 1 do
  local k, a = h * 8, h * 14
  local cap_keys = {unpack(KEYS, k + 1, k + 4)}
  local cap = cap_reserve(cap_keys, {unpack(ARGV, a + 1, a + 6)})
  local budget = ''
  if cap == 'R' or cap == 'C' then
    budget = budget_reserve({unpack(KEYS, k + 5, k + 8)}, {unpack(ARGV, a + 7, a + 14)})
    if budget ~= 'R' and budget ~= 'C' then
      local released = cap_release({cap_keys[4], cap_keys[1], cap_keys[2], cap_keys[3]}, {})
      if type(released) == 'table' then
        out[#out + 1] = cap .. budget .. '?'
        return out
      end
    end
  end
  out[#out + 1] = cap .. budget
end
return out
"""

# ARGV: per reservation, its id, how many budget keys (0 or 3) and cap keys (0 or 4) follow in
# KEYS for it: budget_release's, then cap_release's. Returns per reservation the budget status
# and the cap status ('?': the ledger's counters changed since they were read).
_RELEASE = CAP_RELEASE_LUA + BUDGET_RELEASE_LUA + """
local k, out = 0, {}
for a = 1, #ARGV, 3 do
  local rid, nb, nc = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local budget, cap = 'U', 'U'
  if nb > 0 then budget = budget_release({unpack(KEYS, k + 1, k + nb)}, {rid}) end
  k = k + nb
  if nc > 0 then
    cap = cap_release({unpack(KEYS, k + 1, k + nc)}, {})
    if type(cap) == 'table' then cap = '?' end
  end
  k = k + nc
  out[#out + 1] = budget .. cap
end
return out
"""


class RedisReservations:
    """The same steps over the Redis stores, batched: one round trip to hold a page's winners.

    Each reservation stays atomic (the whole batch is: one script); the stores' own scripts
    and this one share their Lua functions, so a hold here equals `StoreReservations`' hold.
    """

    def __init__(self, caps: RedisCapStore, budgets: RedisBudgetStore) -> None:
        if caps.client is not budgets.client:
            raise ValueError("caps and budgets must share one Redis client: one script touches both")
        self.caps = caps
        self.budgets = budgets
        self._client = caps.client
        self._snapshot = self._client.register_script(_SNAPSHOT)
        self._reserve = self._client.register_script(_RESERVE)
        self._release = self._client.register_script(_RELEASE)

    def snapshot(self, user_id, session_id, ad_ids, advertiser_ids, categories, daily_budgets, now):
        ad_ids, advertiser_ids, categories = list(ad_ids), list(advertiser_ids), list(categories)
        cap_names = count_keys(user_id, session_id, ad_ids, advertiser_ids, categories, now)
        budget_names = snapshot_keys(list(daily_budgets), now)
        if not cap_names and not budget_names:
            return CapCounts({}, {}, {}), {}
        with unavailable_on_redis_error("reading frequency caps and budgets"):
            reply = as_str(self._snapshot(keys=cap_names + budget_names, args=[len(cap_names)]))
        values = [v or None for v in reply.split(",")]
        n = len(cap_names)
        rows = list(zip(values[n::2], values[n + 1::2]))
        return counts_from(values[:n], ad_ids, advertiser_ids, categories), states_from(rows, daily_budgets)

    def reserve(self, reservations: Sequence[AdReservation], now: float) -> list[ReservationOutcome]:
        outcomes: list[ReservationOutcome] = []
        pending = list(reservations)
        while pending:  # one pass, unless a replayed id's caps must be released in between
            replies = self._reserve_in_order(pending, now)
            for r, reply in zip(pending, replies):
                if reply.endswith("?"):
                    self.caps.release(r.reservation_id, now)
                outcomes.append(ReservationOutcome(CapStatus(reply[0]), BudgetStatus(reply[1]) if len(reply) > 1 else None))
            pending = pending[len(replies):]
        return outcomes

    def _reserve_in_order(self, reservations: list[AdReservation], now: float) -> list[str]:
        script_keys: list[str] = []
        args: list[object] = []
        for r in reservations:
            cap_keys, cap_args = self.caps.reserve_call(r.reservation_id, r.claim, now)
            budget_keys, budget_args = self.budgets.reserve_call(
                r.reservation_id, r.campaign_id, r.amount, r.daily_budget, now
            )
            script_keys += cap_keys + budget_keys
            args += cap_args + budget_args
        with unavailable_on_redis_error("reserving frequency caps and budgets"):
            return [as_str(v) for v in self._reserve(keys=script_keys, args=args)]

    def release(self, reservation_ids: Sequence[str], now: float) -> None:
        if not reservation_ids:
            return
        with unavailable_on_redis_error("releasing frequency caps and budgets"):
            pipe = self._client.pipeline(transaction=False)
            for rid in reservation_ids:
                pipe.get(keys.budget_reservation_owner(rid))
                pipe.hmget(keys.cap_ledger(rid), list(LEDGER_FIELDS))
            replies = pipe.execute()
            script_keys: list[str] = []
            args: list[object] = []
            for i, rid in enumerate(reservation_ids):
                owner, counters = as_str(replies[2 * i]), replies[2 * i + 1]
                budget_keys = [] if owner is None else RedisBudgetStore.owner_keys(owner)
                cap_keys = [] if any(c is None for c in counters) else [keys.cap_ledger(rid), *(as_str(c) for c in counters)]
                script_keys += budget_keys + cap_keys
                args += [rid, len(budget_keys), len(cap_keys)]
            if not script_keys:
                return
            replies = [as_str(v) for v in self._release(keys=script_keys, args=args)]
        for rid, reply in zip(reservation_ids, replies):
            if reply.endswith("?"):
                self.caps.release(rid, now)
