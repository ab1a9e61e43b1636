"""The embedded store (files and SQLite): a large photo's copies, and an index made by an older
version, which gains the columns it lacks."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import falcon.testing
from PIL import Image

from service.app import create_app
from service.settings import Settings

from . import samples
from .test_unfinished_writes import stored_files

OLD_ID = "01936a00-0000-7000-8000-000000000001"


def an_index_from_before_copies(data: Path, jpeg: bytes) -> None:
    """One image, stored as the first versions stored it: no owner, name, type or copies."""
    for folder in ("originals", "images"):
        (data / folder).mkdir(parents=True)
    (data / "images" / f"{OLD_ID}.jpeg").write_bytes(jpeg)
    (data / "originals" / OLD_ID).write_bytes(jpeg)
    with sqlite3.connect(data / "index.sqlite3") as index:
        index.execute(
            "CREATE TABLE images (id TEXT PRIMARY KEY, width INTEGER NOT NULL, "
            "height INTEGER NOT NULL, modified INTEGER NOT NULL)"
        )
        index.execute("INSERT INTO images VALUES (?, 2400, 1600, 1700000000)", (OLD_ID,))
    index.close()


async def test_an_older_index_gains_copies_and_a_photo_renders_from_them(tmp_path: Path) -> None:
    data = tmp_path / "data"
    an_index_from_before_copies(data, samples.jpeg((2400, 1600)))
    settings = Settings(_env_file=None, storage_path=data, rate_limit_uploads="")
    async with falcon.testing.ASGIConductor(create_app(settings)) as client:
        (old,) = (await client.simulate_get("/images")).json
        assert old["id"] == OLD_ID
        for path in old["thumbnails"]:  # from its JPEG: it has no copies
            assert (await client.simulate_get(path)).status_code == 200

        upload = samples.jpeg((4000, 2000))
        created = (await client.simulate_post("/images", body=upload)).json
        image_id = created["id"]
        assert [name for name in stored_files(data) if image_id in name] == [
            f"eighth/{image_id}.jpeg",
            f"images/{image_id}.jpeg",
            f"largest/{image_id}.jpeg",
            f"originals/{image_id}",
            f"reduced/{image_id}.jpeg",
        ]
        # NOTE: with its JPEG turned black, every thumbnail still shows the photo: each size
        #   is made from the 1/4 copy, or was made at upload (1/8 and 1/2).
        black = io.BytesIO()
        Image.new("RGB", (4000, 2000)).save(black, "JPEG")
        (data / "images" / f"{image_id}.jpeg").write_bytes(black.getvalue())
        for path in created["thumbnails"]:
            thumbnail = (await client.simulate_get(path)).content
            assert samples.difference(thumbnail, upload) < 32, path  # black: about 128

        assert (await client.simulate_delete(created["image"])).status_code == 204
        assert not [name for name in stored_files(data) if image_id in name]
        for path in created["thumbnails"]:
            assert (await client.simulate_get(path)).status_code == 404
