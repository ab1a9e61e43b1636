"""Thumbnails as JPEG, WebP and AVIF: each format its own URL, ETag and cache entries; the
extension-less URL follows the request's Accept."""

from __future__ import annotations

import io

import falcon.testing
import pytest
from PIL import Image

from service.formats import negotiate

from . import samples

MEDIA_TYPES = {"jpeg": "image/jpeg", "webp": "image/webp", "avif": "image/avif"}


@pytest.fixture
async def image(client: falcon.testing.ASGIConductor) -> dict:  # type: ignore[type-arg]
    return (await client.simulate_post("/images", body=samples.jpeg((640, 480)))).json


@pytest.mark.parametrize("format", list(MEDIA_TYPES))
async def test_each_format_of_each_size(
    client: falcon.testing.ASGIConductor,
    image: dict,
    format: str,  # type: ignore[type-arg]
) -> None:
    for thumbnail in image["thumbnails"]:
        path = thumbnail.replace(".jpeg", f".{format}")
        width, height = (int(side) for side in path.rsplit("/", 1)[1].split(".")[0].split("x"))
        miss, hit = await client.simulate_get(path), await client.simulate_get(path)
        assert (miss.headers["X-ASGILook-Cache"], hit.headers["X-ASGILook-Cache"]) == (
            "Miss",
            "Hit",
        )
        assert hit.content == miss.content
        assert miss.headers["Content-Type"] == MEDIA_TYPES[format]
        decoded = Image.open(io.BytesIO(miss.content))
        assert (decoded.format.lower(), decoded.size) == (format, (width, height))
        assert miss.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert f"-{format}-" in miss.headers["ETag"]
        assert "Vary" not in miss.headers
        again = await client.simulate_get(path, headers={"If-None-Match": miss.headers["ETag"]})
        assert again.status_code == 304
    # The same allow-list of sizes, and the same 404s.
    assert (
        await client.simulate_get(f"/thumbnails/{image['id']}/100x100.{format}")
    ).status_code == 404


async def test_etags_differ_by_format(client: falcon.testing.ASGIConductor, image: dict) -> None:  # type: ignore[type-arg]
    thumbnail = image["thumbnails"][0]
    etags = {
        (await client.simulate_get(thumbnail.replace(".jpeg", f".{format}"))).headers["ETag"]
        for format in MEDIA_TYPES
    }
    assert len(etags) == 3


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "jpeg"),
        ("*/*", "jpeg"),
        ("image/*", "jpeg"),
        ("image/avif,image/webp,image/apng,image/*,*/*;q=0.8", "avif"),  # Chromium's
        ("image/webp,*/*", "webp"),
        ("image/avif;q=0,image/webp;q=0,*/*", "jpeg"),
        ("image/avif;q=0.5,image/webp;q=0.9", "webp"),  # the client's q-values win
        ("image/jpeg;q=1, image/avif;q=1", "avif"),  # equal: AVIF first
        ("image/webp;q=0.9, */*", "jpeg"),  # */* at q=1 beats WebP at 0.9
        ("IMAGE/AVIF", "avif"),
        ("image/avif;q=bogus, image/webp", "webp"),
    ],
)
async def test_the_extensionless_url_follows_accept(
    client: falcon.testing.ASGIConductor,
    image: dict,
    accept: str | None,
    expected: str,  # type: ignore[type-arg]
) -> None:
    path = image["thumbnails"][0].removesuffix(".jpeg")
    headers = {"Accept": accept} if accept is not None else {}
    for _ in range(2):  # a miss, then a hit of the same variant
        result = await client.simulate_get(path, headers=headers)
        assert result.status_code == 200
        assert result.headers["Content-Type"] == MEDIA_TYPES[expected]
        assert Image.open(io.BytesIO(result.content)).format.lower() == expected
        assert result.headers["Vary"] == "Accept"
    assert negotiate(accept) is not None and negotiate(accept).name == expected  # type: ignore[union-attr]


async def test_a_format_nobody_asked_for_is_never_served_from_the_cache(
    client: falcon.testing.ASGIConductor,
    image: dict,  # type: ignore[type-arg]
) -> None:
    thumbnail = image["thumbnails"][0]
    negotiated = thumbnail.removesuffix(".jpeg")
    for accept in ("image/avif", "image/webp", "image/avif", "image/webp"):
        result = await client.simulate_get(negotiated, headers={"Accept": accept})
        assert result.headers["Content-Type"] == accept
    for _ in range(3):  # held in process too, by now: still JPEG
        result = await client.simulate_get(thumbnail)
        assert result.headers["Content-Type"] == "image/jpeg"
        assert Image.open(io.BytesIO(result.content)).format == "JPEG"
    plain = await client.simulate_get(negotiated)
    assert plain.headers["Content-Type"] == "image/jpeg"


async def test_an_accept_of_nothing_served_is_406(
    client: falcon.testing.ASGIConductor,
    image: dict,  # type: ignore[type-arg]
) -> None:
    path = image["thumbnails"][0].removesuffix(".jpeg")
    for accept in ("image/png", "text/html", "image/*;q=0"):
        result = await client.simulate_get(path, headers={"Accept": accept})
        assert result.status_code == 406, accept
        assert result.json["title"] == "Not acceptable"


@pytest.mark.parametrize("format", ["webp", "avif"])
async def test_the_whole_image_in_another_format(
    client: falcon.testing.ASGIConductor,
    image: dict,
    format: str,  # type: ignore[type-arg]
) -> None:
    path = image["image"].replace(".jpeg", f".{format}")
    miss, hit = await client.simulate_get(path), await client.simulate_get(path)
    assert (miss.headers["X-ASGILook-Cache"], hit.headers["X-ASGILook-Cache"]) == ("Miss", "Hit")
    assert hit.content == miss.content
    assert miss.headers["Content-Type"] == MEDIA_TYPES[format]
    decoded = Image.open(io.BytesIO(miss.content))
    assert (decoded.format.lower(), decoded.size) == (format, (640, 480))
    assert miss.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    not_modified = await client.simulate_get(path, headers={"If-None-Match": miss.headers["ETag"]})
    assert not_modified.status_code == 304
    jpeg = await client.simulate_get(image["image"])
    assert jpeg.headers["ETag"] != miss.headers["ETag"]
    assert Image.open(io.BytesIO(jpeg.content)).format == "JPEG"
    assert (await client.simulate_delete(image["image"])).status_code == 204
    assert (await client.simulate_get(path)).status_code == 404


async def test_the_extensionless_image_url_follows_accept(
    client: falcon.testing.ASGIConductor,
    image: dict,  # type: ignore[type-arg]
) -> None:
    path = image["image"].removesuffix(".jpeg")
    stored = (await client.simulate_get(image["image"])).content
    for accept, expected in [
        (None, "jpeg"),
        ("image/avif,*/*;q=0.8", "avif"),
        ("image/webp", "webp"),
    ]:
        headers = {"Accept": accept} if accept else {}
        result = await client.simulate_get(path, headers=headers)
        assert result.status_code == 200
        assert result.headers["Content-Type"] == MEDIA_TYPES[expected]
        assert result.headers["Vary"] == "Accept"
        if expected == "jpeg":
            assert result.content == stored  # the stored JPEG itself, streamed
        else:
            assert Image.open(io.BytesIO(result.content)).format.lower() == expected
    assert (await client.simulate_get(path, headers={"Accept": "image/gif"})).status_code == 406


def test_only_formats_this_pillow_can_write_are_served() -> None:
    from service.formats import FORMATS, Format, encodable

    assert all(encodable(format) for format in FORMATS.values())
    assert not encodable(Format("jxl", "image/jxl", "JPEG XL, not in this Pillow"))
