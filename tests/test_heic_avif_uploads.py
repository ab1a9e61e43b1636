"""HEIC/HEIF (iPhones) and AVIF uploads: upright, 8-bit sRGB JPEGs without metadata."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import falcon.testing
import pillow_heif
import pytest
from PIL import Image

from service.app import create_app
from service.settings import Settings

from . import samples


def converted(format: str, upload: bytes) -> bytes:
    """The same picture, with its EXIF (orientation and GPS position), as HEIF or AVIF."""
    image = Image.open(io.BytesIO(upload))
    output = io.BytesIO()
    image.save(output, format, exif=image.getexif().tobytes(), quality=90)
    return output.getvalue()


@pytest.mark.parametrize("format", ["HEIF", "AVIF"])
async def test_a_phone_photo_comes_out_upright_once_and_without_metadata(
    client: falcon.testing.ASGIConductor, format: str
) -> None:
    # Stored sideways with EXIF orientation 6 (turn 90 clockwise): its yellow left edge must
    # end up on top. (pillow-heif applies the rotation and resets EXIF's; Pillow's AVIF keeps
    # it in EXIF: either way it must be applied exactly once.)
    upload = converted(format, samples.jpeg_with_exif((640, 480)))
    assert Image.open(io.BytesIO(upload)).format == format
    created = await client.simulate_post("/images", body=upload)
    assert created.status_code == 201, created.text
    assert created.json["size"] == [480, 640]
    served = (await client.simulate_get(created.json["image"])).content
    assert not samples.has_exif(served)
    picture = Image.open(io.BytesIO(served))
    assert (picture.format, picture.mode, picture.size) == ("JPEG", "RGB", (480, 640))
    red, green, blue = picture.getpixel((240, 20))  # the top edge: yellow
    assert red > 200 and green > 200 and blue < 60
    red, green, blue = picture.getpixel((240, 600))  # the rest: blue
    assert blue > 200 and red < 60
    thumbnail = await client.simulate_get(created.json["thumbnails"][0])
    assert Image.open(io.BytesIO(thumbnail.content)).size == (240, 320)


async def test_ten_bit_heic_keeps_its_tones(client: falcon.testing.ASGIConductor) -> None:
    width, height = 256, 128
    ramp = [round(1023 * x / (width - 1)) << 6 for x in range(width)]  # 10 bits, as 16
    data = b"".join(struct.pack("<HHH", value, value, value) for value in ramp) * height
    heif = pillow_heif.from_bytes(mode="RGB;16", size=(width, height), data=data)
    output = io.BytesIO()
    heif.save(output, quality=-1)  # lossless
    created = await client.simulate_post("/images", body=output.getvalue())
    assert created.status_code == 201, created.text
    served = Image.open(io.BytesIO((await client.simulate_get(created.json["image"])).content))
    for fraction in (0.1, 0.5, 0.9):
        grey = served.getpixel((round(fraction * (width - 1)), height // 2))[0]
        assert abs(grey - 255 * fraction) <= 4, (fraction, grey)


@pytest.mark.parametrize("format", ["HEIF", "AVIF"])
async def test_the_pixel_cap_is_read_before_decoding(tmp_path: Path, format: str) -> None:
    settings = Settings(_env_file=None, storage_path=tmp_path, max_image_pixels=100_000)
    upload = converted(format, samples.jpeg((400, 300)))
    async with falcon.testing.ASGIConductor(create_app(settings)) as client:
        refused = await client.simulate_post("/images", body=upload)
        assert refused.status_code == 413
        assert "120000 pixels" in refused.json["description"]


@pytest.mark.parametrize("format", ["HEIF", "AVIF"])
async def test_damaged_heic_and_avif_are_400(
    client: falcon.testing.ASGIConductor, format: str
) -> None:
    upload = converted(format, samples.jpeg((400, 300)))
    result = await client.simulate_post("/images", body=upload[: len(upload) // 2])
    assert result.status_code == 400, result.text
