"""The HTTP contract, on both deployments (bucket + Redis, and embedded)."""

from __future__ import annotations

import asyncio
import io
import re
from datetime import UTC, datetime, timedelta

import falcon
import pytest
from falcon.testing import ASGIConductor
from PIL import Image

from . import samples

FIRST_ID = "01936a00-0000-7000-8000-000000000001"


def decode(body: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(body))
    assert image.format == "JPEG"
    return image


def next_link(header: str | None) -> str | None:
    match = re.fullmatch(r'<([^>]+)>; rel="?next"?', header or "")
    return match.group(1) if match else None


async def upload(client: ASGIConductor, body: bytes) -> dict:
    result = await client.simulate_post("/images", body=body)
    assert result.status_code == 201, result.text
    return result.json


async def test_tutorial_flow(client: ASGIConductor) -> None:
    result = await client.simulate_get("/images")
    assert result.status_code == 200
    assert result.json == []

    result = await client.simulate_post(
        "/images", body=samples.png_with_alpha((462, 462)), content_type="image/png"
    )
    assert result.status_code == 201
    assert result.headers["Location"] == f"/images/{FIRST_ID}.jpeg"
    created = result.json
    modified = falcon.http_date_to_dt(created.pop("modified"))
    assert abs(modified - datetime.now(UTC)) < timedelta(seconds=5)
    assert created == {
        "id": FIRST_ID,
        "image": f"/images/{FIRST_ID}.jpeg",
        "size": [462, 462],
        "name": None,  # a raw body has no file name
        "owner": None,  # no API key uploaded it
        "thumbnails": [
            f"/thumbnails/{FIRST_ID}/231x231.jpeg",
            f"/thumbnails/{FIRST_ID}/115x115.jpeg",
        ],
        "thumbnail_sizes": [[231, 231], [115, 115]],
    }

    listing = (await client.simulate_get("/images")).json
    assert listing == [dict(created, modified=falcon.dt_to_http(modified))]

    result = await client.simulate_get(created["image"])
    assert result.status_code == 200
    assert result.headers["Content-Type"] == "image/jpeg"
    assert decode(result.content).size == (462, 462)

    for path, size in zip(created["thumbnails"], [(231, 231), (115, 115)], strict=True):
        miss = await client.simulate_get(path)
        assert miss.status_code == 200
        assert miss.headers["X-ASGILook-Cache"] == "Miss"
        assert decode(miss.content).size == size
        hit = await client.simulate_get(path)
        assert hit.headers["X-ASGILook-Cache"] == "Hit"
        assert hit.headers["Content-Type"] == "image/jpeg"
        assert hit.content == miss.content


async def test_upload_is_stored_upright_as_jpeg_without_exif(client: ASGIConductor) -> None:
    created = await upload(client, samples.jpeg_with_exif((640, 480)))
    assert created["size"] == [480, 640]  # orientation 6: turned a quarter clockwise

    served = (await client.simulate_get(created["image"])).content
    assert not samples.has_exif(served)
    image = decode(served)
    assert not image.getexif()
    assert image.size == (480, 640)
    # The yellow left edge of the sensor image is the top edge once upright.
    red, green, blue = image.convert("RGB").getpixel((240, 20))
    assert red > 200 and green > 200 and blue < 80

    thumbnail = (await client.simulate_get(created["thumbnails"][0])).content
    assert not samples.has_exif(thumbnail)


async def test_transparency_is_flattened_onto_white(client: ASGIConductor) -> None:
    created = await upload(client, samples.png_with_alpha((200, 200)))
    red, green, blue = decode((await client.simulate_get(created["image"])).content).getpixel(
        (100, 100)
    )
    assert red > 245 and 115 < green < 140 and 115 < blue < 140  # 50 % red over white

    created = await upload(client, samples.gif_with_transparency())
    image = decode((await client.simulate_get(created["image"])).content)
    assert image.getpixel((50, 50))[1] > 245  # transparent half: white, not black


async def test_thumbnails_have_exactly_the_listed_sizes(client: ASGIConductor) -> None:
    created = await upload(client, samples.jpeg((1001, 667)))
    assert created["thumbnails"] == [
        f"/thumbnails/{created['id']}/500x333.jpeg",
        f"/thumbnails/{created['id']}/250x166.jpeg",
        f"/thumbnails/{created['id']}/125x83.jpeg",
    ]
    for path in created["thumbnails"]:
        width, height = map(int, path.rsplit("/", 1)[1].removesuffix(".jpeg").split("x"))
        assert decode((await client.simulate_get(path)).content).size == (width, height)


@pytest.mark.parametrize(
    "path",
    [
        f"/thumbnails/{FIRST_ID}/100x100.jpeg",  # not in the series
        f"/thumbnails/{FIRST_ID}/462x462.jpeg",  # the full size is not a thumbnail
        f"/thumbnails/{FIRST_ID}/57x57.jpeg",  # below the minimum size
        "/thumbnails/01936a00-0000-7000-8000-0000000000ff/231x231.jpeg",  # unknown image
        "/images/01936a00-0000-7000-8000-0000000000ff.jpeg",
        "/images/not-a-uuid.jpeg",
        "/thumbnails/not-a-uuid/231x231.jpeg",
        "/nowhere",
    ],
)
async def test_not_found(client: ASGIConductor, path: str) -> None:
    await upload(client, samples.png_with_alpha((462, 462)))
    result = await client.simulate_get(path)
    assert result.status_code == 404
    assert result.headers["Content-Type"] == "application/json"
    assert result.json["title"] and result.json["description"]


async def test_wrong_methods_are_405(client: ASGIConductor) -> None:
    created = await upload(client, samples.png_with_alpha((128, 128)))
    for method, path in [
        ("PUT", "/images"),
        ("DELETE", "/images"),
        ("POST", created["image"]),
        ("POST", created["thumbnails"][0]),
        ("DELETE", created["thumbnails"][0]),
    ]:
        result = await client.simulate_request(method, path)
        assert result.status_code == 405, (method, path)
        assert method not in result.headers["Allow"] and "GET" in result.headers["Allow"]
        assert result.headers["Content-Type"] == "application/json"
        assert result.json["description"] == (
            f"{method} is not allowed here; the methods allowed are {result.headers['Allow']}"
        )
    assert len((await client.simulate_get("/images")).json) == 1


async def test_tiny_image_has_no_thumbnails(client: ASGIConductor) -> None:
    created = await upload(client, samples.jpeg((1, 1)))
    assert created["size"] == [1, 1]
    assert created["thumbnails"] == []


async def test_listing_pages_oldest_first(client: ASGIConductor) -> None:
    ids = [(await upload(client, samples.jpeg((64 + n, 64))))["id"] for n in range(5)]

    seen, path, pages = [], "/images?limit=2", 0
    while path:
        result = await client.simulate_get(path)
        assert result.status_code == 200
        assert len(result.json) <= 2
        seen += [entry["id"] for entry in result.json]
        pages += 1
        path = next_link(result.headers.get("Link"))
    assert seen == ids
    assert pages == 3

    assert [entry["id"] for entry in (await client.simulate_get("/images")).json] == ids
    assert len((await client.simulate_get("/images?limit=1000")).json) == 5


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=1001", "limit=ten", "cursor=not-a-cursor!", "cursor=AAAA"]
)
async def test_bad_listing_parameters_are_400(client: ASGIConductor, query: str) -> None:
    result = await client.simulate_get(f"/images?{query}")
    assert result.status_code == 400
    assert "title" in result.json


async def test_delete_removes_everything_even_what_was_cached(client: ASGIConductor) -> None:
    kept = await upload(client, samples.png_with_alpha((256, 256)))
    doomed = await upload(client, samples.png_with_alpha((256, 256)))
    for path in [doomed["thumbnails"][0], "/images", "/images?limit=5"]:
        await client.simulate_get(path)
        assert (await client.simulate_get(path)).headers["X-ASGILook-Cache"] == "Hit"

    result = await client.simulate_delete(doomed["image"])
    assert result.status_code == 204
    assert result.content == b""

    for path in [doomed["image"], *doomed["thumbnails"]]:
        assert (await client.simulate_get(path)).status_code == 404
    for path in ["/images", "/images?limit=5"]:
        assert [entry["id"] for entry in (await client.simulate_get(path)).json] == [kept["id"]]
    assert (await client.simulate_delete(doomed["image"])).status_code == 404
    assert (await client.simulate_get(kept["thumbnails"][0])).status_code == 200


async def test_upload_shows_in_a_cached_listing(client: ASGIConductor) -> None:
    await client.simulate_get("/images")
    assert (await client.simulate_get("/images")).headers["X-ASGILook-Cache"] == "Hit"
    created = await upload(client, samples.png_with_alpha((128, 128)))
    result = await client.simulate_get("/images")
    assert result.headers["X-ASGILook-Cache"] == "Miss"
    assert [entry["id"] for entry in result.json] == [created["id"]]


async def test_cached_listing_keeps_its_next_link(client: ASGIConductor) -> None:
    for _ in range(3):
        await upload(client, samples.jpeg((64, 64)))
    miss = await client.simulate_get("/images?limit=2")
    hit = await client.simulate_get("/images?limit=2")
    assert hit.headers["X-ASGILook-Cache"] == "Hit"
    assert hit.headers["Link"] == miss.headers["Link"]
    assert hit.json == miss.json


async def test_full_images_are_never_cached_empty(client: ASGIConductor) -> None:
    created = await upload(client, samples.jpeg((300, 200)))
    first = await client.simulate_get(created["image"])
    second = await client.simulate_get(created["image"])
    assert len(first.content) > 1000
    assert second.content == first.content
    assert int(second.headers["Content-Length"]) == len(first.content)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"", 400),
        (samples.garbage(), 415),
        (samples.truncated(samples.jpeg((800, 600))), 400),
        (samples.truncated(samples.png_with_alpha((800, 600))), 400),
        (samples.png_bomb(10_000, 6_000), 413),  # 60 MP, over the 50 MP default
        (samples.png_bomb(50_000, 50_000), 413),  # 2.5 GP
    ],
    ids=["empty", "garbage", "truncated-jpeg", "truncated-png", "60MP", "2.5GP"],
)
async def test_bad_uploads_get_json_errors_and_store_nothing(
    client: ASGIConductor, body: bytes, status: int
) -> None:
    result = await client.simulate_post("/images", body=body)
    assert result.status_code == status
    assert result.headers["Content-Type"] == "application/json"
    assert result.json["title"]
    assert (await client.simulate_get("/images")).json == []


async def test_cpu_work_leaves_the_event_loop_free(
    client: ASGIConductor, photo_12mp: bytes
) -> None:
    created = await upload(client, photo_12mp)
    renders = [asyncio.create_task(client.simulate_get(path)) for path in created["thumbnails"][:4]]
    await asyncio.sleep(0.01)  # the renders are under way
    listing = await client.simulate_get("/images")
    assert listing.status_code == 200
    # Answered while the 12 MP renders still run: they are not blocking the loop.
    assert not all(render.done() for render in renders)
    assert all(result.status_code == 200 for result in await asyncio.gather(*renders))


async def test_an_upright_phone_photo_is_served_without_its_gps_position(
    client: ASGIConductor,
) -> None:
    photo = Image.open(io.BytesIO(samples.jpeg((400, 300))))
    exif = photo.getexif()
    exif[samples.GPS_IFD] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}
    body = io.BytesIO()
    photo.save(body, "JPEG", exif=exif)
    created = await upload(client, body.getvalue())
    served = (await client.simulate_get(created["image"])).content
    assert not samples.has_exif(served)
    assert decode(served).size == (400, 300)
