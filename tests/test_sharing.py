"""Two app instances on one store and one cache, as two uvicorn workers or a restarted process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import falcon.testing
import pytest

from service.app import create_app
from service.settings import Settings

from . import samples


@pytest.fixture
async def second_client(settings: Settings) -> AsyncIterator[falcon.testing.ASGIConductor]:
    async with falcon.testing.ASGIConductor(create_app(settings)) as conductor:
        yield conductor


async def test_instances_share_images_and_invalidations(
    client: falcon.testing.ASGIConductor, second_client: falcon.testing.ASGIConductor
) -> None:
    first = (await client.simulate_post("/images", body=samples.jpeg((256, 256)))).json
    listing = await second_client.simulate_get("/images")
    assert [entry["id"] for entry in listing.json] == [first["id"]]
    assert (await second_client.simulate_get("/images")).headers["X-ASGILook-Cache"] == "Hit"

    # An upload through one instance shows in the other's cached listing.
    second = (await client.simulate_post("/images", body=samples.jpeg((256, 256)))).json
    listing = await second_client.simulate_get("/images")
    assert [entry["id"] for entry in listing.json] == [first["id"], second["id"]]

    # A delete through one instance empties the other's cache of that image.
    thumbnail = first["thumbnails"][0]
    await second_client.simulate_get(thumbnail)
    assert (await second_client.simulate_get(thumbnail)).headers["X-ASGILook-Cache"] == "Hit"
    assert (await client.simulate_delete(first["image"])).status_code == 204
    assert (await second_client.simulate_get(thumbnail)).status_code == 404
    assert (await second_client.simulate_get(first["image"])).status_code == 404
    listing = await second_client.simulate_get("/images")
    assert [entry["id"] for entry in listing.json] == [second["id"]]


async def test_a_restarted_app_sees_every_image(settings: Settings) -> None:
    async with falcon.testing.ASGIConductor(create_app(settings)) as before:
        created = (await before.simulate_post("/images", body=samples.jpeg((300, 200)))).json
        original = (await before.simulate_get(created["image"])).content

    async with falcon.testing.ASGIConductor(create_app(settings)) as after:
        listing = (await after.simulate_get("/images")).json
        assert listing == [created]
        assert (await after.simulate_get(created["image"])).content == original
        assert (await after.simulate_get(created["thumbnails"][0])).status_code == 200
