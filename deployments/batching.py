"""Adaptive batching of deployment calls: one handle call carries every request that arrived
while the previous calls were out.

Ray's CPU per handle call (≈3 ms on the caller, ≈3.5 ms in the called replica on the 2-core
reference machine) is paid per *call*, not per request. `AdaptiveBatcher` keeps at most
`max_in_flight` calls outstanding; a request that finds a free slot is sent at once (batch of
one: no added latency at low load), a request that finds none waits, and the next free slot
takes up to `max_batch_size` waiting requests in one call. Batches therefore grow with load,
exactly when the per-call overhead would otherwise eat the CPU, and no timer is involved.

`dispatch(items)` returns one result per item, in order; a result that is an exception fails
that item only (e.g. one request's deadline), an exception raised by `dispatch` fails the batch.
"""
from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class AdaptiveBatcher(Generic[Item, Result]):
    def __init__(
        self,
        dispatch: Callable[[list[Item]], Awaitable[list[Result | BaseException]]],
        max_in_flight: int,
        max_batch_size: int,
    ) -> None:
        if max_in_flight < 1 or max_batch_size < 1:
            raise ValueError(f"max_in_flight and max_batch_size must be >= 1, got {max_in_flight}, {max_batch_size}")
        self._dispatch = dispatch
        self.max_in_flight = max_in_flight
        self.max_batch_size = max_batch_size
        self._waiting: deque[tuple[Item, asyncio.Future]] = deque()
        self._in_flight = 0
        self._tasks: set[asyncio.Task] = set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def resize(self, max_in_flight: int, max_batch_size: int) -> None:
        """New bounds (hot reload); calls already out finish as they are."""
        if max_in_flight < 1 or max_batch_size < 1:
            raise ValueError(f"max_in_flight and max_batch_size must be >= 1, got {max_in_flight}, {max_batch_size}")
        self.max_in_flight, self.max_batch_size = max_in_flight, max_batch_size
        self._pump()

    async def submit(self, item: Item) -> Result:
        """This item's result. Cancelling the caller abandons the item: it is dropped if still
        waiting; a call already out finishes for the others in its batch."""
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        self._pump()
        return await future

    def _pump(self) -> None:
        while self._in_flight < self.max_in_flight and self._waiting:
            batch: list[tuple[Item, asyncio.Future]] = []
            while self._waiting and len(batch) < self.max_batch_size:
                item, future = self._waiting.popleft()
                if not future.done():  # a cancelled caller's item is not sent
                    batch.append((item, future))
            if not batch:
                continue
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[Item, asyncio.Future]]) -> None:
        try:
            results = await self._dispatch([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"dispatch returned {len(results)} results for {len(batch)} items")
        except BaseException as exc:  # noqa: BLE001 - the whole call failed: every item learns why
            for _, future in batch:
                if future.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            for (_, future), result in zip(batch, results):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        finally:
            self._in_flight -= 1
            self._pump()


async def each_request(
    entries: list[Item | Exception],
    handle: Callable[[Item], Awaitable[Result]],
    concurrently: bool = False,
) -> list[Result | Exception]:
    """A stage's answer to a batched call: `handle` applied to every entry, in order. An entry
    that is already an exception (an earlier stage's failure for that request) passes through;
    one that raises becomes its exception — one request's deadline or bad input never fails the
    others in its call. `concurrently` starts them together (e.g. so a @serve.batch inside fills);
    otherwise they run one after another, yielding the loop between requests."""
    async def guarded(entry: Item | Exception) -> Result | Exception:
        if isinstance(entry, Exception):
            return entry
        try:
            return await handle(entry)
        except Exception as exc:  # noqa: BLE001 - returned to that request's caller, not swallowed
            return exc

    if concurrently:
        return list(await asyncio.gather(*(guarded(e) for e in entries)))
    out: list[Result | Exception] = []
    for entry in entries:
        out.append(await guarded(entry))
        await asyncio.sleep(0)  # let the replica's loop serve Ray's own messages between requests
    return out
