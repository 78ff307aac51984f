"""Every Redis key name of the ads state, in one place.

Counters carry the UTC day (or the session) in their name, so a new day starts from zero with
no reset job; TTLs only reclaim memory. Scripts touch keys of several users/campaigns' records,
so the stores target a single Redis primary (not Redis Cluster).
"""
from __future__ import annotations

PREFIX = "rf:ads"


def ad_user_day(day: int, user_id: int, ad_id: int) -> str:
    return f"{PREFIX}:cap:ad:{user_id}:{day}:{ad_id}"


def advertiser_user_day(day: int, user_id: int, advertiser_id: int) -> str:
    return f"{PREFIX}:cap:adv:{user_id}:{day}:{advertiser_id}"


def session_category(user_id: int, session_id: str, category: str) -> str:
    return f"{PREFIX}:cap:cat:{user_id}:{session_id}:{category}"


def cap_ledger(reservation_id: str) -> str:
    """Hash: one reservation's cap state ('R' reserved, 'C' committed, 'X' released) and the
    three counters it incremented, so a release decrements exactly those."""
    return f"{PREFIX}:capres:{reservation_id}"


def budget(campaign_id: int, day: int) -> str:
    """Hash: budget, spent, reserved (integer micro-units)."""
    return f"{PREFIX}:budget:{campaign_id}:{day}"


def budget_ledger(campaign_id: int, day: int) -> str:
    """Hash: reservation id -> 'R|amount' / 'C|amount' / 'X|amount' / 'E|amount' (expired)."""
    return f"{PREFIX}:ledger:{campaign_id}:{day}"


def budget_pending(campaign_id: int, day: int) -> str:
    """Sorted set: pending reservation id scored by the (injected-clock) time it expires."""
    return f"{PREFIX}:pending:{campaign_id}:{day}"


def budget_reservation_owner(reservation_id: str) -> str:
    """'campaign_id:day' of a budget reservation, so commit/release need only its id."""
    return f"{PREFIX}:resv:{reservation_id}"
