"""The pure image functions, on bytes."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageCms

from service import processing
from service.errors import ImageTooLarge, InvalidImage, UnsupportedImage

from . import samples


def normalise(data: bytes, max_pixels: int = 50_000_000) -> processing.NormalisedImage:
    return processing.normalise(io.BytesIO(data), max_pixels)


def test_output_is_a_baseline_rgb_jpeg_without_metadata() -> None:
    result = normalise(samples.jpeg_with_exif((640, 480)))
    image = Image.open(io.BytesIO(result.jpeg))
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (480, 640))
    assert result.size == (480, 640)
    assert result.original_type == "image/jpeg"
    assert not samples.has_exif(result.jpeg)
    assert set(image.info) <= {"jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi"}


def test_colour_profiles_are_converted_to_srgb_and_dropped() -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for profile in (srgb, b"not an ICC profile"):
        output = io.BytesIO()
        Image.new("RGB", (64, 64), (10, 200, 30)).save(output, "PNG", icc_profile=profile)
        result = normalise(output.getvalue())
        image = Image.open(io.BytesIO(result.jpeg))
        assert "icc_profile" not in image.info
        red, green, blue = image.getpixel((32, 32))
        assert red < 30 and green > 180 and blue < 50


def test_other_modes_become_rgb() -> None:
    for mode, colour in [("L", 128), ("CMYK", (0, 255, 255, 0)), ("1", 1), ("I;16", 300)]:
        output = io.BytesIO()
        Image.new(mode, (80, 60), colour).save(output, "TIFF")
        result = normalise(output.getvalue())
        assert Image.open(io.BytesIO(result.jpeg)).mode == "RGB"
        assert result.original_type == "image/tiff"


def test_pixel_limit_is_read_from_the_header() -> None:
    with pytest.raises(ImageTooLarge, match="60000000 pixels"):
        normalise(samples.png_bomb(10_000, 6_000))
    with pytest.raises(ImageTooLarge):
        normalise(samples.jpeg((200, 100)), max_pixels=19_999)
    assert normalise(samples.jpeg((200, 100)), max_pixels=20_000).size == (200, 100)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (samples.garbage(), UnsupportedImage),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", UnsupportedImage),
        (samples.truncated(samples.jpeg((400, 300))), InvalidImage),
        (samples.png_bomb(100, 100), InvalidImage),  # a sane header, then no pixels
    ],
)
def test_bad_input(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        normalise(data)


@pytest.mark.parametrize("size", [(2000, 1500), (1000, 750), (333, 249), (65, 64), (1, 1)])
def test_thumbnails_have_exactly_the_requested_size(size: tuple[int, int]) -> None:
    source = normalise(samples.jpeg((4001, 2999))).jpeg
    thumbnail = Image.open(io.BytesIO(processing.thumbnail(source, size)))
    assert (thumbnail.format, thumbnail.size) == ("JPEG", size)
