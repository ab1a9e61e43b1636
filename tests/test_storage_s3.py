"""What lands in the bucket: originals kept, nothing left behind by rejected or failed uploads."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TypeVar
from uuid import uuid4

import falcon.testing
import pytest
from PIL import Image

from service.app import create_app
from service.images import ConvertedUpload, Copy, ImageRecord, KeptOriginal, copy_sizes
from service.metrics import Metrics
from service.settings import Settings
from service.storage.s3 import S3Storage

from . import samples
from .servers import MotoS3
from .test_operations import samples_of

T = TypeVar("T")


@pytest.fixture
def s3_settings(moto: MotoS3, bucket: str, redis_url: str, tmp_path) -> Settings:  # type: ignore[no-untyped-def]
    return Settings(
        _env_file=None,
        s3_bucket=bucket,
        anonymous_writes=True,
        s3_endpoint_url=moto.url,
        s3_prefix="team/photos",
        redis_url=redis_url,
        storage_path=tmp_path / "data",
        max_upload_bytes=20 * 1024 * 1024,
    )


@pytest.fixture
async def s3_client(s3_settings: Settings) -> AsyncIterator[falcon.testing.ASGIConductor]:
    async with falcon.testing.ASGIConductor(create_app(s3_settings)) as conductor:
        yield conductor


def bucket_keys(moto: MotoS3, bucket: str) -> list[str]:
    listing = moto.client().list_objects_v2(Bucket=bucket)
    return sorted(entry["Key"] for entry in listing.get("Contents", []))


async def test_original_and_jpeg_are_stored_under_the_prefix(
    s3_client: falcon.testing.ASGIConductor, moto: MotoS3, bucket: str
) -> None:
    upload = samples.png_with_alpha((300, 200))
    created = (await s3_client.simulate_post("/images", body=upload)).json
    image_id = created["id"]
    assert bucket_keys(moto, bucket) == [
        f"team/photos/images/{image_id}.jpeg",
        f"team/photos/index/{image_id}/300x200/{_epoch(created['modified'])}",
        f"team/photos/originals/{image_id}",
    ]
    original = moto.client().get_object(Bucket=bucket, Key=f"team/photos/originals/{image_id}")
    assert original["Body"].read() == upload
    assert original["ContentType"] == "image/png"

    await s3_client.simulate_delete(created["image"])
    assert bucket_keys(moto, bucket) == []


@pytest.mark.parametrize(
    ("size", "copies"),
    [
        pytest.param((2400, 1600), {"eighth": (300, 200), "reduced": (600, 400)}, id="1/8 and 1/4"),
        pytest.param(
            (4000, 2000),
            {"eighth": (500, 250), "reduced": (1000, 500), "largest": (2000, 1000)},
            id="and 1/2",
        ),
    ],
)
async def test_a_large_image_has_copies_that_go_with_it(
    s3_client: falcon.testing.ASGIConductor,
    moto: MotoS3,
    bucket: str,
    size: tuple[int, int],
    copies: dict[str, tuple[int, int]],
) -> None:
    created = (await s3_client.simulate_post("/images", body=samples.jpeg(size))).json
    keys = bucket_keys(moto, bucket)
    assert sorted(key.split("/")[2] for key in keys) == sorted(
        ["images", "index", "originals", *copies]
    )
    for copy, copy_size in copies.items():
        key = f"team/photos/{copy}/{created['id']}.jpeg"
        stored = moto.client().get_object(Bucket=bucket, Key=key)
        assert Image.open(io.BytesIO(stored["Body"].read())).size == copy_size
        assert stored["Metadata"]["width"] == str(size[0])  # the record, read with the copy
    for path in created["thumbnails"]:  # each from the smallest copy that makes it, or the JPEG
        thumbnail = await s3_client.simulate_get(path)
        assert thumbnail.status_code == 200
        assert Image.open(io.BytesIO(thumbnail.content)).size == tuple(
            int(side) for side in path.rsplit("/", 1)[1].removesuffix(".jpeg").split("x")
        )

    await s3_client.simulate_delete(created["image"])
    assert bucket_keys(moto, bucket) == []
    for path in created["thumbnails"]:
        assert (await s3_client.simulate_get(path)).status_code == 404


async def test_an_image_stored_before_reduced_copies_renders_from_its_jpeg(
    s3_settings: Settings, s3_client: falcon.testing.ASGIConductor, moto: MotoS3, bucket: str
) -> None:
    storage = S3Storage(
        bucket, endpoint_url=moto.url, prefix=s3_settings.s3_prefix, metrics=Metrics()
    )
    photo = samples.jpeg((2400, 1600))
    record = ImageRecord(uuid4(), (2400, 1600), datetime.now(UTC).replace(microsecond=0))
    async with storage:
        converted = ready(ConvertedUpload(record, io.BytesIO(photo), ready({})))
        await storage.save(record.id, KeptOriginal(io.BytesIO(photo)), "image/jpeg", converted)
    assert not any("/reduced/" in key for key in bucket_keys(moto, bucket))
    listed = (await s3_client.simulate_get("/images")).json
    assert [image["id"] for image in listed] == [str(record.id)]
    for path in listed[0]["thumbnails"]:
        assert (await s3_client.simulate_get(path)).status_code == 200


async def test_thumbnails_render_from_the_copies_not_the_jpeg(
    s3_client: falcon.testing.ASGIConductor, moto: MotoS3, bucket: str
) -> None:
    """Every size of a 4000x2000 photo is made well by its 1/2 or its 1/4 copy: with the JPEG
    turned black (its record kept), the thumbnails still show the photo."""
    upload = samples.jpeg((4000, 2000))
    created = (await s3_client.simulate_post("/images", body=upload)).json
    jpeg_key = f"team/photos/images/{created['id']}.jpeg"
    stored = moto.client().get_object(Bucket=bucket, Key=jpeg_key)
    black = io.BytesIO()
    Image.new("RGB", (4000, 2000)).save(black, "JPEG")
    moto.client().put_object(
        Bucket=bucket, Key=jpeg_key, Body=black.getvalue(), Metadata=stored["Metadata"]
    )
    for path in created["thumbnails"]:
        thumbnail = (await s3_client.simulate_get(path)).content
        assert samples.difference(thumbnail, upload) < 32, path  # black: about 128


async def s3_calls(client: falcon.testing.ASGIConductor) -> dict[str, float]:
    metrics = samples_of((await client.simulate_get("/metrics")).text)
    counted = "asgilook_s3_request_duration_seconds_count"
    return {
        operation: metrics.get((counted, (("operation", operation),)), 0)
        for operation in ("get_object", "head_object")
    }


async def reads_of(client: falcon.testing.ASGIConductor, path: str) -> float:
    """The GetObject calls a GET of `path` made, asserting that it made no HeadObject."""
    before = await s3_calls(client)
    assert (await client.simulate_get(path)).status_code == 200
    after = await s3_calls(client)
    assert after["head_object"] == before["head_object"]
    return after["get_object"] - before["get_object"]


@pytest.mark.parametrize("thumbnail", [1, 2, 3], ids=["1000x750", "500x375", "250x187"])
async def test_a_small_thumbnail_of_a_photo_is_one_read_of_the_bucket(
    s3_client: falcon.testing.ASGIConductor, thumbnail: int
) -> None:
    """The copy it is made from (or the 1/8 thumbnail itself) says its image's record: no stat
    before it is read."""
    created = (await s3_client.simulate_post("/images", body=samples.jpeg((4000, 3000)))).json
    assert await reads_of(s3_client, created["thumbnails"][thumbnail]) == 1


async def test_once_an_image_s_copies_are_read_its_thumbnails_are_one_read(
    s3_client: falcon.testing.ASGIConductor,
) -> None:
    """A 2400x1600 image's 1/8 thumbnail is smaller than a camera photo's: looked for after the
    1/4 copy, which says it exists. The copies known, each size is one read."""
    created = (await s3_client.simulate_post("/images", body=samples.jpeg((2400, 1600)))).json
    eighth, reduced, smaller = (
        created["thumbnails"][2],
        created["thumbnails"][1],
        created["thumbnails"][3],
    )
    assert eighth.endswith("/300x200.jpeg")
    assert await reads_of(s3_client, eighth) == 2
    assert await reads_of(s3_client, reduced) == 1
    assert await reads_of(s3_client, smaller) == 1


@pytest.mark.parametrize(
    ("size", "copy", "thumbnail"),
    [((2400, 1600), "eighth", "300x200"), ((4000, 3000), "largest", "2000x1500")],
    ids=["1/8", "1/2"],
)
async def test_the_1_8_and_1_2_thumbnails_are_served_as_stored_in_jpeg_only(
    s3_client: falcon.testing.ASGIConductor,
    moto: MotoS3,
    bucket: str,
    size: tuple[int, int],
    copy: str,
    thumbnail: str,
) -> None:
    """Made at upload as a JPEG thumbnail of their size is made; other formats render them."""
    created = (await s3_client.simulate_post("/images", body=samples.jpeg(size))).json
    key = f"team/photos/{copy}/{created['id']}.jpeg"
    stored = moto.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    (path,) = [path for path in created["thumbnails"] if path.endswith(f"/{thumbnail}.jpeg")]
    served = await s3_client.simulate_get(path)
    assert served.content == stored
    webp = await s3_client.simulate_get(path.removesuffix(".jpeg") + ".webp")
    assert Image.open(io.BytesIO(webp.content)).format == "WEBP"


async def test_an_image_stored_with_a_half_copy_renders_its_largest_thumbnail_from_it(
    s3_settings: Settings, s3_client: falcon.testing.ASGIConductor, moto: MotoS3, bucket: str
) -> None:
    """Images stored before there were 1/2 thumbnails have a q90 copy at 1/2 scale instead.
    Their JPEG is black here: only the copy can show the photo."""
    storage = S3Storage(
        bucket, endpoint_url=moto.url, prefix=s3_settings.s3_prefix, metrics=Metrics()
    )
    photo = samples.jpeg((4000, 3000))
    pixels = Image.open(io.BytesIO(photo))
    sizes = {Copy.EIGHTH: (500, 375), Copy.REDUCED: (1000, 750), Copy.HALF: (2000, 1500)}
    files: dict[Copy, io.BytesIO] = {}
    for copy, copy_size in sizes.items():
        files[copy] = io.BytesIO()
        pixels.resize(copy_size).save(files[copy], "JPEG", quality=90)
        files[copy].seek(0)
    black = io.BytesIO()
    Image.new("RGB", (4000, 3000)).save(black, "JPEG")
    black.seek(0)
    now = datetime.now(UTC).replace(microsecond=0)
    record = ImageRecord(uuid4(), (4000, 3000), now, copies=copy_sizes(dict(sizes)))
    async with storage:
        converted = ready(ConvertedUpload(record, black, ready(dict(files))))
        await storage.save(record.id, KeptOriginal(io.BytesIO(photo)), "image/jpeg", converted)
    largest = await s3_client.simulate_get(f"/thumbnails/{record.id}/2000x1500.jpeg")
    assert largest.status_code == 200
    assert Image.open(io.BytesIO(largest.content)).size == (2000, 1500)
    assert samples.difference(largest.content, photo) < 32  # black: about 128
    assert largest.content != files[Copy.HALF].getvalue()  # rendered, not served as stored


async def test_a_reduced_copy_that_does_not_say_its_record_is_passed_over(
    s3_client: falcon.testing.ASGIConductor, moto: MotoS3, bucket: str
) -> None:
    """As copies stored before they said it: thumbnails render from the JPEG's record."""
    created = (await s3_client.simulate_post("/images", body=samples.jpeg((2400, 1600)))).json
    reduced_key = f"team/photos/reduced/{created['id']}.jpeg"
    copy = moto.client().get_object(Bucket=bucket, Key=reduced_key)["Body"].read()
    moto.client().put_object(Bucket=bucket, Key=reduced_key, Body=copy)  # no metadata
    for path in created["thumbnails"]:
        thumbnail = await s3_client.simulate_get(path)
        assert thumbnail.status_code == 200
        assert Image.open(io.BytesIO(thumbnail.content)).size == tuple(
            int(side) for side in path.rsplit("/", 1)[1].removesuffix(".jpeg").split("x")
        )


async def test_rejected_uploads_leave_nothing(
    s3_client: falcon.testing.ASGIConductor, moto: MotoS3, bucket: str
) -> None:
    for body in [
        b"",
        samples.garbage(),
        samples.truncated(samples.jpeg((1000, 800))),
        samples.png_bomb(10_000, 6_000),
        b"\xff" * (20 * 1024 * 1024 + 1),
    ]:
        result = await s3_client.simulate_post("/images", body=body)
        assert 400 <= result.status_code < 500
    assert bucket_keys(moto, bucket) == []


async def test_a_save_interrupted_halfway_leaves_nothing(
    s3_settings: Settings, moto: MotoS3, bucket: str
) -> None:
    """The JPEG is stored, the original is still going up: cancelling removes the JPEG."""
    storage = S3Storage(
        bucket, endpoint_url=moto.url, prefix=s3_settings.s3_prefix, metrics=Metrics()
    )
    record = ImageRecord(uuid4(), (64, 64), datetime.now(UTC).replace(microsecond=0))
    async with storage:
        save = asyncio.create_task(
            storage.save(
                record.id,
                KeptOriginal(SlowFile(b"x" * 1024 * 1024)),
                "image/png",
                ready(ConvertedUpload(record, io.BytesIO(b"jpeg"), finished({}))),
            )
        )
        while not [key for key in bucket_keys(moto, bucket) if "images/" in key]:
            assert not save.done(), save.result()
            await asyncio.sleep(0.005)
        save.cancel()  # e.g. the client going away mid-upload
        with pytest.raises(asyncio.CancelledError):
            await save
    assert bucket_keys(moto, bucket) == []


async def ready(value: T) -> T:
    return value


def finished(value: T) -> asyncio.Future[T]:
    """An awaitable done already, which a save cancelled before it waits for it may drop."""
    future = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


class SlowFile(io.BytesIO):
    """An original that arrives slowly, 64 KiB every 20 ms."""

    def read(self, size: int | None = -1) -> bytes:
        time.sleep(0.02)
        return super().read(65536 if size is None or size < 0 else min(size, 65536))


async def test_a_photo_served_as_uploaded_is_stored_once(
    s3_client: falcon.testing.ASGIConductor, moto: MotoS3, bucket: str
) -> None:
    """Its original is kept as what the served JPEG lacks of it, the form in its metadata;
    the download, byte for byte, is tested in test_access.py."""
    photo = samples.upright_jpeg_with_metadata((4000, 3000))
    created = (await s3_client.simulate_post("/images", body=photo)).json
    s3 = moto.client()
    original = s3.get_object(Bucket=bucket, Key=f"team/photos/originals/{created['id']}")
    jpeg = s3.head_object(Bucket=bucket, Key=f"team/photos/images/{created['id']}.jpeg")
    assert original["Metadata"] == {"form": "difference"}
    assert original["ContentType"] == "image/jpeg"
    assert original["ContentLength"] < 2_000
    assert jpeg["ContentLength"] < len(photo) < jpeg["ContentLength"] + 2_000


async def test_a_304_does_not_read_the_object_body(
    s3_client: falcon.testing.ASGIConductor,
) -> None:
    client = s3_client
    image = (await client.simulate_post("/images", body=samples.jpeg((640, 480)))).json
    etag = (await client.simulate_get(image["image"])).headers["ETag"]

    gets = (await s3_calls(client))["get_object"]
    for path in [image["image"], image["thumbnails"][1]]:
        assert (await client.simulate_get(path, headers={"If-None-Match": etag})).status_code in (
            200,
            304,
        )
    for _ in range(3):
        assert (
            await client.simulate_get(image["image"], headers={"If-None-Match": etag})
        ).status_code == 304
    # NOTE: only the unconditional thumbnail's: its reduced copy (which a 640x480 image does
    #   not have), then its JPEG, read with its record.
    assert (await s3_calls(client))["get_object"] == gets + 2


def _epoch(http_date: str) -> int:
    return int(falcon.http_date_to_dt(http_date).timestamp())


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-3"])
async def test_the_bucket_is_created_on_startup_when_asked(
    moto: MotoS3,
    tmp_path,
    region: str,  # type: ignore[no-untyped-def]
) -> None:
    name = f"created-{region}-{tmp_path.name[-8:].lower().replace('_', '-')}"
    settings = Settings(
        _env_file=None,
        s3_bucket=name,
        anonymous_writes=True,
        s3_endpoint_url=moto.url,
        s3_region=region,
        s3_create_bucket=True,
        storage_path=tmp_path,
    )
    for _ in range(2):  # the second start finds the bucket there
        async with falcon.testing.ASGIConductor(create_app(settings)) as client:
            assert (
                await client.simulate_post("/images", body=samples.jpeg((64, 64)))
            ).status_code == 201
    assert len((moto.client().list_objects_v2(Bucket=name))["Contents"]) == 2 * 3
