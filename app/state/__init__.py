"""Caps, budgets, sessions, counters and the event stream: Redis behind small interfaces."""
