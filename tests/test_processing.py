"""The pure image functions, on bytes."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import pytest
from PIL import Image, ImageChops, ImageCms, ImageStat

from service import processing
from service.errors import ImageTooLarge, InvalidImage, UnsupportedImage

from . import samples


@dataclass
class Normalised:
    jpeg: bytes
    size: tuple[int, int]
    original_type: str
    eighth: bytes | None  # the thumbnail at 1/8 scale
    reduced: bytes | None  # the copy at 1/4 scale
    half: bytes | None  # the copy at 1/2 scale
    largest: bytes | None  # the thumbnail at 1/2 scale


def normalise(data: bytes, max_pixels: int = 50_000_000) -> Normalised:
    """An upload through the steps ImageService.upload takes."""
    source, output = io.BytesIO(data), io.BytesIO()
    outputs = processing.CopyOutputs.in_memory()
    original_type = processing.identify(source, max_pixels).media_type
    source.seek(0)
    size = processing.strip(source, max_pixels, output, io.BytesIO())
    source.seek(0)
    if size is not None:
        copies = processing.check(source, max_pixels, outputs)
        # NOTE: the service records the copies' sizes before check() has made them.
        assert copies == processing.copies_of(size)
    else:
        converted = processing.convert(source, max_pixels, output, outputs)
        size, copies = converted.size, converted.copies
    made = [
        (outputs.eighth.getvalue(), copies.eighth),
        (outputs.reduced.getvalue(), copies.reduced),
        (outputs.half.getvalue(), copies.half),
        (outputs.largest.getvalue(), copies.largest),
    ]
    for copy, copy_size in made:
        assert (copy_size is None) == (copy == b"")
        assert copy_size is None or Image.open(io.BytesIO(copy)).size == copy_size
    eighth, reduced, half, largest = (copy or None for copy, _ in made)
    return Normalised(output.getvalue(), size, original_type, eighth, reduced, half, largest)


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
    level = processing.decode(source, size)
    thumbnail = Image.open(io.BytesIO(processing.render(level, size)))
    assert (thumbnail.format, thumbnail.size) == ("JPEG", size)


def test_a_level_is_never_decoded_smaller_than_the_source_allows() -> None:
    source = samples.jpeg((250, 188))
    assert processing.decode(source, (500, 375)).size == (250, 188)
    assert processing.decode(source, (125, 94)).size == (125, 94)
    assert processing.decode(source, (125, 93)).size == (250, 188)  # 2:1 beats 125x94 to 125x93


def _psnr(a: Image.Image, b: Image.Image) -> float:
    squares = ImageStat.Stat(ImageChops.difference(a, b)).sum2
    return 10 * math.log10(255**2 * 3 * a.width * a.height / sum(squares))


def test_a_thumbnail_made_down_the_mipmap_chain_is_as_faithful_as_one_from_the_source() -> None:
    source = samples.smooth_photo((2000, 1500))
    full = Image.open(io.BytesIO(source)).convert("RGB")
    chain = processing.shrink(processing.decode(source, (1000, 750)), (500, 375))
    assert chain.size == (500, 375)  # halved once more than the 1000x750 render needed
    for size in [(500, 375), (250, 187), (125, 93)]:
        ideal = full.resize(size, Image.Resampling.LANCZOS)
        direct = decoded(processing.render(processing.decode(source, size), size))
        from_chain = decoded(processing.render(chain, size))
        assert from_chain.size == size
        assert _psnr(ideal, from_chain) > _psnr(ideal, direct) - 0.5


@pytest.mark.parametrize(
    "upload",
    [
        pytest.param(samples.smooth_photo((4000, 3000)), id="served as uploaded"),
        pytest.param(samples.turned(samples.smooth_photo((3000, 4000))), id="turned upright"),
        pytest.param(samples.scenery(7, (4000, 3000)), id="saturated edges"),
        pytest.param(samples.scenery(7, (4001, 2999)), id="odd sides, saturated edges"),
    ],
)
def test_thumbnails_from_the_copies_are_as_faithful_as_from_the_served_jpeg(
    upload: bytes,
) -> None:
    """Against a full-resolution Lanczos reference. A copy's own size is re-encoded, not
    resized, so the copy's loss is not averaged away there (a copy at 4:2:0: saturated
    edges lost 0.65 dB)."""
    stored = normalise(upload)
    full = decoded(stored.jpeg)
    sizes = [
        (stored.size[0] // divisor, stored.size[1] // divisor) for divisor in (2, 4, 8, 16, 32)
    ]
    # NOTE: 2000x1500 is made at upload where the sides are even, else from a copy at 1/2.
    assert (stored.largest is None) == (stored.half is not None)
    compared = 0
    for copy, scale in [(stored.half, 2), (stored.reduced, 4)]:
        if copy is None:
            continue
        copy_size = Image.open(io.BytesIO(copy)).size
        assert copy_size == (-(-stored.size[0] // scale), -(-stored.size[1] // scale))
        assert not samples.has_exif(copy)
        # NOTE: 1000x749 is rendered from the served JPEG: 1001x750 is too close to resize well.
        for size in [size for size in sizes if processing.resizes_well(copy_size, size)]:
            ideal = full.resize(size, Image.Resampling.LANCZOS)
            direct = decoded(processing.render(processing.decode(stored.jpeg, size), size))
            from_copy = decoded(processing.render(processing.decode(copy, size), size))
            assert from_copy.size == size
            assert _psnr(ideal, from_copy) > _psnr(ideal, direct) - 0.5, (scale, size)
            compared += 1
    assert compared >= 4
    # NOTE: the 1/2 and 1/8 thumbnails are served as they were made at upload.
    assert stored.eighth is not None
    for thumbnail, size in [(stored.largest, sizes[0]), (stored.eighth, sizes[2])]:
        if thumbnail is None:
            continue
        assert not samples.has_exif(thumbnail)
        made = decoded(thumbnail)
        assert made.size == size
        ideal = full.resize(size, Image.Resampling.LANCZOS)
        direct = decoded(processing.render(processing.decode(stored.jpeg, size), size))
        assert _psnr(ideal, made) > _psnr(ideal, direct) - 0.5, size


def test_only_large_images_get_copies() -> None:
    tiny = normalise(samples.jpeg((1600, 1200)))  # 1.9 MP: cheap to decode
    assert tiny.eighth is None and tiny.reduced is None
    small = normalise(samples.jpeg((2000, 1000)))
    assert small.eighth is not None and small.reduced is not None
    assert small.half is None and small.largest is None
    assert normalise(samples.png_with_alpha((2000, 1000))).reduced is not None
    large = normalise(samples.jpeg((4000, 2000)))  # 8 MP
    assert large.reduced is not None and large.largest is not None and large.half is None
    converted = normalise(samples.png_with_alpha((4001, 2001)))
    assert converted.reduced is not None and converted.half is not None  # odd sides
    assert converted.largest is None
    # NOTE: beyond 20 MP, the check's decode at 1/2 scale would hold too much: 1/4 only.
    huge = normalise(samples.jpeg((6000, 4000)))  # 24 MP
    assert huge.reduced is not None and huge.largest is None and huge.half is None


def decoded(jpeg: bytes) -> Image.Image:
    return Image.open(io.BytesIO(jpeg)).convert("RGB")


def _jpeg_with_metadata(mpo: bool = False, progressive: bool = False) -> bytes:
    """An upright camera JPEG: EXIF with a GPS position, XMP and a comment; or an MPO pair."""
    image = Image.open(io.BytesIO(samples.jpeg((320, 240))))
    exif = image.getexif()
    exif[samples.ORIENTATION] = 1
    exif[samples.GPS_IFD] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}
    output = io.BytesIO()
    options = {"exif": exif, "comment": b"shot at home", "xmp": b"<x:xmpmeta>secret</x:xmpmeta>"}
    if mpo:
        image.save(output, "MPO", save_all=True, append_images=[image], **options)
    else:
        image.save(output, "JPEG", quality=92, progressive=progressive, **options)
    return output.getvalue()


@pytest.mark.parametrize("kind", ["baseline", "progressive", "mpo"])
def test_upright_jpegs_are_served_losslessly_without_metadata(kind: str) -> None:
    upload = _jpeg_with_metadata(mpo=kind == "mpo", progressive=kind == "progressive")
    assert b"Exif" in upload and b"secret" in upload and b"shot at home" in upload
    result = normalise(upload)
    # NOTE: metadata lives before the image data; the image data may hold any bytes by chance.
    before_image_data = result.jpeg[: result.jpeg.index(b"\xff\xda")]
    for leak in (b"Exif", b"secret", b"shot at home", b"GPS"):
        assert leak not in before_image_data
    # NOTE: nothing after the end of the image (where an MPO keeps its second picture).
    assert result.jpeg.index(b"\xff\xd9") == len(result.jpeg) - 2
    assert len(result.jpeg) < len(upload)
    served, original = Image.open(io.BytesIO(result.jpeg)), Image.open(io.BytesIO(upload))
    assert served.size == result.size == (320, 240)
    assert served.tobytes() == original.convert("RGB").tobytes()  # the same pixels: no re-encode
    assert result.original_type == ("image/mpo" if kind == "mpo" else "image/jpeg")


def test_a_jpeg_laid_out_unusually_is_re_encoded_not_refused() -> None:
    """libjpeg skips stray bytes between segments; the lossless path does not guess, it falls
    back to a full decode and re-encode."""
    upload = samples.jpeg((400, 300))
    after_jfif = 4 + int.from_bytes(upload[4:6], "big")
    upload = upload[:after_jfif] + b"\x00\x00" + upload[after_jfif:]
    result = normalise(upload)
    served = Image.open(io.BytesIO(result.jpeg))
    served.load()
    assert served.size == result.size == (400, 300)
