"""Rate limits on uploads and thumbnail renders: per key or client address, answered 429 with
Retry-After and the IETF RateLimit headers, shared by every worker through Redis."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import falcon.testing
import httpx
import pytest

from service.access import keys
from service.app import create_app
from service.settings import Settings

from . import samples
from .servers import RedisServer, Uvicorn

ALICE, BOB = keys.new_key(), keys.new_key()
ENTRIES = f"{keys.entry('alice', 'uploader', ALICE)},{keys.entry('bob', 'uploader', BOB)}"
PHOTO = samples.jpeg((1024, 768))  # three thumbnail sizes


@pytest.fixture
async def client(
    request: pytest.FixtureRequest, settings: Settings
) -> AsyncIterator[falcon.testing.ASGIConductor]:
    limited = Settings(
        **{
            **settings.model_dump(exclude={"api_keys"}),
            "api_keys": ENTRIES,
            "anonymous_writes": True,
            "rate_limit_uploads": "3/minute",
            "rate_limit_renders": "2/minute",
        },
        _env_file=None,
    )
    async with falcon.testing.ASGIConductor(create_app(limited)) as conductor:
        yield conductor


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_uploads_over_the_limit_are_429_per_key(
    client: falcon.testing.ASGIConductor,
) -> None:
    for remaining in (2, 1, 0):
        created = await client.simulate_post("/images", body=PHOTO, headers=bearer(ALICE))
        assert created.status_code == 201
        assert created.headers["RateLimit-Policy"] == '"uploads";q=3;w=60'
        assert re.fullmatch(rf'"uploads";r={remaining};t=\d+', created.headers["RateLimit"])

    refused = await client.simulate_post("/images", body=PHOTO, headers=bearer(ALICE))
    assert refused.status_code == 429
    assert refused.json["title"] == "Too many requests"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["RateLimit-Policy"] == '"uploads";q=3;w=60'
    assert refused.headers["RateLimit"].startswith('"uploads";r=0;t=')
    assert len((await client.simulate_get("/images")).json) == 3  # nothing more stored

    # Each key has its own count, and requests without one count by client address.
    assert (
        await client.simulate_post("/images", body=PHOTO, headers=bearer(BOB))
    ).status_code == 201
    for _ in range(3):
        assert (await client.simulate_post("/images", body=PHOTO)).status_code == 201
    assert (await client.simulate_post("/images", body=PHOTO)).status_code == 429


async def test_renders_are_limited_but_cached_thumbnails_are_not(
    client: falcon.testing.ASGIConductor,
) -> None:
    image = (await client.simulate_post("/images", body=PHOTO, headers=bearer(ALICE))).json
    first, second, third = image["thumbnails"][:3]
    for _ in range(3):  # what renders nothing counts for nothing
        assert (await client.simulate_get(f"/thumbnails/{image['id']}/7x7.jpeg")).status_code == 404
    assert (await client.simulate_get(first)).status_code == 200
    assert (await client.simulate_get(second)).status_code == 200
    refused = await client.simulate_get(third)
    assert refused.status_code == 429
    assert refused.headers["RateLimit-Policy"] == '"renders";q=2;w=60'
    assert "Cache-Control" not in refused.headers and "ETag" not in refused.headers
    for _ in range(5):  # hits cost nothing
        hit = await client.simulate_get(first)
        assert (hit.status_code, hit.headers["X-ASGILook-Cache"]) == (200, "Hit")
    # Another caller renders on its own count.
    assert (await client.simulate_get(third, headers=bearer(BOB))).status_code == 200


@pytest.mark.slow
def test_a_limit_is_shared_by_every_worker_through_redis(redis_url: str, tmp_path: Path) -> None:
    (tmp_path / "metrics").mkdir()
    server = Uvicorn(
        {
            "ASGILOOK_STORAGE_PATH": str(tmp_path / "data"),
            "ASGILOOK_REDIS_URL": redis_url,
            "ASGILOOK_API_KEYS": ENTRIES,
            "ASGILOOK_ANONYMOUS_WRITES": "true",
            "ASGILOOK_RATE_LIMIT_UPLOADS": "5/minute",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        },
        workers=2,
    ).start()
    try:
        statuses = []
        for _ in range(12):  # a new connection each: both workers take uploads
            with httpx.Client(base_url=server.url) as http:
                statuses.append(
                    http.post("/images", content=PHOTO, headers=bearer(ALICE)).status_code
                )
        workers = {path.name for path in (tmp_path / "metrics").glob("counter_*.db")}
        assert len(workers) == 2, "both workers must have answered"
        assert statuses.count(201) == 5 and statuses.count(429) == 7, statuses
        # Anonymous uploads count by client address, as uvicorn reports it from the proxy
        # headers it trusts (127.0.0.1 by default): one client's limit is not another's.
        for client_address in ("198.51.100.7", "198.51.100.8"):
            forwarded = {"X-Forwarded-For": client_address}
            with httpx.Client(base_url=server.url) as http:
                answers = [
                    http.post("/images", content=PHOTO, headers=forwarded).status_code
                    for _ in range(6)
                ]
            assert answers == [201] * 5 + [429], (client_address, answers)
    finally:
        server.close()


@pytest.mark.skipif(not RedisServer.real, reason="needs a real redis-server to stop")
async def test_limits_are_not_enforced_while_redis_is_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer().start()
    settings: dict[str, Any] = {
        "_env_file": None,
        "storage_path": tmp_path,
        "redis_url": server.url,
        "rate_limit_uploads": "1/minute",
    }
    async with falcon.testing.ASGIConductor(create_app(Settings(**settings))) as client:
        assert (await client.simulate_post("/images", body=PHOTO)).status_code == 201
        assert (await client.simulate_post("/images", body=PHOTO)).status_code == 429
        server.stop()
        # Uploads go on (the image store is up), and the lapse is logged once.
        for _ in range(2):
            assert (await client.simulate_post("/images", body=PHOTO)).status_code == 201
    assert caplog.text.count("rate limits not enforced") == 1
