"""Caps, budgets, sessions, counters and the event stream: Redis behind small interfaces."""

from app.state._redis import fail_fast_client
from app.state.errors import StoreUnavailable

__all__ = ["StoreUnavailable", "fail_fast_client"]
