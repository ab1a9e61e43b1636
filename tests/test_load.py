"""Behaviour under load: identical misses share one render; a full queue answers 503."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import falcon.testing

from service.app import create_app
from service.settings import Settings

from . import samples
from .test_operations import samples_of


async def image_work(client: falcon.testing.ASGIConductor, operation: str) -> float:
    metrics = samples_of((await client.simulate_get("/metrics")).text)
    return metrics.get(("asgilook_image_render_seconds_count", (("operation", operation),)), 0)


async def renders(client: falcon.testing.ASGIConductor) -> float:
    """Thumbnails made, from their source or from pixels already decoded."""
    return await image_work(client, "decode_and_render") + await image_work(client, "render")


async def test_simultaneous_identical_misses_share_one_render(
    client: falcon.testing.ASGIConductor,
) -> None:
    # NOTE: 24 MP, too large for a copy at 1/2 scale: 3000x2000 renders from the JPEG, long
    #   enough for every request to find it in progress (a 12 MP photo's sizes render in a
    #   few ms, or were made at upload).
    photo = samples.jpeg((6000, 4000))
    image = (await client.simulate_post("/images", body=photo)).json
    path = image["thumbnails"][0]
    results = await asyncio.gather(*(client.simulate_get(path) for _ in range(8)))
    assert {result.status_code for result in results} == {200}
    assert len({result.content for result in results}) == 1
    assert await renders(client) == 1
    # Later requests are cache hits; a different size is a render of its own.
    await client.simulate_get(path)
    await client.simulate_get(image["thumbnails"][1])
    assert await renders(client) == 2


async def test_smaller_thumbnails_are_made_from_pixels_already_decoded(
    client: falcon.testing.ASGIConductor, photo_12mp: bytes
) -> None:
    image = (await client.simulate_post("/images", body=photo_12mp)).json
    assert len(image["thumbnails"]) == 5  # 2000x1500 down to 125x93
    for path in image["thumbnails"]:
        thumbnail = await client.simulate_get(path)
        assert thumbnail.status_code == 200
        assert thumbnail.headers["Content-Type"] == "image/jpeg"
    # NOTE: 2000x1500 and 500x375 made at upload, 1000x750 from the 1/4 copy, the rest from
    #   the pixels decoded for 1000x750.
    assert await image_work(client, "decode_and_render") == 1
    assert await renders(client) == 3

    small = (await client.simulate_post("/images", body=samples.jpeg((1600, 1200)))).json
    for path in small["thumbnails"]:  # too small for a reduced copy: one decode for all
        assert (await client.simulate_get(path)).status_code == 200
    assert await image_work(client, "decode_and_render") == 2
    assert await renders(client) == 3 + len(small["thumbnails"])


async def test_pixels_kept_of_a_deleted_image_make_no_thumbnail(
    client: falcon.testing.ASGIConductor,
) -> None:
    image = (await client.simulate_post("/images", body=samples.jpeg((800, 600)))).json
    assert (await client.simulate_get(image["thumbnails"][0])).status_code == 200
    assert (await client.simulate_delete(image["image"])).status_code == 204
    assert (await client.simulate_get(image["thumbnails"][1])).status_code == 404
    assert await image_work(client, "decode_and_render") == 1


async def test_a_full_render_queue_answers_503_with_retry_after(
    tmp_path: Path, photo_12mp: bytes
) -> None:
    settings = Settings(_env_file=None, storage_path=tmp_path, image_threads=1, image_queue=1)
    async with falcon.testing.ASGIConductor(create_app(settings)) as client:
        paths = []
        for _ in range(2):
            paths += (await client.simulate_post("/images", body=photo_12mp)).json["thumbnails"]
        results = await asyncio.gather(*(client.simulate_get(path) for path in paths))
        statuses = Counter(result.status_code for result in results)
        assert set(statuses) == {200, 503}, statuses
        assert statuses[200] >= 2  # one rendering, one waiting
        refused = next(result for result in results if result.status_code == 503)
        assert refused.headers["Retry-After"] == "1"
        assert refused.json["title"] == "Overloaded"
        # Once the queue drains, the refused ones render.
        for path, result in zip(paths, results, strict=True):
            if result.status_code == 503:
                assert (await client.simulate_get(path)).status_code == 200
