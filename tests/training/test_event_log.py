"""`rayfeed data export events` reads every partition of the event stream, one slot at a time."""
import asyncio

import pytest

from app.state._redis import async_fail_fast_client, fail_fast_client
from app.state.events import EventStream, StreamEvent
from training.event_log import read_stream


@pytest.mark.parametrize("kind", ["server", "cluster"])
def test_every_partition_is_read_in_arrival_order(kind, request):
    url = request.getfixturevalue("redis_url" if kind == "server" else "redis_cluster_url")
    sync = fail_fast_client(url, 2.0)
    sync.flushdb(**({"target_nodes": "primaries"} if kind == "cluster" else {}))

    async def append() -> None:
        client = async_fail_fast_client(url, 2.0)
        stream = EventStream(client, 10_000, 60, partitions=3)
        for i in range(9):  # one event per call: arrival order is i
            await stream.append([StreamEvent(event_id=f"e{i}", user_id=i % 5 + 1, type="click", ts=float(i),
                                             item_id=100 + i)])
            await asyncio.sleep(0.003)  # stream ids are milliseconds: order across partitions is to 1 ms
        await client.aclose()

    asyncio.run(append())
    events = read_stream(sync, partitions=3)
    assert events["item_id"].tolist() == [100 + i for i in range(9)]
    assert sorted(events["user_id"].unique().tolist()) == [1, 2, 3, 4, 5]
    sync.flushdb(**({"target_nodes": "primaries"} if kind == "cluster" else {}))
