"""The cache stores' own logic: generations, late stores, the byte budget, expiry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.cache import Cache, MemoryCache, RedisCache
from service.metrics import Metrics


@pytest.fixture(params=["redis", "memory"])
async def cache(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cache]:
    store: RedisCache | MemoryCache
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        store = RedisCache(url, ttl=60, metrics=Metrics(), local_max_bytes=1 << 20)
    else:
        store = MemoryCache(1024 * 1024, ttl=60, generations=tmp_path / "generations")
    async with store:
        yield store


async def test_values_round_trip(cache: Cache) -> None:
    value = [200, {"content-type": "image/jpeg"}, b"\xff\xd8 bytes"]
    missing, generation = await cache.get("image:1", "/thumbnails/1/64x64.jpeg?")
    assert missing is None
    await cache.set("image:1", "/thumbnails/1/64x64.jpeg?", generation, value)
    assert (await cache.get("image:1", "/thumbnails/1/64x64.jpeg?"))[0] == value
    assert (await cache.get("image:1", "/thumbnails/1/64x64.jpeg?a=b"))[0] is None


async def test_invalidation_drops_every_key_of_the_namespace_only(cache: Cache) -> None:
    for namespace, key in [
        ("listing", "/images?"),
        ("listing", "/images?limit=5"),
        ("image:2", "/x?"),
    ]:
        _, generation = await cache.get(namespace, key)
        await cache.set(namespace, key, generation, b"cached")
    await cache.invalidate("listing")
    assert (await cache.get("listing", "/images?"))[0] is None
    assert (await cache.get("listing", "/images?limit=5"))[0] is None
    assert (await cache.get("image:2", "/x?"))[0] == b"cached"


async def test_a_value_stored_after_an_invalidation_it_predates_is_never_served(
    cache: Cache,
) -> None:
    _, generation = await cache.get("listing", "/images?")  # a slow request starts
    await cache.invalidate("listing")  # an upload lands meanwhile
    await cache.set("listing", "/images?", generation, b"stale listing")  # the slow one stores
    assert (await cache.get("listing", "/images?"))[0] is None


async def test_memory_cache_evicts_the_least_recently_used_past_its_budget(tmp_path: Path) -> None:
    async with MemoryCache(40_000, ttl=60, generations=tmp_path) as cache:
        for name in "abcd":
            _, generation = await cache.get("ns", name)
            await cache.set("ns", name, generation, b"x" * 9_000)
        await cache.get("ns", "a")  # a is now the most recently used
        _, generation = await cache.get("ns", "e")
        await cache.set("ns", "e", generation, b"x" * 9_000)
        present = [name for name in "abcde" if (await cache.get("ns", name))[0] is not None]
        assert present == ["a", "c", "d", "e"]

        _, generation = await cache.get("ns", "huge")
        await cache.set("ns", "huge", generation, b"x" * 20_000)  # over a quarter of the budget
        assert (await cache.get("ns", "huge"))[0] is None
        assert (await cache.get("ns", "e"))[0] is not None


async def test_entries_expire(tmp_path: Path, redis_url: str) -> None:
    stores = [
        MemoryCache(10_000, ttl=1, generations=tmp_path),
        RedisCache(redis_url, ttl=1, metrics=Metrics(), local_max_bytes=1 << 20),
    ]
    for store in stores:
        async with store as cache:
            _, generation = await cache.get("ns", "key")
            await cache.set("ns", "key", generation, b"value")
            assert (await cache.get("ns", "key"))[0] == b"value"
            await asyncio.sleep(1.1)
            assert (await cache.get("ns", "key"))[0] is None


async def test_redis_cache_keeps_hot_entries_in_process_and_drops_them_on_announcements(
    redis_url: str,
) -> None:
    first = RedisCache(redis_url, ttl=60, metrics=Metrics(), local_max_bytes=1 << 20)
    second = RedisCache(redis_url, ttl=60, metrics=Metrics(), local_max_bytes=1 << 20)
    async with first, second:
        await asyncio.sleep(0.1)  # both subscribed
        _, generation = await first.get("image:1", "/t?")
        await first.set("image:1", "/t?", generation, [200, {}, b"thumbnail", "/t"])
        assert first.peek("/t?") is None  # not hot yet: asked for once
        assert (await first.get("image:1", "/t?"))[0] is not None
        assert first.peek("/t?") == [200, {}, b"thumbnail", "/t"]  # no Redis call needed
        assert second.peek("/t?") is None  # not read there yet
        assert (await second.get("image:1", "/t?"))[0] is not None
        assert second.peek("/t?") is not None

        await second.invalidate("image:1")
        await asyncio.sleep(0.05)
        assert first.peek("/t?") is None
        assert second.peek("/t?") is None
        assert (await first.get("image:1", "/t?"))[0] is None


async def test_redis_cache_closes_whenever_it_is_closed(redis_url: str) -> None:
    """Closing while the invalidation listener still subscribes must not hang: redis-py
    subscribes through asyncio.wait_for, which in Python 3.11 can swallow a cancellation."""
    for step in range(60):
        store = RedisCache(redis_url, ttl=60, metrics=Metrics(), local_max_bytes=1 << 20)
        async with asyncio.timeout(5):
            async with store:
                await asyncio.sleep(step / 10_000)  # 0 to 6 ms: every stage of subscribing
