"""Browser clients on other origins: CORS for the configured origins only."""

from __future__ import annotations

from collections.abc import AsyncIterator

import falcon.testing
import pytest

from service.app import create_app
from service.settings import Settings

from . import samples

APP_ORIGIN = "https://photos.example.com"


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[falcon.testing.ASGIConductor]:
    configured = Settings(
        **{**settings.model_dump(), "cors_origins": f"{APP_ORIGIN}, https://other.example"},
        _env_file=None,
    )
    async with falcon.testing.ASGIConductor(create_app(configured)) as conductor:
        yield conductor


async def test_a_preflight_allows_the_methods_and_the_headers_of_an_upload(
    client: falcon.testing.ASGIConductor,
) -> None:
    result = await client.simulate_options(
        "/images",
        headers={
            "Origin": APP_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-evil",
        },
    )
    assert result.status_code == 200
    assert result.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert set(result.headers["Access-Control-Allow-Methods"].split(", ")) >= {"GET", "POST"}
    allowed = {
        name.strip().lower() for name in result.headers["Access-Control-Allow-Headers"].split(",")
    }
    assert {"authorization", "content-type"} <= allowed
    assert "x-evil" not in allowed


@pytest.mark.parametrize("cached", [False, True])
async def test_responses_expose_their_headers_to_allowed_origins(
    client: falcon.testing.ASGIConductor, cached: bool
) -> None:
    created = await client.simulate_post(
        "/images", body=samples.jpeg((256, 192)), headers={"Origin": APP_ORIGIN}
    )
    assert created.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    exposed = {name.strip() for name in created.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"Location", "ETag", "Link", "X-ASGILook-Cache", "Retry-After", "RateLimit",
            "RateLimit-Policy"} <= exposed  # fmt: skip
    thumbnail = created.json["thumbnails"][0]
    if cached:  # a hit, held in process: still answered with the CORS headers
        await client.simulate_get(thumbnail)
        await client.simulate_get(thumbnail)
    result = await client.simulate_get(thumbnail, headers={"Origin": APP_ORIGIN})
    assert result.status_code == 200
    assert result.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "Origin" in result.headers["Vary"]
    assert result.headers["X-Content-Type-Options"] == "nosniff"


async def test_other_origins_get_no_cors_headers(client: falcon.testing.ASGIConductor) -> None:
    result = await client.simulate_get("/images", headers={"Origin": "https://evil.example"})
    assert result.status_code == 200
    assert "Access-Control-Allow-Origin" not in result.headers


async def test_without_origins_configured_there_is_no_cors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    app = create_app(Settings(_env_file=None, storage_path=tmp_path))
    async with falcon.testing.ASGIConductor(app) as client:
        result = await client.simulate_get("/images", headers={"Origin": APP_ORIGIN})
        assert "Access-Control-Allow-Origin" not in result.headers
