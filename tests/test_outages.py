"""S3 or Redis going away mid-test: no 500s, a 503 with Retry-After, and recovery by itself."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import falcon.testing
import pytest

from service.app import create_app
from service.cache import REDIS_RETRY_SECONDS
from service.settings import Settings

from . import samples
from .servers import MotoS3, RedisServer


@pytest.fixture
def own_moto() -> Iterator[MotoS3]:
    server = MotoS3().start()
    yield server
    server.stop()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


async def test_s3_down_is_503_with_retry_after_then_recovers(
    own_moto: MotoS3, redis_url: str, tmp_path: Path
) -> None:
    own_moto.client().create_bucket(Bucket="photos")
    settings = Settings(
        _env_file=None,
        s3_bucket="photos",
        s3_endpoint_url=own_moto.url,
        s3_max_attempts=2,  # quicker 503s for this test
        redis_url=redis_url,
        storage_path=tmp_path,
    )
    async with falcon.testing.ASGIConductor(create_app(settings)) as client:
        created = (await client.simulate_post("/images", body=samples.jpeg((256, 256)))).json
        cached_thumbnail = created["thumbnails"][0]
        assert (await client.simulate_get(cached_thumbnail)).status_code == 200

        own_moto.stop()
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

        own_moto.start()  # same port, same data
        assert (await client.simulate_get(created["image"])).status_code == 200
        assert [entry["id"] for entry in (await client.simulate_get("/images?limit=7")).json] == [
            created["id"]
        ]
        assert (
            await client.simulate_post("/images", body=samples.jpeg((128, 128)))
        ).status_code == 201
        # The upload that failed while S3 was down left nothing behind.
        assert len((await client.simulate_get("/images?limit=8")).json) == 2
        keys = own_moto.client().list_objects_v2(Bucket="photos")["Contents"]
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
