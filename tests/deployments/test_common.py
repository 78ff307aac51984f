"""ReloadableDeployment's published-item bookkeeping, without Ray: a batch of the item stream is
applied to the serving state at once, and a rebuild (a reload, a reconfigure) keeps it."""
from __future__ import annotations

import asyncio
import dataclasses

from app.freshness.published import PublishedItems
from app.state.items import StreamedItem
from config import RayfeedConfig
from deployments.common import DeploymentSettings, ReloadableDeployment


@dataclasses.dataclass(frozen=True)
class ToyState:
    version: str
    alpha: float
    items: tuple = ()


class Toy(ReloadableDeployment[ToyState]):
    follows_items = True

    def build_state(self, config: RayfeedConfig, settings: DeploymentSettings, previous) -> ToyState:
        return ToyState("v1", config.collator.alpha)  # what the artifact holds: no published items

    def with_published(self, state: ToyState, published: PublishedItems) -> ToyState:
        return dataclasses.replace(state, items=tuple(e.item["item_id"] for e in published.by_seq.values()))


def entry(n: int, item_id: str) -> StreamedItem:
    return StreamedItem(f"{n}-0", n, 0, {"item_id": item_id, "creator_id": "c"})


def test_published_items_apply_at_once_and_survive_a_rebuild():
    async def go() -> None:
        toy = Toy()
        await toy.reconfigure({})
        assert toy.items_ready()  # no Redis configured: nothing to follow
        toy.apply_published([entry(0, "p0"), entry(1, "p1")], caught_up=True)
        assert (await toy.state()).items == ("p0", "p1")
        await toy.reconfigure({"rayfeed": {"collator": {"alpha": 2.0}}})  # a reload builds the state anew
        state = await toy.state()
        assert state.alpha == 2.0 and state.items == ("p0", "p1")
        toy.apply_published([], caught_up=True)  # an empty read changes nothing
        assert (await toy.state()) is state

    asyncio.run(go())


def test_what_a_load_freed_is_released_in_the_thread_that_loaded(monkeypatch):
    """Arrow's allocator returns a thread's freed pages only from that thread: released from the
    event loop alone, a 1M-item Retrieval replica kept ≈ 270 MiB of freed parquet buffers."""
    import threading

    import deployments.common as common

    built_in, released_in = [], []

    class Loading(Toy):
        def build_state(self, config, settings, previous) -> ToyState:
            built_in.append(threading.get_ident())
            return super().build_state(config, settings, previous)

    monkeypatch.setattr(common, "release_unused_memory", lambda: released_in.append(threading.get_ident()))

    async def go() -> None:
        await Loading().reconfigure({})

    asyncio.run(go())
    assert len(built_in) == 1 and built_in[0] != threading.get_ident()  # built off the event loop
    assert built_in[0] in released_in  # and released there, before the swap


def test_a_replica_hands_its_freed_heap_back_every_heap_trim_s(monkeypatch):
    """Requests' freed temporaries stay on the C heap until trimmed (≈ 0.2 GiB a 1M Ranking replica)."""
    import deployments.common as common

    trims: list[int] = []
    monkeypatch.setattr(common, "release_freed_heap", lambda: trims.append(1))

    async def go() -> None:
        toy = Toy()
        await toy.reconfigure({"heap_trim_s": 0.02})
        await asyncio.sleep(0.2)
        assert len(trims) >= 3
        await toy.reconfigure({"heap_trim_s": 0})  # 0: never
        await asyncio.sleep(0.05)
        stopped = len(trims)
        await asyncio.sleep(0.15)
        assert len(trims) == stopped

    asyncio.run(go())
