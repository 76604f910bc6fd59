"""Dynamic batching: concurrent requests for one model are answered from shared forward passes.

Requests queue up per model; a collector task takes everything queued (up to ``max_images``),
waits at most ``max_wait_s`` for more, and runs one defended forward pass on the inference
thread. Each image still gets its own noise (the defense draws per element over the merged
batch) and its own caller's count (charged by the route before it queues). A queue holding
more than ``max_queue`` images refuses new work with :class:`Overloaded`.

With ``max_wait_s = 0`` (the default) a pass takes only what is already queued: a lone request
is answered at once, and under load batches form by themselves from the requests that arrive
while the previous pass runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


class Overloaded(RuntimeError):
    """The queue is full; the caller should retry later (503)."""


@dataclass
class _Pending:
    images: np.ndarray
    future: asyncio.Future[np.ndarray]


class DynamicBatcher:
    """Merges concurrent ``submit`` calls into forward passes of at most ``max_images``.

    ``forward`` runs on ``executor``; a coroutine function (a proxied model's upstream call)
    is awaited on the loop instead, with up to ``max_inflight`` passes at once."""

    def __init__(
        self,
        forward: Callable[[np.ndarray], np.ndarray] | Callable[[np.ndarray], Awaitable[np.ndarray]],
        executor: Executor,
        *,
        max_images: int = 256,
        max_wait_s: float = 0.0,
        max_queue: int = 4096,
        max_inflight: int = 1,
        on_batch: Callable[[int], object] | None = None,
    ) -> None:
        self._forward = forward
        self._slots = asyncio.Semaphore(max_inflight) if max_inflight > 1 else None
        self._inflight: set[asyncio.Task[None]] = set()
        self._on_batch = on_batch
        self._executor = executor
        self.max_images = max_images
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._queued_images = 0
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # forward passes run, for tests and metrics

    @property
    def queued_images(self) -> int:
        return self._queued_images

    async def submit(self, images: np.ndarray) -> np.ndarray:
        """Probabilities for ``images``, computed in a shared forward pass."""
        if self._queued_images + len(images) > self.max_queue:
            raise Overloaded(f"{self._queued_images} images are waiting; try again shortly")
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._collect(), name="dynamic-batcher")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queued_images += len(images)
        await self._queue.put(_Pending(images, future))
        return await future

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            size = len(batch[0].images)
            deadline = loop.time() + self.max_wait_s
            while size < self.max_images:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), remaining)
                    except TimeoutError:
                        break
                if size + len(item.images) > self.max_images:
                    await self._dispatch(batch)  # keep requests whole: this one starts the next
                    batch, size = [item], len(item.images)
                    deadline = loop.time() + self.max_wait_s
                    continue
                batch.append(item)
                size += len(item.images)
            await self._dispatch(batch)

    async def _dispatch(self, batch: list[_Pending]) -> None:
        """Run the pass now, or (several in flight) as a task once a slot is free."""
        if self._slots is None:
            await self._run(batch)
            return
        await self._slots.acquire()
        task = asyncio.create_task(self._run_released(batch, self._slots))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _run_released(self, batch: list[_Pending], slots: asyncio.Semaphore) -> None:
        try:
            await self._run(batch)
        finally:
            slots.release()

    async def _run(self, batch: list[_Pending]) -> None:
        live = [p for p in batch if not p.future.cancelled()]
        self._queued_images -= sum(len(p.images) for p in batch)
        if not live:
            return
        merged = live[0].images if len(live) == 1 else np.concatenate([p.images for p in live])
        loop = asyncio.get_running_loop()
        try:
            if inspect.iscoroutinefunction(self._forward):
                probs = await self._forward(merged)
            else:
                probs = await loop.run_in_executor(self._executor, self._forward, merged)
        except Exception as exc:
            for p in live:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        self.batches += 1
        if self._on_batch is not None:
            self._on_batch(len(merged))
        start = 0
        for p in live:
            end = start + len(p.images)
            if not p.future.done():
                p.future.set_result(probs[start:end])
            start = end

    async def close(self) -> None:
        for task in list(self._inflight):
            task.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
