"""Retrain requests on a Redis stream: the live monitor writes them, the fine-tune job runner reads them.

    rf:retrain:requests   one entry per request, fields (all strings):
        requested_at   unix seconds (float) when the monitor asked
        reasons        "; "-joined MonitorResult messages, e.g.
                       "feature_psi[user_age] = 3.1 (critical; warn 0.1, critical 0.25)"
        monitors       comma-separated "<monitor>[<subject>]" of the critical results
        model_version  the artifact version the monitor graded ("" when unknown)

The stream is bounded (MAXLEN ~ `maxlen`); requests are rare (RetrainTrigger rate-limits them), so
the bound only matters if nothing ever consumes it. Readers keep their own position (`after`), or
use a consumer group on `RETRAIN_REQUESTS_KEY`.

Example:
    stream = RetrainRequestStream(redis.asyncio.Redis.from_url(url))
    await stream.append(request)                       # the Monitor deployment
    for entry_id, fields in await stream.read(after):  # the job runner
        ...
"""
from __future__ import annotations

from observability.monitors import RetrainRequest

RETRAIN_REQUESTS_KEY = "rf:retrain:requests"
FIELDS = ("requested_at", "reasons", "monitors", "model_version")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RetrainRequestStream:
    """Typed writer and reader of `rf:retrain:requests` over a redis.asyncio client.

    Errors are redis-py's (`redis.RedisError`): the caller decides whether a lost request is
    retried (the Monitor keeps it and tries again at its next publish)."""

    def __init__(self, client, key: str = RETRAIN_REQUESTS_KEY, maxlen: int = 10_000) -> None:
        self.client, self.key, self.maxlen = client, key, maxlen

    @staticmethod
    def fields(request: RetrainRequest, model_version: str = "") -> dict[str, str]:
        return {
            "requested_at": repr(float(request.requested_at)),
            "reasons": request.summary,
            "monitors": ",".join(f"{r.monitor}[{r.subject}]" for r in request.reasons),
            "model_version": model_version,
        }

    async def append(self, request: RetrainRequest, model_version: str = "") -> str:
        """Append one request; returns its stream entry id."""
        entry_id = await self.client.xadd(self.key, self.fields(request, model_version), maxlen=self.maxlen, approximate=True)
        return _text(entry_id)

    async def read(self, after: str = "0-0", count: int = 100) -> list[tuple[str, dict]]:
        """Entries after entry id `after` (exclusive), oldest first: (entry id, {field: str})."""
        low = "-" if after == "0-0" else f"({after}"
        rows = await self.client.xrange(self.key, min=low, count=count)
        return [(_text(entry_id), {_text(k): _text(v) for k, v in fields.items()}) for entry_id, fields in rows]

    async def last_requested_at(self) -> float | None:
        """`requested_at` of the newest request, so a restarted monitor keeps the rate limit."""
        rows = await self.client.xrevrange(self.key, count=1)
        if not rows:
            return None
        fields = {_text(k): _text(v) for k, v in rows[0][1].items()}
        try:
            return float(fields["requested_at"])
        except (KeyError, ValueError):
            return None
