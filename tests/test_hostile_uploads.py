"""Every file a client can send gets a clear answer: 201, or 400 (damaged), 413 (too large) or
415 (not a format, or a variant of one, that the service reads), with a JSON body; never a 500.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import falcon.testing
import pytest
from PIL import Image

from service import processing  # noqa: F401 (registers the HEIF plugin for the samples)
from service.app import create_app
from service.settings import Settings

from . import samples

# Pillow warns of what it skips in damaged files; in production those warnings are logged.
pytestmark = pytest.mark.filterwarnings("ignore:::PIL")


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[falcon.testing.ASGIConductor]:
    settings = Settings(
        _env_file=None,
        storage_path=tmp_path / "data",
        min_thumb_size=8,
        max_image_pixels=4_000_000,
        rate_limit_uploads="",  # hundreds of uploads from one client
        rate_limit_renders="",
    )
    async with falcon.testing.ASGIConductor(create_app(settings)) as conductor:
        yield conductor


def pillow(image: Image.Image, format: str, **options: object) -> bytes:
    output = io.BytesIO()
    image.save(output, format, **options)
    return output.getvalue()


def patched(data: bytes, offset: int, layout: str, value: int) -> bytes:
    changed = bytearray(data)
    struct.pack_into(layout, changed, offset, value)
    return bytes(changed)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def tiff_entries(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(tag, field type, offset of the value) of each entry of a little-endian TIFF's first IFD."""
    ifd = struct.unpack_from("<I", data, 4)[0]
    for index in range(struct.unpack_from("<H", data, ifd)[0]):
        entry = ifd + 2 + 12 * index
        tag, field_type = struct.unpack_from("<HH", data, entry)
        yield tag, field_type, entry + 8


def tiff_with_tag(data: bytes, tag: int, value: int) -> bytes:
    offset = next(offset for found, _, offset in tiff_entries(data) if found == tag)
    return patched(data, offset, "<H", value)


def bmp_with_bitfields(masks: tuple[int, int, int]) -> bytes:
    """A 4x4 16-bit BMP whose colours are laid out by these bit masks."""
    pixels = b"\0" * 2 * 4 * 4
    header = struct.pack("<IiiHHIIiiII", 40, 4, 4, 1, 16, 3, len(pixels), 0, 0, 0, 0)
    offset = 14 + len(header) + 12
    return (
        b"BM"
        + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
        + header
        + struct.pack("<III", *masks)
        + pixels
    )


BMP = pillow(Image.new("RGB", (8, 8), "red"), "BMP")
PALETTE_BMP = pillow(Image.new("P", (8, 8)), "BMP")
PNG = pillow(Image.new("RGB", (8, 8)), "PNG")
TIFF = pillow(Image.new("RGB", (8, 8)), "TIFF", compression="tiff_deflate")
JPEG = pillow(Image.new("RGB", (8, 8)), "JPEG")
START_OF_FRAME = JPEG.index(b"\xff\xc0")
ZTXT_BOMB = png_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"a" * 4 * 1024 * 1024))

UNSUPPORTED, DAMAGED, TOO_LARGE = 415, 400, 413


@pytest.mark.parametrize(
    ("upload", "status"),
    [
        # BMP variants the format defines but Pillow does not read, and values it never defines.
        pytest.param(patched(BMP, 28, "<H", 0), UNSUPPORTED, id="bmp-depth-0-jpeg-or-png"),
        pytest.param(patched(BMP, 28, "<H", 2), UNSUPPORTED, id="bmp-depth-2"),
        pytest.param(patched(BMP, 28, "<H", 30000), DAMAGED, id="bmp-depth-30000"),
        pytest.param(patched(BMP, 30, "<I", 6), UNSUPPORTED, id="bmp-alpha-bitfields"),
        pytest.param(patched(BMP, 30, "<I", 4), UNSUPPORTED, id="bmp-compression-jpeg"),
        pytest.param(patched(BMP, 30, "<I", 77), DAMAGED, id="bmp-compression-77"),
        pytest.param(patched(BMP, 14, "<I", 16), UNSUPPORTED, id="bmp-os2-short-header"),
        pytest.param(patched(BMP, 14, "<I", 99), DAMAGED, id="bmp-header-99"),
        pytest.param(patched(PALETTE_BMP, 46, "<I", 10**7), DAMAGED, id="bmp-absurd-palette"),
        pytest.param(bmp_with_bitfields((0xF00, 0xF0, 0xF)), UNSUPPORTED, id="bmp-rgb444"),
        # A PNG whose compressed text would decompress past Pillow's limit.
        pytest.param(PNG[:33] + ZTXT_BOMB + PNG[33:], UNSUPPORTED, id="png-text-bomb"),
        pytest.param(samples.truncated(samples.png_with_alpha()), DAMAGED, id="png-truncated"),
        # TIFFs: a codec this libtiff lacks, one Pillow has no name for, an impossible offset.
        pytest.param(tiff_with_tag(TIFF, 259, 50001), UNSUPPORTED, id="tiff-webp"),
        pytest.param(tiff_with_tag(TIFF, 259, 34887), UNSUPPORTED, id="tiff-lerc"),
        pytest.param(patched(TIFF, 4, "<I", 0xFFFFFF00), DAMAGED, id="tiff-first-ifd-offset"),
        pytest.param(patched(JPEG, START_OF_FRAME + 4, "B", 12), UNSUPPORTED, id="jpeg-12-bit"),
        pytest.param(JPEG[: len(JPEG) // 2], DAMAGED, id="jpeg-truncated"),
        # Sides JPEG cannot hold, whatever the pixel count.
        pytest.param(pillow(Image.new("L", (70_000, 1)), "PNG"), TOO_LARGE, id="70000-wide"),
        pytest.param(b"GIF89a" + b"\0" * 7, DAMAGED, id="gif-header-only"),
        pytest.param(b"%PDF-1.7\n" + b"\0" * 64, UNSUPPORTED, id="pdf"),
    ],
)
async def test_each_class_of_unreadable_file_gets_its_status(
    client: falcon.testing.ASGIConductor, upload: bytes, status: int
) -> None:
    result = await client.simulate_post("/images", body=upload)
    assert result.status_code == status, result.text
    assert result.headers["Content-Type"] == "application/json"
    assert result.json["title"] and result.json["description"]
    assert (await client.simulate_get("/images")).json == []


def test_images_pillow_reads_are_not_refused_by_those_checks() -> None:
    """The layouts beside each refused variant are read (the checks are not too broad)."""
    assert Image.open(io.BytesIO(bmp_with_bitfields((0xF800, 0x7E0, 0x1F)))).size == (4, 4)


# --- Fuzzing: valid samples of every accepted format, mutated ----------------------------------

Field = tuple[int, str]  # offset and struct layout of a header field


def _fields_of_tiff(data: bytes) -> list[Field]:
    return [(offset, "<H" if kind == 3 else "<I") for _, kind, offset in tiff_entries(data)]


def _fuzz_samples() -> dict[str, tuple[bytes, list[Field]]]:
    """Per format, a valid file and the header fields worth setting to extreme values."""
    photo = Image.open(io.BytesIO(samples.jpeg((64, 48)))).convert("RGB")
    bmp_fields = [(10, "<I"), (14, "<I"), (18, "<i"), (22, "<i"), (26, "<H"), (28, "<H")]
    bmp_fields += [(30, "<I"), (34, "<I"), (46, "<I")]
    png_fields = [(16, ">I"), (20, ">I"), (24, "B"), (25, "B"), (26, "B"), (27, "B"), (28, "B")]
    gif_fields = [(6, "<H"), (8, "<H"), (10, "B"), (11, "B")]

    def jpeg_fields(data: bytes) -> list[Field]:
        frame = max(data.find(b"\xff\xc0"), data.find(b"\xff\xc2"))
        return [(frame + 2, ">H"), (frame + 4, "B"), (frame + 5, ">H"), (frame + 7, ">H")]

    made = {
        "jpeg": pillow(photo, "JPEG"),
        "jpeg-progressive": pillow(photo, "JPEG", progressive=True),
        "jpeg-cmyk": pillow(photo.convert("CMYK"), "JPEG"),
        "jpeg-exif-rotated": samples.jpeg_with_exif((64, 48)),
        "mpo": pillow(photo, "MPO", save_all=True, append_images=[photo]),
        "png": pillow(photo, "PNG"),
        "png-interlaced-alpha": pillow(photo.convert("RGBA"), "PNG", interlace=True),
        "png-palette": pillow(photo.convert("P"), "PNG"),
        "png-16-bit": samples.deep_png((64, 48), samples.horizontal_ramp(64, 0, 65535), channels=1),
        "gif-animated": pillow(
            photo.convert("P"), "GIF", save_all=True, append_images=[photo.convert("P")]
        ),
        "webp": pillow(photo, "WEBP"),
        "webp-lossless-alpha": pillow(photo.convert("RGBA"), "WEBP", lossless=True),
        "bmp": pillow(photo, "BMP"),
        "bmp-palette": pillow(photo.convert("P"), "BMP"),
        "bmp-1-bit": pillow(photo.convert("1"), "BMP"),
        "tiff": pillow(photo, "TIFF"),
        "tiff-lzw-cmyk": pillow(photo.convert("CMYK"), "TIFF", compression="tiff_lzw"),
        "tiff-jpeg": pillow(photo, "TIFF", compression="jpeg"),
        "heif": pillow(photo, "HEIF", quality=80),
        "avif": pillow(photo, "AVIF", quality=60),
        "tiff-float": samples.deep_tiff(
            (64, 48), samples.horizontal_ramp(64, 0, 1), bits=32, kind="float"
        ),
    }
    fields: dict[str, list[Field]] = {}
    for name, data in made.items():
        kind = name.split("-")[0]
        if kind in ("jpeg", "mpo"):
            fields[name] = jpeg_fields(data)
        elif kind == "tiff":
            fields[name] = _fields_of_tiff(data)
        else:
            fields[name] = {"png": png_fields, "gif": gif_fields, "bmp": bmp_fields}.get(kind, [])
        if kind == "webp":  # the canvas or frame size, wherever the variant keeps it
            fields[name] = [(21, "<I"), (24, "<I"), (26, "<H"), (28, "<H")]
    return {name: (data, fields[name]) for name, data in made.items()}


EXTREMES = {
    "B": [0, 1, 2, 0x7F, 0x80, 0xFF],
    "H": [0, 1, 0x7FFF, 0x8000, 0xFFFF],
    "I": [0, 1, 65_536, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF],
    "i": [0, -1, 65_536, 0x7FFF_FFFF, -0x8000_0000],
}


def _with_png_checksum(data: bytes) -> bytes:
    """Mutations of a PNG header get a valid checksum, so they reach the decoder."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 33:
        return data
    return data[:29] + struct.pack(">I", zlib.crc32(data[12:29])) + data[33:]


def mutations(seed: int, per_sample: int) -> Iterator[tuple[str, bytes]]:
    """Truncations, flipped and overwritten header bytes, and header fields set to extremes."""
    rng = random.Random(seed)
    for name, (data, fields) in _fuzz_samples().items():
        for case in range(per_sample):
            yield f"{name}#{case}", _mutated(rng, data, fields)


def _mutated(rng: random.Random, data: bytes, fields: list[Field]) -> bytes:
    at = rng.randrange(min(64, len(data)))
    how = rng.choice(["truncate", "overwrite", "flip"] + ["extreme"] * 2 * bool(fields))
    if how == "truncate":
        return data[: rng.randrange(1, len(data))]
    if how == "overwrite":
        return patched(data, at, "B", rng.randrange(256))
    if how == "flip":
        return patched(data, at, "B", data[at] ^ 1 << rng.randrange(8))
    offset, layout = rng.choice(fields)
    return _with_png_checksum(patched(data, offset, layout, rng.choice(EXTREMES[layout[-1]])))


async def test_mutated_files_of_every_format_get_a_clear_answer(
    client: falcon.testing.ASGIConductor,
) -> None:
    answers: dict[int, int] = {}
    for name, upload in mutations(seed=20261130, per_sample=20):
        result = await client.simulate_post("/images", body=upload)
        answers[result.status_code] = answers.get(result.status_code, 0) + 1
        assert result.status_code in (201, 400, 413, 415), (name, result.status_code, result.text)
        assert result.headers["Content-Type"] == "application/json", name
        if result.status_code != 201:
            assert result.json["title"] and result.json["description"], name
            continue
        created = result.json
        stored = await client.simulate_get(created["image"])
        assert stored.status_code == 200, name
        assert Image.open(io.BytesIO(stored.content)).size == tuple(created["size"]), name
        for thumbnail in created["thumbnails"]:
            rendered = await client.simulate_get(thumbnail)
            assert rendered.status_code == 200, (name, thumbnail)
            width, height = thumbnail.rsplit("/", 1)[1].removesuffix(".jpeg").split("x")
            assert Image.open(io.BytesIO(rendered.content)).size == (int(width), int(height))
    # The mix exercised every kind of answer, not just one.
    assert set(answers) == {201, 400, 413, 415}, answers
