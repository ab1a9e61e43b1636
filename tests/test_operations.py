"""Operations over HTTP: liveness, readiness, Prometheus metrics, request ids."""

from __future__ import annotations

import re
from pathlib import Path

import falcon.testing
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.settings import Settings

from . import samples
from .servers import MotoS3, free_port


def samples_of(exposition: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


async def test_liveness_and_readiness(client: falcon.testing.ASGIConductor) -> None:
    result = await client.simulate_get("/healthz")
    assert (result.status_code, result.json) == (200, {"status": "ok"})
    result = await client.simulate_get("/readyz")
    assert (result.status_code, result.json) == (
        200,
        {"status": "ready", "storage": "ok", "cache": "ok"},
    )


async def test_readiness_is_degraded_without_redis(
    moto: MotoS3, bucket: str, tmp_path: Path
) -> None:
    settings = Settings(
        _env_file=None,
        s3_bucket=bucket,
        anonymous_writes=True,
        s3_endpoint_url=moto.url,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        storage_path=tmp_path,
    )
    async with falcon.testing.ASGIConductor(create_app(settings)) as client:
        result = await client.simulate_get("/readyz")
        assert result.status_code == 200
        assert result.json["status"] == "degraded"
        assert result.json["storage"] == "ok"
        assert result.json["cache"].startswith("unavailable")
        # ... and the service works without it.
        assert (
            await client.simulate_post("/images", body=samples.jpeg((64, 64)))
        ).status_code == 201


async def test_readiness_fails_without_the_image_store(redis_url: str, tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,
        s3_bucket="photos",
        anonymous_writes=True,
        s3_endpoint_url=f"http://127.0.0.1:{free_port()}",
        s3_max_attempts=1,
        redis_url=redis_url,
        storage_path=tmp_path,
    )
    async with falcon.testing.ASGIConductor(create_app(settings)) as client:
        result = await client.simulate_get("/readyz")
        assert result.status_code == 503
        assert result.json["status"] == "unavailable"
        assert result.json["storage"].startswith("unavailable")
        assert result.json["cache"] == "ok"
        assert "Retry-After" in result.headers
        assert (await client.simulate_get("/healthz")).status_code == 200


async def test_metrics_count_requests_by_route_cache_renders_and_s3(
    client: falcon.testing.ASGIConductor, settings: Settings
) -> None:
    upload = samples.jpeg((512, 512))
    created = (await client.simulate_post("/images", body=upload)).json
    for _ in range(3):
        await client.simulate_get(created["thumbnails"][0])
    await client.simulate_get("/nowhere/at/all")

    result = await client.simulate_get("/metrics")
    assert result.status_code == 200
    assert result.headers["Content-Type"].startswith("text/plain")
    metrics = samples_of(result.text)
    thumbnail_route = "/thumbnails/{image_id:uuid}/{width:int}x{height:int}.jpeg"
    requests = "asgilook_http_requests_total"
    assert (
        metrics[(requests, (("method", "GET"), ("route", thumbnail_route), ("status", "200")))] == 3
    )
    assert metrics[(requests, (("method", "POST"), ("route", "/images"), ("status", "201")))] == 1
    assert metrics[(requests, (("method", "GET"), ("route", "unmatched"), ("status", "404")))] == 1
    assert metrics[("asgilook_cache_lookups_total", (("result", "hit"),))] == 2
    assert metrics[("asgilook_cache_lookups_total", (("result", "miss"),))] == 1
    image_work = "asgilook_image_render_seconds_count"
    assert metrics[(image_work, (("operation", "decode_and_render"),))] == 1
    # NOTE: an upright JPEG is stored as uploaded (strip), and checked meanwhile (check).
    for operation in ("identify", "strip", "check"):
        assert metrics[(image_work, (("operation", operation),))] == 1
    assert metrics[("asgilook_upload_bytes_sum", ())] == len(upload)
    assert metrics[("asgilook_http_requests_in_flight", ())] == 1  # this very request
    if settings.s3_bucket:
        assert (
            metrics[("asgilook_s3_request_duration_seconds_count", (("operation", "upload"),))] == 1
        )
        assert not any(name == "asgilook_s3_errors_total" for name, _ in metrics)


@pytest.mark.parametrize(
    ("given", "kept"),
    [("req-42.abc", True), ("", False), ("x" * 200, False), ("bad id\twith tab", False)],
)
async def test_request_id_is_echoed_or_generated(
    client: falcon.testing.ASGIConductor, given: str, kept: bool
) -> None:
    result = await client.simulate_get("/images", headers={"X-Request-ID": given})
    echoed = result.headers["X-Request-ID"]
    if kept:
        assert echoed == given
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", echoed)
        again = await client.simulate_get("/images", headers={"X-Request-ID": given})
        assert again.headers["X-Request-ID"] != echoed


async def test_a_cache_hit_carries_its_own_request_id(client: falcon.testing.ASGIConductor) -> None:
    await client.simulate_post("/images", body=samples.jpeg((128, 128)))
    first = await client.simulate_get("/images", headers={"X-Request-ID": "first"})
    second = await client.simulate_get("/images", headers={"X-Request-ID": "second"})
    assert second.headers["X-ASGILook-Cache"] == "Hit"
    assert (first.headers["X-Request-ID"], second.headers["X-Request-ID"]) == ("first", "second")
