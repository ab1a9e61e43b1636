"""Writes cut off midway leave nothing behind for long, and no save destroys what it did not
write."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from typing import BinaryIO
from uuid import UUID

import falcon.testing
import pytest

from service import processing
from service.app import create_app
from service.images import Copy
from service.settings import Settings

from . import samples
from .servers import REPO, FaultyProxy, MotoS3

TAKEN = UUID("01936a00-0000-7000-8000-000000000001")


async def test_a_save_under_a_taken_id_is_refused_and_destroys_nothing(
    settings: Settings,
) -> None:
    """Ids come from the server, so only a bug could reuse one: the store must still hold."""
    async with falcon.testing.ASGIConductor(create_app(settings, new_id=lambda: TAKEN)) as client:
        first = await client.simulate_post("/images", body=samples.jpeg((256, 192)))
        assert first.status_code == 201
        stored = (await client.simulate_get(first.json["image"])).content

        second = await client.simulate_post("/images", body=samples.png_with_alpha((300, 300)))
        assert second.status_code == 409
        assert second.json["title"] == "Image exists"

        assert (await client.simulate_get("/images")).json == [first.json]
        assert (await client.simulate_get(first.json["image"])).content == stored
        for thumbnail in first.json["thumbnails"]:
            assert (await client.simulate_get(thumbnail)).status_code == 200
        assert (await client.simulate_delete(first.json["image"])).status_code == 204


def orphans_removed(metrics: str) -> float:
    found = re.search(r"^asgilook_orphans_removed_total (\S+)", metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.fixture
def behind_proxy(bucket: str, proxy: FaultyProxy, tmp_path: Path) -> Settings:
    """The service on S3 behind the faulty proxy, with a janitor that does not wait long."""
    return Settings(
        _env_file=None,
        s3_bucket=bucket,
        anonymous_writes=True,
        s3_endpoint_url=proxy.url,
        s3_max_attempts=1,  # an outage at once, not after retries
        orphan_age=1,
        storage_path=tmp_path,
    )


def keys_in(moto: MotoS3, bucket: str, prefix: str = "") -> set[str]:
    listing = moto.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    return {entry["Key"] for entry in listing.get("Contents", [])}


async def test_what_writes_cut_off_by_an_s3_outage_left_is_removed_by_the_janitor(
    moto: MotoS3, bucket: str, proxy: FaultyProxy, behind_proxy: Settings
) -> None:
    async with falcon.testing.ASGIConductor(create_app(behind_proxy)) as client:
        kept = (await client.simulate_post("/images", body=samples.jpeg((256, 192)))).json
        # NOTE: large enough for reduced copies, which are left behind too.
        doomed = (await client.simulate_post("/images", body=samples.jpeg((2000, 1000)))).json

        # S3 stops after an upload wrote its files, before its listing entry; the clean-up
        # after the failure cannot reach it either.
        proxy.fails = lambda method, path: "/index/" in path or method == "POST"
        failed = await client.simulate_post("/images", body=samples.jpeg((2000, 1000)))
        assert failed.status_code == 503
        # S3 stops in the middle of a delete: unlisted, its files not yet removed.
        proxy.fails = lambda method, path: method == "POST"  # DeleteObjects is a POST
        assert (await client.simulate_delete(doomed["image"])).status_code == 503
        # The index entry's PUT, the clean-up's and the delete's DeleteObjects were cut off.
        assert {(method, "/index/" in path) for method, path in proxy.refused} == {
            ("PUT", True),
            ("POST", False),
        }

        keys = keys_in(moto, bucket)
        assert any(key.startswith("pending/") for key in keys)  # what the janitor will go by
        assert len([key for key in keys if key.startswith("originals/")]) == 3
        assert len([key for key in keys if key.startswith("reduced/")]) == 2

        moto.client().put_object(Bucket=bucket, Key="pending/not-an-id", Body=b"")  # not ours
        proxy.fails = lambda method, path: False  # S3 is back
        for _ in range(100):
            metrics = (await client.simulate_get("/metrics")).text
            if orphans_removed(metrics) == 2:
                break
            await asyncio.sleep(0.1)
        assert orphans_removed(metrics) == 2

        listed = (await client.simulate_get("/images")).json
        assert listed == [kept]
    keys = keys_in(moto, bucket)
    keys.remove("pending/not-an-id")  # left alone: not a marker of this service's
    images = {key for key in keys if not key.startswith("janitor/")}
    assert images == {
        f"originals/{kept['id']}",
        f"images/{kept['id']}.jpeg",
        f"index/{kept['id']}/256x192/{_epoch(kept['modified'])}",
    }
    assert len(keys - images) <= 1  # the claim of the janitor's latest round


async def test_an_upload_whose_pending_marker_outlived_it_stays_whole(
    moto: MotoS3, bucket: str, proxy: FaultyProxy, behind_proxy: Settings
) -> None:
    async with falcon.testing.ASGIConductor(create_app(behind_proxy)) as client:
        # S3 stops before the pending marker's removal, which comes after the answer.
        proxy.fails = lambda method, path: method == "DELETE" and "/pending/" in path
        uploaded = await client.simulate_post("/images", body=samples.jpeg((2000, 1000)))
        assert uploaded.status_code == 201
        image = uploaded.json
        for _ in range(100):
            if proxy.refused:
                break
            await asyncio.sleep(0.05)
        assert f"pending/{image['id']}" in keys_in(moto, bucket)

        proxy.fails = lambda method, path: False  # S3 is back: the janitor's turn
        for _ in range(100):
            if not keys_in(moto, bucket, "pending/"):
                break
            await asyncio.sleep(0.1)
        assert not keys_in(moto, bucket, "pending/")
        assert (await client.simulate_get("/images")).json == [image]
        for path in [image["image"], *image["thumbnails"]]:
            assert (await client.simulate_get(path)).status_code == 200
        assert orphans_removed((await client.simulate_get("/metrics")).text) == 0
    keys = keys_in(moto, bucket)
    assert {f"originals/{image['id']}", f"images/{image['id']}.jpeg"} <= keys
    assert f"reduced/{image['id']}.jpeg" in keys


async def test_an_upload_whose_store_fails_ends_after_its_conversion(
    proxy: FaultyProxy, behind_proxy: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store may fail while the upload is still converted in a thread: the 503 waits for
    the thread, so the files it reads and writes are not closed under it."""
    open_to_the_end: list[bool] = []
    convert = processing.convert

    def watched_convert(
        source: BinaryIO, max_pixels: int, output: BinaryIO, outputs: processing.CopyOutputs
    ) -> processing.ConvertedImage:
        try:
            return convert(source, max_pixels, output, outputs)
        finally:
            open_to_the_end.append(not source.closed and not output.closed)

    monkeypatch.setattr(processing, "convert", watched_convert)
    async with falcon.testing.ASGIConductor(create_app(behind_proxy)) as client:
        proxy.refuse_connections()
        png = samples.png_with_alpha((2400, 1800))  # converted: JPEGs are not
        for _ in range(20):  # NOTE: a conversion cancelled before a thread took it never ran
            if len(open_to_the_end) == 3:
                break
            assert (await client.simulate_post("/images", body=png)).status_code == 503
    assert open_to_the_end == [True] * 3


def _epoch(http_date: str) -> int:
    return int(falcon.http_date_to_dt(http_date).timestamp())


CRASHING_SAVE = """
import asyncio, io, os, sys
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO
from uuid import UUID
from service.images import ConvertedUpload, Copy, ImageRecord, KeptOriginal, copy_sizes
from service.storage.local import LocalStorage

async def ready(value):
    return value

async def converted(record, jpeg):
    return ConvertedUpload(record, jpeg, ready({Copy.REDUCED: DiesMidway(b"r" * 5000)}))

class DiesMidway(io.BytesIO):
    def read(self, size=-1):
        if self.tell() > 1000:
            os._exit(9)  # killed in the middle of writing the last file, the reduced copy
        return super().read(500)

async def save():
    async with LocalStorage(Path(sys.argv[1])) as storage:
        now = datetime.now(UTC)
        copies = copy_sizes({Copy.REDUCED: (1000, 750)})
        record = ImageRecord(UUID(sys.argv[2]), (4000, 3000), now, copies=copies)
        original, jpeg = io.BytesIO(b"o" * 5000), io.BytesIO(b"j" * 5000)
        await storage.save(
            record.id, KeptOriginal(original), "image/png", converted(record, jpeg)
        )

asyncio.run(save())
"""


def stored_files(data: Path) -> list[str]:
    folders = ("originals", "images", *(copy.value for copy in Copy))
    return sorted(
        str(path.relative_to(data)) for folder in folders for path in data.glob(f"{folder}/*")
    )


async def test_what_a_crash_in_the_middle_of_a_local_save_left_is_removed(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_SAVE, str(data), str(TAKEN)], cwd=REPO, timeout=60
    )
    assert crashed.returncode == 9
    assert stored_files(data) == [
        f"images/{TAKEN}.jpeg",
        f"originals/{TAKEN}",
        f"reduced/{TAKEN}.jpeg.partial",
    ]

    settings = Settings(_env_file=None, storage_path=data, orphan_age=1)
    async with falcon.testing.ASGIConductor(create_app(settings)) as client:
        assert (await client.simulate_get("/images")).json == []
        for _ in range(100):
            if orphans_removed((await client.simulate_get("/metrics")).text) == 1:
                break
            await asyncio.sleep(0.1)
        assert orphans_removed((await client.simulate_get("/metrics")).text) == 1
        created = (await client.simulate_post("/images", body=samples.jpeg((2000, 1000)))).json
        assert stored_files(data) == [
            f"eighth/{created['id']}.jpeg",
            f"images/{created['id']}.jpeg",
            f"originals/{created['id']}",
            f"reduced/{created['id']}.jpeg",
        ]
        assert (await client.simulate_delete(created["image"])).status_code == 204
    assert stored_files(data) == []
