"""Typed failures of the state stores, so callers can fail closed without catching redis-py's."""
from __future__ import annotations


class StoreUnavailable(RuntimeError):
    """The backing store could not be reached or answered in time. Callers serving ads must
    treat this as 'no ads' (fail closed): no cap or budget may be checked, so none may be used."""
