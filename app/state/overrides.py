"""Admin overrides: configuration changes every replica applies without a redeploy.

`/admin/reload` and `/admin/weights` write them; every replica polls them (a handle call would
reach one replica, a Redis key reaches all). Stored as one JSON value:

    rf:admin:overrides = {"generation": <n>, "overrides": {<RayfeedConfig sections>}}

A writer merges its change into the current overrides and bumps the generation; a reader
applies a generation once. A missing key reads as generation 0 with no overrides, so deleting it
returns every replica to its deployed configuration.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


from app._config_base import merge_mappings
from app.state._redis import REDIS_FAILURES
from app.state.errors import StoreUnavailable

OVERRIDES_KEY = "rf:admin:overrides"


@dataclass(frozen=True)
class Overrides:
    generation: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def decode(cls, raw: bytes | str | None) -> Overrides:
        if raw is None:
            return cls()
        found = json.loads(raw)
        return cls(int(found.get("generation", 0)), dict(found.get("overrides", {})))

    def encode(self) -> str:
        return json.dumps({"generation": self.generation, "overrides": self.overrides})


class AdminOverrides:
    """The overrides key over a redis.asyncio client; Redis errors become StoreUnavailable."""

    def __init__(self, client, key: str = OVERRIDES_KEY) -> None:
        self.client, self.key = client, key

    async def read(self) -> Overrides:
        try:
            return Overrides.decode(await self.client.get(self.key))
        except REDIS_FAILURES as exc:
            raise StoreUnavailable(f"admin overrides: {type(exc).__name__}: {exc}") from exc

    async def merge(self, change: Mapping[str, Any], validate: Callable[[dict[str, Any]], None]) -> Overrides:
        """Merge `change` into the current overrides and publish them as the next generation.
        `validate(merged)` runs first and raises to refuse (nothing is written then)."""
        current = await self.read()
        merged = merge_mappings(current.overrides, change)
        validate(merged)
        written = Overrides(current.generation + 1, merged)
        try:
            await self.client.set(self.key, written.encode())
        except REDIS_FAILURES as exc:
            raise StoreUnavailable(f"admin overrides: {type(exc).__name__}: {exc}") from exc
        return written
