"""S3 or Redis going away mid-test: no 500s, a 503 with Retry-After, and recovery by itself."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import falcon.testing
import pytest
from PIL import Image

from service.app import create_app
from service.cache import REDIS_RETRY_SECONDS
from service.settings import Settings

from . import samples
from .servers import FaultyProxy, MotoS3, RedisServer


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


DOWN, BACK = "Redis cache unavailable", "Redis cache is back"


def cache_lines(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in record.getMessage() for record in caplog.records)


def pooled_connections(server: RedisServer) -> int:
    """Connections whose last command was one of the cache's (the test's own ones excluded)."""
    clients = server.client().client_list()
    return sum(client["cmd"] in ("mget", "set", "publish") for client in clients)


async def answers(
    client: falcon.testing.ASGIConductor, paths: list[str]
) -> dict[str, tuple[int, object, str]]:
    """Every path asked at once: status, what the body says (listing JSON, JPEG size), cache."""
    results = await asyncio.gather(*(client.simulate_get(path) for path in paths))
    seen: dict[str, tuple[int, object, str]] = {}
    for path, result in zip(paths, results, strict=True):
        body: object = result.json if path.startswith("/images") else None
        if path.startswith("/thumbnails") and result.status_code == 200:
            body = Image.open(io.BytesIO(result.content)).size
        seen[path] = (result.status_code, body, result.headers.get("X-ASGILook-Cache", ""))
    return seen


async def ramp(
    client: falcon.testing.ASGIConductor, listing: list[object], rounds: int, pause: float
) -> None:
    """Rounds of 1, 2, 3, ... requests at once, each for a listing page never asked before (so
    each goes to Redis): every round takes one more pooled connection than the last.
    """
    limit = 100
    for width in range(1, rounds + 1):
        paths = [f"/images?limit={limit + offset}" for offset in range(width)]
        limit += width
        for status, body, _ in (await answers(client, paths)).values():
            assert (status, body) == (200, listing)
        await asyncio.sleep(pause)


async def test_s3_down_is_503_with_retry_after_then_recovers(
    moto: MotoS3, bucket: str, proxy: FaultyProxy, redis_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        _env_file=None,
        s3_bucket=bucket,
        anonymous_writes=True,
        s3_endpoint_url=proxy.url,
        s3_max_attempts=2,  # quicker 503s for this test
        redis_url=redis_url,
        storage_path=tmp_path,
    )
    async with falcon.testing.ASGIConductor(create_app(settings)) as client:
        created = (await client.simulate_post("/images", body=samples.jpeg((256, 256)))).json
        cached_thumbnail = created["thumbnails"][0]
        assert (await client.simulate_get(cached_thumbnail)).status_code == 200

        proxy.refuse_connections()
        for method, path, body in [
            ("GET", "/images?limit=7", None),
            ("GET", created["image"], None),
            ("GET", created["thumbnails"][1], None),
            ("POST", "/images", samples.jpeg((128, 128))),
            ("DELETE", created["image"], None),
        ]:
            result = await client.simulate_request(method, path, body=body)
            assert result.status_code == 503, (method, path, result.text)
            assert int(result.headers["Retry-After"]) > 0
            assert result.json["title"] == "Storage unavailable"
        # What is cached is still served.
        assert (await client.simulate_get(cached_thumbnail)).status_code == 200

        proxy.accept_connections()  # same port, same data
        assert (await client.simulate_get(created["image"])).status_code == 200
        assert [entry["id"] for entry in (await client.simulate_get("/images?limit=7")).json] == [
            created["id"]
        ]
        assert (
            await client.simulate_post("/images", body=samples.jpeg((128, 128)))
        ).status_code == 201
        # The upload that failed while S3 was down left nothing behind.
        assert len((await client.simulate_get("/images?limit=8")).json) == 2
        keys = moto.client().list_objects_v2(Bucket=bucket)["Contents"]
        assert len(keys) == 2 * 3


async def test_redis_down_serves_without_cache_then_uses_it_again(
    own_redis: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(_env_file=None, redis_url=own_redis.url, storage_path=tmp_path)
    async with falcon.testing.ASGIConductor(create_app(settings)) as client:
        created = (await client.simulate_post("/images", body=samples.jpeg((256, 256)))).json
        thumbnail = created["thumbnails"][0]
        await client.simulate_get(thumbnail)
        assert (await client.simulate_get(thumbnail)).headers["X-ASGILook-Cache"] == "Hit"

        own_redis.stop()
        await asyncio.sleep(0.1)  # the copy kept in front of Redis is dropped once it is noticed
        for _ in range(2):
            result = await client.simulate_get(thumbnail)
            assert result.status_code == 200
            assert result.headers["X-ASGILook-Cache"] == "Miss"
        other = (await client.simulate_post("/images", body=samples.jpeg((256, 256)))).json
        assert len((await client.simulate_get("/images")).json) == 2
        assert (await client.simulate_delete(other["image"])).status_code == 204
        assert [entry["id"] for entry in (await client.simulate_get("/images")).json] == [
            created["id"]
        ]
        assert "Redis cache unavailable" in caplog.text

        own_redis.start()
        await asyncio.sleep(REDIS_RETRY_SECONDS + 0.1)
        assert (await client.simulate_get(thumbnail)).headers["X-ASGILook-Cache"] == "Miss"
        assert (await client.simulate_get(thumbnail)).headers["X-ASGILook-Cache"] == "Hit"


@pytest.mark.skipif(not RedisServer.real, reason="CLIENT PAUSE needs a real redis-server")
async def test_deletes_during_a_redis_stall_are_not_served_stale_after_it(
    redis_server: RedisServer, redis_url: str, tmp_path: Path
) -> None:
    """Redis unreachable but not restarted (a stall or a partition): its entries survive it."""
    settings = Settings(_env_file=None, redis_url=redis_url, storage_path=tmp_path)
    async with falcon.testing.ASGIConductor(create_app(settings)) as client:
        created = (await client.simulate_post("/images", body=samples.jpeg((256, 256)))).json
        thumbnail = created["thumbnails"][0]
        await client.simulate_get(thumbnail)
        await client.simulate_get("/images")
        assert (await client.simulate_get(thumbnail)).headers["X-ASGILook-Cache"] == "Hit"

        redis_server.client().execute_command("CLIENT", "PAUSE", "1500", "ALL")
        assert (await client.simulate_delete(created["image"])).status_code == 204
        await asyncio.sleep(1.6)  # the pause is over; the entries are still in Redis

        assert (await client.simulate_get(thumbnail)).status_code == 404
        assert (await client.simulate_get("/images")).json == []


async def warm_pool(
    client: falcon.testing.ASGIConductor, redis_server: RedisServer, created: list[dict[str, Any]]
) -> tuple[list[str], dict[str, tuple[int, object]]]:
    """The thumbnails and listing pages to ask for, and their answers; several connections
    pooled by asking for all of them at once."""
    paths = [thumbnail for image in created for thumbnail in image["thumbnails"]]
    paths += [f"/images?limit={limit}" for limit in range(1, 9)]
    expected = {path: seen[:2] for path, seen in (await answers(client, paths)).items()}
    assert all(status == 200 for status, _ in expected.values())
    await answers(client, paths * 2)
    assert pooled_connections(redis_server) >= 4
    return paths, expected


@pytest.mark.skipif(not RedisServer.real, reason="restarts need a real redis-server")
async def test_a_redis_restart_between_requests_is_not_an_outage(
    own_redis: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The pooled connections of before the restart are dead: each is replaced, not logged."""
    settings = Settings(_env_file=None, redis_url=own_redis.url, storage_path=tmp_path)
    async with falcon.testing.ASGIConductor(create_app(settings)) as client:
        created = [
            (await client.simulate_post("/images", body=samples.jpeg((256, 256)))).json
            for _ in range(2)
        ]
        paths, expected = await warm_pool(client, own_redis, created)

        own_redis.stop()  # blocks the event loop: no request during the restart
        own_redis.start()
        await asyncio.sleep(0.1)  # the invalidation channel notices: the copies in process go
        await ramp(client, created, rounds=16, pause=0.02)
        for _ in range(2):
            seen = await answers(client, paths * 3)
            assert {path: answer[:2] for path, answer in seen.items()} == expected
        # Redis was used all along: what the first round stored is served from it.
        assert {seen[path][2] for path in paths} == {"Hit"}

        # A write right after: no stale answer anywhere.
        assert (await client.simulate_delete(created[0]["image"])).status_code == 204
        seen = await answers(client, paths)
        for path in created[0]["thumbnails"]:
            assert seen[path][0] == 404
        assert seen["/images?limit=8"][1] == [created[1]]
        await asyncio.sleep(REDIS_RETRY_SECONDS + 0.2)  # the invalidation channel is back
        again = await answers(client, paths)
        assert {path: answer[:2] for path, answer in again.items()} == {
            path: answer[:2] for path, answer in seen.items()
        }

    assert cache_lines(caplog, DOWN) == cache_lines(caplog, BACK) == 0


@pytest.mark.skipif(not RedisServer.real, reason="restarts need a real redis-server")
async def test_one_redis_outage_logs_one_down_and_one_up_line(
    own_redis: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(_env_file=None, redis_url=own_redis.url, storage_path=tmp_path)
    async with falcon.testing.ASGIConductor(create_app(settings)) as client:
        created = (await client.simulate_post("/images", body=samples.jpeg((256, 256)))).json
        paths, expected = await warm_pool(client, own_redis, [created])

        own_redis.stop()
        await asyncio.sleep(0.1)
        # One request at a time, for longer than REDIS_RETRY_SECONDS (Redis is asked again):
        # most pooled connections are left as they were, dead, for when Redis is back.
        for _ in range(4):
            for path in paths:
                assert (await answers(client, [path]))[path][:2] == expected[path]
            await asyncio.sleep(0.4)
        assert cache_lines(caplog, DOWN) == 1
        assert cache_lines(caplog, BACK) == 0

        own_redis.start()
        await ramp(client, [created], rounds=20, pause=0.1)  # a couple of seconds
        for _ in range(2):
            seen = await answers(client, paths * 3)
            assert {path: answer[:2] for path, answer in seen.items()} == expected
        assert {seen[path][2] for path in paths} == {"Hit"}

    assert cache_lines(caplog, DOWN) == 1
    assert cache_lines(caplog, BACK) == 1
