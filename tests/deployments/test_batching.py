"""AdaptiveBatcher: send at once when a slot is free, batch what queues while calls are out."""
import asyncio

import pytest

from deployments.batching import AdaptiveBatcher, each_request


class Recorder:
    """A dispatch whose calls finish when the test releases them."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.gates: list[asyncio.Event] = []

    async def __call__(self, items: list[int]) -> list[int | Exception]:
        gate = asyncio.Event()
        self.calls.append(list(items))
        self.gates.append(gate)
        await gate.wait()
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]

    def release(self, k: int) -> None:
        self.gates[k].set()


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_request_that_finds_a_free_slot_is_sent_alone_and_at_once():
    async def scenario():
        rec = Recorder()
        batcher = AdaptiveBatcher(rec, max_in_flight=2, max_batch_size=8)
        first = asyncio.ensure_future(batcher.submit(1))
        await _settle()
        assert rec.calls == [[1]] and batcher.in_flight == 1
        rec.release(0)
        assert await first == 10

    asyncio.run(scenario())


def test_requests_queued_behind_full_slots_share_the_next_call_up_to_the_batch_size():
    async def scenario():
        rec = Recorder()
        batcher = AdaptiveBatcher(rec, max_in_flight=1, max_batch_size=3)
        futures = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 6)]
        await _settle()
        assert rec.calls == [[1]] and batcher.waiting == 4
        rec.release(0)
        await _settle()
        assert rec.calls[1] == [2, 3, 4] and batcher.waiting == 1
        rec.release(1)
        await _settle()
        assert rec.calls[2] == [5]
        rec.release(2)
        assert await asyncio.gather(*futures) == [10, 20, 30, 40, 50]

    asyncio.run(scenario())


def test_an_exception_for_one_item_fails_only_that_item():
    async def scenario():
        rec = Recorder()
        batcher = AdaptiveBatcher(rec, max_in_flight=1, max_batch_size=8)
        blocker = asyncio.ensure_future(batcher.submit(0))
        await _settle()
        good, bad = asyncio.ensure_future(batcher.submit(2)), asyncio.ensure_future(batcher.submit(-1))
        await _settle()
        rec.release(0)
        await _settle()
        rec.release(1)
        assert await good == 20 and await blocker == 0
        with pytest.raises(ValueError, match="bad -1"):
            await bad

    asyncio.run(scenario())


def test_a_failed_call_fails_every_item_in_it_and_frees_its_slot():
    async def scenario():
        calls = []

        async def broken(items):
            calls.append(items)
            if len(calls) == 1:
                raise ConnectionError("replica died")
            return items

        batcher = AdaptiveBatcher(broken, max_in_flight=1, max_batch_size=8)
        results = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
        assert isinstance(results[0], ConnectionError) and results[1] == 2
        assert await batcher.submit(3) == 3  # the slot came back
        assert batcher.in_flight == 0

    asyncio.run(scenario())


def test_a_cancelled_waiting_request_is_never_sent():
    async def scenario():
        rec = Recorder()
        batcher = AdaptiveBatcher(rec, max_in_flight=1, max_batch_size=8)
        first = asyncio.ensure_future(batcher.submit(1))
        await _settle()
        abandoned, kept = asyncio.ensure_future(batcher.submit(2)), asyncio.ensure_future(batcher.submit(3))
        await _settle()
        abandoned.cancel()
        rec.release(0)
        await _settle()
        assert rec.calls[1] == [3]
        rec.release(1)
        assert await first == 10 and await kept == 30

    asyncio.run(scenario())


def test_dispatch_answering_the_wrong_number_of_results_is_an_error():
    async def short(items):
        return items[:-1]

    async def scenario():
        batcher = AdaptiveBatcher(short, max_in_flight=1, max_batch_size=8)
        with pytest.raises(RuntimeError, match=r"0 results for 1 items"):
            await asyncio.gather(*(batcher.submit(i) for i in range(3)))

    asyncio.run(scenario())


def test_bounds_must_be_positive():
    with pytest.raises(ValueError, match="max_in_flight"):
        AdaptiveBatcher(Recorder(), max_in_flight=0, max_batch_size=1)


def test_each_request_passes_earlier_failures_through_and_isolates_new_ones():
    async def double(x: int) -> int:
        if x == 3:
            raise KeyError("three")
        return 2 * x

    earlier = TimeoutError("retrieval deadline")
    for concurrently in (False, True):
        out = asyncio.run(each_request([1, earlier, 3, 4], double, concurrently=concurrently))
        assert out[0] == 2 and out[1] is earlier and isinstance(out[2], KeyError) and out[3] == 8
