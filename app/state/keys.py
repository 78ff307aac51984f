"""Every Redis key name of the ads state, in one place.

Counters carry the UTC day (or the session) in their name, so a new day starts from zero with
no reset job; TTLs only reclaim memory.

Keys carry Redis Cluster hash tags, so each Lua script touches one slot: a user's caps and cap
ledgers share `{u:<user>}`, a campaign's budget, ledger and pending set share `{c:<campaign>}`.
A reservation spans both, so it is two single-slot steps (app/state/reservations.py), found again
by id through two owner pointers that hash on their own.
"""
from __future__ import annotations

PREFIX = "rf:ads"


def user_tag(user_id: int) -> str:
    return f"{{u:{user_id}}}"


def campaign_tag(campaign_id: int) -> str:
    return f"{{c:{campaign_id}}}"


def ad_user_day(day: int, user_id: int, ad_id: int) -> str:
    return f"{PREFIX}:{user_tag(user_id)}:cap:ad:{day}:{ad_id}"


def advertiser_user_day(day: int, user_id: int, advertiser_id: int) -> str:
    return f"{PREFIX}:{user_tag(user_id)}:cap:adv:{day}:{advertiser_id}"


def session_category(user_id: int, session_id: str, category: str) -> str:
    return f"{PREFIX}:{user_tag(user_id)}:cap:cat:{session_id}:{category}"


def cap_ledger(user_id: int, reservation_id: str) -> str:
    """Hash: one reservation's cap state ('R' reserved, 'C' committed, 'X' released) and the
    three counters it incremented, so a release decrements exactly those."""
    return f"{PREFIX}:{user_tag(user_id)}:capres:{reservation_id}"


def cap_owner(reservation_id: str) -> str:
    """The user id of a cap reservation, so commit/release need only its id."""
    return f"{PREFIX}:capown:{reservation_id}"


def budget(campaign_id: int, day: int) -> str:
    """Hash: budget, spent, reserved (integer micro-units)."""
    return f"{PREFIX}:{campaign_tag(campaign_id)}:budget:{day}"


def budget_ledger(campaign_id: int, day: int) -> str:
    """Hash: reservation id -> 'R|amount' / 'C|amount' / 'X|amount' / 'E|amount' (expired)."""
    return f"{PREFIX}:{campaign_tag(campaign_id)}:ledger:{day}"


def budget_pending(campaign_id: int, day: int) -> str:
    """Sorted set: pending reservation id scored by the (injected-clock) time it expires."""
    return f"{PREFIX}:{campaign_tag(campaign_id)}:pending:{day}"


def budget_reservation_owner(reservation_id: str) -> str:
    """'campaign_id:day' of a budget reservation, so commit/release need only its id."""
    return f"{PREFIX}:resv:{reservation_id}"
