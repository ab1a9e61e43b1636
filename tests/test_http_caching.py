"""HTTP validators, conditional requests, HEAD and byte ranges on images and thumbnails."""

from __future__ import annotations

from datetime import timedelta

import falcon
import pytest
from falcon.testing import ASGIConductor

from . import samples
from .test_operations import samples_of

IMMUTABLE = "public, max-age=31536000, immutable"


@pytest.fixture
async def image(client: ASGIConductor) -> dict:
    result = await client.simulate_post("/images", body=samples.jpeg((640, 480)))
    return result.json


async def test_images_carry_strong_immutable_validators(client: ASGIConductor, image: dict) -> None:
    result = await client.simulate_get(image["image"])
    assert result.headers["ETag"] == f'"{image["id"]}"'
    assert result.headers["Last-Modified"] == image["modified"]
    assert result.headers["Cache-Control"] == IMMUTABLE
    assert result.headers["Accept-Ranges"] == "bytes"

    for path in [image["thumbnails"][0], image["thumbnails"][0]]:  # a miss, then a hit
        result = await client.simulate_get(path)
        assert result.headers["ETag"].startswith(f'"{image["id"]}-320x240')
        assert result.headers["Last-Modified"] == image["modified"]
        assert result.headers["Cache-Control"] == IMMUTABLE


@pytest.mark.parametrize("which", ["image", "thumbnail-miss", "thumbnail-hit"])
async def test_conditional_gets_answer_304(client: ASGIConductor, image: dict, which: str) -> None:
    path = image["image"] if which == "image" else image["thumbnails"][0]
    etag = (await client.simulate_get(path)).headers["ETag"]
    if which == "thumbnail-miss":
        await client.simulate_delete(image["image"])  # the cached copy goes away...
        image = (await client.simulate_post("/images", body=samples.jpeg((640, 480)))).json
        path = image["thumbnails"][0]  # ...and this one was never rendered
        etag = etag.replace(etag.split("-320x240")[0][1:], image["id"])
    modified = falcon.http_date_to_dt(image["modified"])

    for headers in [
        {"If-None-Match": etag},
        {"If-None-Match": f"W/{etag}"},
        {"If-None-Match": f'"something-else", {etag}'},
        {"If-None-Match": "*"},
        {"If-Modified-Since": falcon.dt_to_http(modified)},
        {"If-Modified-Since": falcon.dt_to_http(modified + timedelta(days=1))},
    ]:
        result = await client.simulate_get(path, headers=headers)
        assert result.status_code == 304, headers
        assert result.content == b""
        assert result.headers["ETag"] == etag

    for headers in [
        {"If-None-Match": '"something-else"'},
        {"If-Modified-Since": falcon.dt_to_http(modified - timedelta(seconds=1))},
        # If-None-Match takes precedence over If-Modified-Since:
        {"If-None-Match": '"other"', "If-Modified-Since": falcon.dt_to_http(modified)},
        # An invalid date is ignored (RFC 9110, 13.1.3), not refused:
        {"If-Modified-Since": "yesterday"},
        {"If-Modified-Since": "Mon, 32 Foo 2026 99:99:99 GMT"},
        {"If-Modified-Since": falcon.dt_to_http(modified) + " and more"},
    ]:
        result = await client.simulate_get(path, headers=headers)
        assert result.status_code == 200, headers
        assert len(result.content) > 100


async def test_conditional_get_of_a_deleted_image_is_404(
    client: ASGIConductor, image: dict
) -> None:
    etags = {
        path: (await client.simulate_get(path)).headers["ETag"]
        for path in [image["image"], image["thumbnails"][0]]
    }
    await client.simulate_delete(image["image"])
    for path, etag in etags.items():
        assert (await client.simulate_get(path, headers={"If-None-Match": etag})).status_code == 404


async def test_head_gives_the_headers_of_get_without_a_body(
    client: ASGIConductor, image: dict
) -> None:
    for path in [image["image"], image["thumbnails"][0], image["thumbnails"][0]]:
        get = await client.simulate_get(path)
        head = await client.simulate_head(path)
        assert head.status_code == 200
        assert head.content == b""
        assert int(head.headers["Content-Length"]) == len(get.content)
        for header in ["Content-Type", "ETag", "Last-Modified", "Cache-Control"]:
            assert head.headers[header] == get.headers[header]
    assert (
        await client.simulate_head("/images/01936a00-0000-7000-8000-0000000000ff.jpeg")
    ).status_code == 404
    assert (
        await client.simulate_head(image["thumbnails"][0].replace("320x240", "10x10"))
    ).status_code == 404


async def test_byte_ranges(client: ASGIConductor, image: dict) -> None:
    whole = (await client.simulate_get(image["image"])).content
    size = len(whole)
    for header, (start, end) in [
        ("bytes=0-99", (0, 99)),
        ("bytes=100-", (100, size - 1)),
        ("bytes=-250", (size - 250, size - 1)),
        (f"bytes=10-{size + 500}", (10, size - 1)),
        (f"bytes={size - 1}-{size - 1}", (size - 1, size - 1)),
    ]:
        result = await client.simulate_get(image["image"], headers={"Range": header})
        assert result.status_code == 206, header
        assert result.headers["Content-Range"] == f"bytes {start}-{end}/{size}"
        assert result.content == whole[start : end + 1]
        assert int(result.headers["Content-Length"]) == end - start + 1

    result = await client.simulate_get(image["image"], headers={"Range": f"bytes={size}-"})
    assert result.status_code == 416
    assert result.headers["Content-Range"] == f"bytes */{size}"

    for ignored in ["bytes=abc", "bytes=0-1,5-6", "items=0-5"]:
        result = await client.simulate_get(image["image"], headers={"Range": ignored})
        assert (result.status_code, result.content) == (200, whole), ignored

    etag = f'"{image["id"]}"'
    result = await client.simulate_get(
        image["image"], headers={"Range": "bytes=0-9", "If-Range": etag}
    )
    assert (result.status_code, result.content) == (206, whole[:10])
    result = await client.simulate_get(
        image["image"], headers={"Range": "bytes=0-9", "If-Range": '"stale"'}
    )
    assert (result.status_code, result.content) == (200, whole)


async def test_hot_hits_answer_exactly_as_the_first_response_did(
    client: ASGIConductor, image: dict
) -> None:
    """Hot hits are answered in front of Falcon: same bytes and headers, own id, counted."""
    path = image["thumbnails"][0]
    first = await client.simulate_get(path)
    hits = [await client.simulate_get(path, headers={"X-Request-ID": f"hit-{n}"}) for n in range(3)]
    for n, hit in enumerate(hits):
        assert (hit.status_code, hit.headers["X-ASGILook-Cache"]) == (200, "Hit")
        assert hit.headers["X-Request-ID"] == f"hit-{n}"
        assert hit.content == first.content
        for name in ("Content-Type", "Content-Length", "ETag", "Last-Modified", "Cache-Control"):
            assert hit.headers[name] == first.headers[name]
    metrics = samples_of((await client.simulate_get("/metrics")).text)
    route = "/thumbnails/{image_id:uuid}/{width:int}x{height:int}.jpeg"
    labels = (("method", "GET"), ("route", route), ("status", "200"))
    assert metrics[("asgilook_http_requests_total", labels)] == 4
    assert metrics[("asgilook_cache_lookups_total", (("result", "hit"),))] == 3
