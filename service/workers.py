"""The image threads: CPU-bound Pillow work off the event loop, bounded in jobs and in memory."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from .errors import Overloaded
from .metrics import Metrics

T = TypeVar("T")


class MemoryBudget:
    """Bytes that jobs may hold at once. A job waits for its share in arrival order, so a large
    one is not passed over for ever; one larger than the whole budget runs alone."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._held = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    @contextlib.asynccontextmanager
    async def reserved(self, nbytes: int) -> AsyncIterator[None]:
        if self._waiting or not self._fits(nbytes):
            granted = asyncio.get_running_loop().create_future()
            self._waiting.append((nbytes, granted))
            try:
                await granted
            except asyncio.CancelledError:
                if not granted.cancelled():  # granted, then cancelled before it could start
                    self._release(nbytes)
                self._grant()
                raise
        else:
            self._held += nbytes
        try:
            yield
        finally:
            self._release(nbytes)

    def _fits(self, nbytes: int) -> bool:
        return self._held == 0 or self._held + nbytes <= self._limit

    def _release(self, nbytes: int) -> None:
        self._held -= nbytes
        self._grant()

    def _grant(self) -> None:
        while self._waiting:
            nbytes, granted = self._waiting[0]
            if not granted.cancelled() and not self._fits(nbytes):
                return
            self._waiting.popleft()
            if not granted.cancelled():
                self._held += nbytes
                granted.set_result(None)


class ImageWorkers:
    """A thread pool for CPU-bound image work, with a bounded queue in front of it.

    Pillow releases the GIL while it decodes, resizes and encodes, so threads scale across cores.
    When `queue` jobs already wait for a thread, more work is refused (Overloaded, a 503 with
    Retry-After) instead of queueing without end. Each job says how many bytes of pixels it
    will hold; jobs run while their sum stays within `memory_bytes`, which bounds a worker's
    memory whatever the mix of sizes asked.
    """

    def __init__(self, threads: int, queue: int, memory_bytes: int, metrics: Metrics) -> None:
        self._threads = threads or os.cpu_count() or 1
        self._capacity = self._threads + queue
        self._memory = MemoryBudget(memory_bytes)
        self._metrics = metrics
        self._executor: ThreadPoolExecutor | None = None
        self._jobs = 0  # running or waiting

    async def __aenter__(self) -> ImageWorkers:
        self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="asgilook-image")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._executor is not None
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def run(self, function: Callable[..., T], *args: Any, memory: int = 0) -> T:
        """`function(*args)` in a thread, once admitted with the `memory` bytes it will hold."""
        async with self.admitted(memory):
            return await self.in_thread(function, *args)

    @contextlib.asynccontextmanager
    async def admitted(self, memory: int) -> AsyncIterator[None]:
        """A job's admission: refused (Overloaded) when `queue` jobs already wait; otherwise
        held, with `memory` bytes of the budget, from when they are free until the job ends.
        A job that reads its source inside its admission holds no source while it waits."""
        if self._jobs >= self._capacity:
            self._metrics.overloaded.inc()
            raise Overloaded("too much image work in progress; retry shortly")
        self._jobs += 1
        try:
            async with self._memory.reserved(memory):
                yield
        finally:
            self._jobs -= 1

    async def in_thread(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` in a thread, within an admission."""
        assert self._executor is not None, "ImageWorkers used outside the app's lifespan"
        # NOTE: in this request's context, so what the thread logs carries its request id.
        context = contextvars.copy_context()
        with self._metrics.timed(self._metrics.render_seconds, function.__name__):
            job = self._executor.submit(context.run, function, *args)
            try:
                return await asyncio.wrap_future(job)
            except asyncio.CancelledError:
                # NOTE: a thread cannot be stopped. One that started is waited for, so that
                #   nothing it still reads or writes is closed under it and its memory stays
                #   counted until it is free; one still queued never starts.
                if not job.cancel():
                    await _finished(job)
                raise


async def _finished(job: Future[Any]) -> None:
    """Wait for a job that has started, whatever it ends with, even if cancelled meanwhile."""
    ended = asyncio.wrap_future(job)
    while not ended.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([ended])
    if not ended.cancelled():
        ended.exception()  # its outcome is no one's: not an error left unretrieved
