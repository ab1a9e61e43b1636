"""The image threads' memory budget: jobs hold at most its bytes at once, in arrival order."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import falcon.testing

from service.app import create_app
from service.metrics import Metrics
from service.settings import Settings
from service.workers import ImageWorkers, MemoryBudget

from . import samples


class Jobs:
    """Jobs that hold their bytes of a budget until told to finish; what ran, in order."""

    def __init__(self, budget: MemoryBudget) -> None:
        self.budget = budget
        self.started: list[str] = []
        self._finish: dict[str, asyncio.Event] = {}

    def start(self, name: str, nbytes: int) -> asyncio.Task[None]:
        self._finish[name] = asyncio.Event()

        async def job() -> None:
            async with self.budget.reserved(nbytes):
                self.started.append(name)
                await self._finish[name].wait()

        return asyncio.ensure_future(job())

    async def finish(self, name: str) -> None:
        self._finish[name].set()
        await settled()  # the job ends and the next ones start


async def settled() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_jobs_run_together_while_their_bytes_fit() -> None:
    jobs = Jobs(MemoryBudget(100))
    jobs.start("a", 40)
    jobs.start("b", 60)
    jobs.start("c", 10)
    await settled()
    assert jobs.started == ["a", "b"]
    await jobs.finish("a")
    assert jobs.started == ["a", "b", "c"]


async def test_a_large_job_is_not_passed_over_by_later_small_ones() -> None:
    jobs = Jobs(MemoryBudget(100))
    jobs.start("small", 30)
    jobs.start("large", 90)
    jobs.start("later", 20)  # would fit beside "small", but "large" waits before it
    await settled()
    assert jobs.started == ["small"]
    await jobs.finish("small")
    assert jobs.started == ["small", "large"]
    await jobs.finish("large")
    assert jobs.started == ["small", "large", "later"]


async def test_a_job_larger_than_the_budget_runs_alone() -> None:
    jobs = Jobs(MemoryBudget(100))
    jobs.start("first", 10)
    jobs.start("huge", 500)
    jobs.start("next", 10)
    await settled()
    assert jobs.started == ["first"]
    await jobs.finish("first")
    assert jobs.started == ["first", "huge"]
    await jobs.finish("huge")
    assert jobs.started == ["first", "huge", "next"]


async def test_a_job_cancelled_while_it_waits_holds_nothing() -> None:
    jobs = Jobs(MemoryBudget(100))
    jobs.start("running", 80)
    waiting = jobs.start("cancelled", 50)
    jobs.start("next", 20)
    await settled()
    waiting.cancel()
    await settled()
    assert jobs.started == ["running", "next"]  # it no longer holds the queue up
    await jobs.finish("running")
    jobs.start("after", 80)
    await settled()
    assert jobs.started == ["running", "next", "after"]  # nor any bytes


async def test_a_job_cancelled_as_its_turn_comes_gives_its_bytes_back() -> None:
    jobs = Jobs(MemoryBudget(100))
    jobs.start("running", 80)
    granted = jobs.start("granted", 50)
    await settled()
    await jobs.finish("running")  # "granted" gets its bytes ...
    granted.cancel()  # ... and is cancelled before it runs, or as it starts
    await settled()
    jobs.start("after", 100)
    await settled()
    assert jobs.started[-1] == "after"


async def test_a_job_cancelled_while_its_thread_runs_ends_with_the_thread() -> None:
    """A thread cannot be stopped: until it ends, what it reads and writes stays open (the
    caller closes it after the job) and its bytes stay counted."""
    release, started = threading.Event(), threading.Event()

    def blocking() -> str:
        started.set()
        release.wait(10)
        return "late"

    async with ImageWorkers(threads=2, queue=4, memory_bytes=100, metrics=Metrics()) as workers:
        running = asyncio.ensure_future(workers.run(blocking, memory=100))
        await asyncio.to_thread(started.wait, 10)
        running.cancel()
        after = asyncio.ensure_future(workers.run(lambda: "after", memory=100))
        await asyncio.sleep(0.2)
        assert not running.done()
        assert not after.done()  # the cancelled job's thread still holds the budget

        release.set()
        await asyncio.wait([running])
        assert running.cancelled()
        assert await after == "after"


async def test_a_job_cancelled_before_a_thread_takes_it_never_runs() -> None:
    release, ran = threading.Event(), threading.Event()
    async with ImageWorkers(threads=1, queue=4, memory_bytes=100, metrics=Metrics()) as workers:
        busy = asyncio.ensure_future(workers.in_thread(release.wait, 10))
        queued = asyncio.ensure_future(workers.in_thread(ran.set))
        await asyncio.sleep(0.05)
        queued.cancel()
        await asyncio.wait([queued])
        assert queued.cancelled()  # at once: no thread to wait for
        release.set()
        await busy
    assert not ran.is_set()


async def test_thumbnails_render_within_a_budget_smaller_than_any_of_them(
    tmp_path: Path,
) -> None:
    settings = Settings(_env_file=None, storage_path=tmp_path, image_memory_bytes=1)
    async with falcon.testing.ASGIConductor(create_app(settings)) as client:
        image = (await client.simulate_post("/images", body=samples.jpeg((1600, 1200)))).json
        results = await asyncio.gather(*(client.simulate_get(p) for p in image["thumbnails"]))
        assert [result.status_code for result in results] == [200] * len(image["thumbnails"])
