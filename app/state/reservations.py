"""A page's ads against caps and budgets together: read both, hold every winner, release the rest.

The ad server touches caps and budgets three times per request: a snapshot before eligibility,
a hold for each auction winner, and a release of the winners the collator did not place. Each
hold is the two stores' steps in order: reserve the user's caps, then the campaign's budget,
and give the caps back when the budget has no room. Holds run in auction order, so a winner
sees the caps and budgets its predecessors took (or gave back).

`StoreReservations` does exactly that through the `CapStore` and `BudgetStore` protocols: the
reference, for any pair of stores. `RedisReservations` runs the same Lua steps (the stores'
own script functions), batched, and answers exactly what the reference answers:

- on one redis-server, every winner in ONE script call (caps and budgets of any keys), the
  snapshot in one script and releases in two round trips;
- on a Redis Cluster, where a script may touch one hash slot only, in single-slot steps: the
  owner pointers (SET NX, so a hold is always found by id), the user's caps for the page (one
  script: the user's slot), the budgets of the winners whose caps were held (one script per
  campaign, in auction order, pipelined), and the caps of a winner whose budget had no room
  given back. The caps step stops at a full cap met after a hold: that hold may yet be given
  back, and the winner after it must then see the room it leaves, as in the reference.

Both fail with `StoreUnavailable`; after a failed `reserve` any of the ids may hold something,
so the caller releases them all.

Example:
    reservations = RedisReservations(RedisCapStore(client, ...), RedisBudgetStore(client, ...))
    counts, budgets = reservations.snapshot(user_id, session_id, ad_ids, advertiser_ids, categories, daily, now)
    outcomes = reservations.reserve([AdReservation("r-1:7", claim, campaign_id=3, amount=0.02, daily_budget=50.0)], now)
    reservations.release(["r-1:7"], now)
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import takewhile
from typing import Protocol

import redis

from app.state import keys
from app.state._redis import as_str, is_cluster, unavailable_on_redis_error
from app.state.budgets import (
    RELEASE_LUA as BUDGET_RELEASE_LUA,
    RESERVE_LUA as BUDGET_RESERVE_LUA,
    BudgetState,
    BudgetStatus,
    BudgetStore,
    SNAPSHOT_FIELDS,
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

# KEYS: per reservation, the 5 of cap_reserve then the 4 of budget_reserve (owners included).
# ARGV: per reservation, the 7 of cap_reserve then the 8 of budget_reserve.
# Returns per reservation: the cap status, then the budget status when one was tried. It stops
# after a reservation answered with a trailing '?': its caps must be given back but its ledger
# names the counters of another day or session (a replayed id), which the script was not given;
# the caller releases them through the store, then holds the rest, so the order stays exact.
_RESERVE = CAP_RESERVE_LUA + CAP_RELEASE_LUA + BUDGET_RESERVE_LUA + """
local out = {}
for h = 0, #KEYS / 9 - 1 do
  local k, a = h * 9, h * 15
  local cap_keys = {unpack(KEYS, k + 1, k + 5)}
  local cap = cap_reserve(cap_keys, {unpack(ARGV, a + 1, a + 7)})
  local budget = ''
  if cap == 'R' or cap == 'C' then
    budget = budget_reserve({unpack(KEYS, k + 6, k + 9)}, {unpack(ARGV, a + 8, a + 15)})
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


# The single-slot steps of a Redis Cluster.
# KEYS: per reservation the 4 of cap_reserve (no owner: one user's slot); ARGV: its 7. Stops after
# the first full cap met once a cap was newly held (see the module's docstring).
_RESERVE_CAPS = CAP_RESERVE_LUA + """
local out, held = {}, false
for h = 0, #KEYS / 4 - 1 do
  local cap = cap_reserve({unpack(KEYS, h * 4 + 1, h * 4 + 4)}, {unpack(ARGV, h * 7 + 1, h * 7 + 7)})
  out[#out + 1] = cap
  if cap == 'F' and held then return out end
  if cap == 'R' then held = true end
end
return out
"""

# KEYS: per reservation the 3 campaign keys of budget_reserve (no owner: one campaign's slot);
# ARGV: its 8. Answers each status, in order.
_RESERVE_BUDGETS = BUDGET_RESERVE_LUA + """
local out = {}
for h = 0, #KEYS / 3 - 1 do
  out[#out + 1] = budget_reserve({unpack(KEYS, h * 3 + 1, h * 3 + 3)}, {unpack(ARGV, h * 8 + 1, h * 8 + 8)})
end
return out
"""

# KEYS: one reservation's budget_release keys; ARGV: its id.
_RELEASE_BUDGET = BUDGET_RELEASE_LUA + "return budget_release(KEYS, ARGV)\n"
# KEYS: one reservation's cap_release keys.
_RELEASE_CAPS = CAP_RELEASE_LUA + "return cap_release(KEYS, ARGV)\n"


def _one_pass(pending: list[AdReservation]) -> list[AdReservation]:
    """The longest prefix the single-slot steps can hold in one pass: one user (one slot for the
    caps step), and no id twice (a replayed id must see its first hold given back or kept)."""
    user, seen = pending[0].claim.user_id, set()

    def fits(r: AdReservation) -> bool:
        if r.claim.user_id != user or r.reservation_id in seen:
            return False
        seen.add(r.reservation_id)
        return True

    return list(takewhile(fits, pending))


def _queue_eval(pipe, script: str, script_keys: list[str], args: list[object]) -> None:
    """EVAL on a pipeline (redis-py's cluster pipeline has no `eval` method; it routes the
    command by its keys' slot all the same)."""
    pipe.execute_command("EVAL", script, len(script_keys), *script_keys, *args)


class RedisReservations:
    """The same steps over the Redis stores, batched: one round trip to hold a page's winners on
    one server, single-slot steps on a Redis Cluster (`one_script`: chosen by the client).

    Each reservation stays atomic per store; the stores' own scripts and these share their Lua
    functions, so a hold here equals `StoreReservations`' hold.
    """

    def __init__(self, caps: RedisCapStore, budgets: RedisBudgetStore, one_script: bool | None = None) -> None:
        if caps.client is not budgets.client:
            raise ValueError("caps and budgets must share one Redis client: one script touches both")
        self.caps = caps
        self.budgets = budgets
        self._client = caps.client
        self.one_script = not is_cluster(self._client) if one_script is None else one_script
        if self.one_script and (caps.split_owner or budgets.split_owner):
            raise ValueError("one script per page needs one redis-server, not a Redis Cluster")
        self._snapshot = self._client.register_script(_SNAPSHOT)
        self._reserve = self._client.register_script(_RESERVE)
        self._release = self._client.register_script(_RELEASE)

    def snapshot(self, user_id, session_id, ad_ids, advertiser_ids, categories, daily_budgets, now):
        ad_ids, advertiser_ids, categories = list(ad_ids), list(advertiser_ids), list(categories)
        cap_names = count_keys(user_id, session_id, ad_ids, advertiser_ids, categories, now)
        budget_names = snapshot_keys(list(daily_budgets), now)
        if not cap_names and not budget_names:
            return CapCounts({}, {}, {}), {}
        if not self.one_script:
            return self._snapshot_in_steps(cap_names, budget_names, ad_ids, advertiser_ids, categories, daily_budgets)
        with unavailable_on_redis_error("reading frequency caps and budgets"):
            reply = as_str(self._snapshot(keys=cap_names + budget_names, args=[len(cap_names)]))
        values = [v or None for v in reply.split(",")]
        n = len(cap_names)
        rows = list(zip(values[n::2], values[n + 1::2]))
        return counts_from(values[:n], ad_ids, advertiser_ids, categories), states_from(rows, daily_budgets)

    def _snapshot_in_steps(self, cap_names, budget_names, ad_ids, advertiser_ids, categories, daily_budgets):
        """One pipeline: the user's counters (one slot: one MGET), each campaign's hash."""
        with unavailable_on_redis_error("reading frequency caps and budgets"):
            pipe = self._client.pipeline(transaction=False)
            if cap_names:  # one user's counters: one slot (the cluster pipeline has no `mget`)
                pipe.execute_command("MGET", *cap_names)
            for name in budget_names:
                pipe.hmget(name, SNAPSHOT_FIELDS)
            replies = pipe.execute()
        values = replies.pop(0) if cap_names else []
        return counts_from(values, ad_ids, advertiser_ids, categories), states_from(replies, daily_budgets)

    def reserve(self, reservations: Sequence[AdReservation], now: float) -> list[ReservationOutcome]:
        if not self.one_script:
            return self._reserve_in_steps(list(reservations), now)
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

    def _reserve_in_steps(self, pending: list[AdReservation], now: float) -> list[ReservationOutcome]:
        outcomes: list[ReservationOutcome] = []
        while pending:  # one pass per page, more for several users, a replayed id or a cap step stopped early
            batch = _one_pass(pending)
            with unavailable_on_redis_error("reserving frequency caps and budgets"):
                caps = self._hold_caps(batch, now)
                budgets = self._hold_budgets([r for r, c in zip(batch, caps) if c in _HELD_CAP], now)
            gave_back = False
            for r, cap in zip(batch, caps):
                budget = budgets.get(r.reservation_id) if cap in _HELD_CAP else None
                if budget is not None and budget not in _HELD_BUDGET:
                    self.caps.release(r.reservation_id, now)
                    gave_back = True
                outcomes.append(ReservationOutcome(cap, budget))
            done = len(caps)
            if gave_back and caps[-1] == CapStatus.CAPPED:
                # the full cap that stopped the step may have room now: check it again (a full
                # cap wrote nothing, so the retry is its first attempt)
                outcomes.pop()
                done -= 1
            pending = pending[done:]
        return outcomes

    def _hold_caps(self, batch: list[AdReservation], now: float) -> list[CapStatus]:
        """Owner pointers first (every hold is then found by id), then one user's caps in one
        script, in order; a prefix of `batch` when the script stopped early."""
        pipe = self._client.pipeline(transaction=False)
        for r in batch:
            self.caps.write_owner(pipe, r.reservation_id, r.claim, now)
            self.budgets.write_owner(pipe, r.reservation_id, r.campaign_id, now)
        pipe.execute()
        script_keys: list[str] = []
        args: list[object] = []
        for r in batch:
            cap_keys, cap_args = self.caps.reserve_call(r.reservation_id, r.claim, now, with_owner=False)
            script_keys += cap_keys
            args += cap_args
        return [CapStatus(as_str(v)) for v in self._client.eval(_RESERVE_CAPS, len(script_keys), *script_keys, *args)]

    def _hold_budgets(self, held: list[AdReservation], now: float) -> dict[str, BudgetStatus]:
        """Each campaign's holds in one script, in auction order; campaigns pipelined."""
        by_campaign: dict[int, list[AdReservation]] = defaultdict(list)
        for r in held:
            by_campaign[r.campaign_id].append(r)
        if not by_campaign:
            return {}
        pipe = self._client.pipeline(transaction=False)
        for group in by_campaign.values():
            script_keys: list[str] = []
            args: list[object] = []
            for r in group:
                budget_keys, budget_args = self.budgets.reserve_call(
                    r.reservation_id, r.campaign_id, r.amount, r.daily_budget, now, with_owner=False)
                script_keys += budget_keys
                args += budget_args
            _queue_eval(pipe, _RESERVE_BUDGETS, script_keys, args)
        out: dict[str, BudgetStatus] = {}
        for group, replies in zip(by_campaign.values(), pipe.execute()):
            out.update((r.reservation_id, BudgetStatus(as_str(v))) for r, v in zip(group, replies))
        return out

    def release(self, reservation_ids: Sequence[str], now: float) -> None:
        if not reservation_ids:
            return
        if not self.one_script:
            self._release_in_steps(reservation_ids, now)
            return
        with unavailable_on_redis_error("releasing frequency caps and budgets"):
            script_keys: list[str] = []
            args: list[object] = []
            for rid, (budget_keys, cap_keys) in zip(reservation_ids, self._release_keys(reservation_ids)):
                script_keys += budget_keys + cap_keys
                args += [rid, len(budget_keys), len(cap_keys)]
            if not script_keys:
                return
            replies = [as_str(v) for v in self._release(keys=script_keys, args=args)]
        for rid, reply in zip(reservation_ids, replies):
            if reply.endswith("?"):
                self.caps.release(rid, now)

    def _release_keys(self, reservation_ids: Sequence[str]) -> list[tuple[list[str], list[str]]]:
        """Per id, the KEYS of budget_release and of cap_release ([] where nothing is held):
        the owners (one pipeline), then the cap ledgers' counters (another)."""
        pipe = self._client.pipeline(transaction=False)
        for rid in reservation_ids:
            pipe.get(keys.budget_reservation_owner(rid))
            pipe.get(keys.cap_owner(rid))
        owners = [as_str(v) for v in pipe.execute()]
        ledgers = [None if user is None else keys.cap_ledger(int(user), rid)
                   for rid, user in zip(reservation_ids, owners[1::2])]
        pipe = self._client.pipeline(transaction=False)
        for ledger in ledgers:
            if ledger is not None:
                pipe.hmget(ledger, list(LEDGER_FIELDS))
        counters_of = iter(pipe.execute())
        out = []
        for owner, ledger in zip(owners[0::2], ledgers):
            counters = next(counters_of) if ledger is not None else [None]
            cap_keys = [] if any(c is None for c in counters) else [ledger, *(as_str(c) for c in counters)]
            out.append(([] if owner is None else RedisBudgetStore.owner_keys(owner), cap_keys))
        return out

    def _release_in_steps(self, reservation_ids: Sequence[str], now: float) -> None:
        """Owners, then ledgers, then one single-slot script per store and id, pipelined."""
        with unavailable_on_redis_error("releasing frequency caps and budgets"):
            pipe, changed = self._client.pipeline(transaction=False), []
            for rid, (budget_keys, cap_keys) in zip(reservation_ids, self._release_keys(reservation_ids)):
                if budget_keys:
                    _queue_eval(pipe, _RELEASE_BUDGET, budget_keys, [rid])
                if cap_keys:
                    _queue_eval(pipe, _RELEASE_CAPS, cap_keys, [])
                    changed.append(rid)
            errors = [r for r in pipe.execute(raise_on_error=False) if isinstance(r, Exception)]
        failed = [e for e in errors if not isinstance(e, redis.ResponseError)]
        if failed:
            raise StoreUnavailable(f"releasing frequency caps and budgets: {type(failed[0]).__name__}: {failed[0]}")
        if errors:  # a cap ledger that named other counters than those read (a replayed id meanwhile)
            for rid in changed:
                self.caps.release(rid, now)
