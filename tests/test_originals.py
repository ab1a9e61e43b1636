"""An upload served as uploaded is kept as what its served JPEG lacks, and put back together
byte for byte; the HTTP download of originals is in test_access.py."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import pytest

from service import originals, processing

from . import samples

MAX_PIXELS = 50_000_000

UPLOADS = [
    pytest.param(samples.jpeg((64, 48)), id="nothing to leave out"),
    pytest.param(samples.upright_jpeg_with_metadata(), id="EXIF, XMP and a comment"),
    pytest.param(samples.with_fill_bytes(samples.upright_jpeg_with_metadata()), id="fill bytes"),
    pytest.param(samples.mpo(), id="MPO: a second picture after the first"),
    pytest.param(samples.jpeg((64, 48)) + b"\0trailing bytes", id="bytes after the image"),
    pytest.param(samples.jpeg((800, 600), quality=97), id="larger"),
]


def stripped(upload: bytes) -> tuple[bytes, bytes]:
    """The served JPEG and the difference strip() makes of an upload."""
    served, difference = io.BytesIO(), io.BytesIO()
    assert processing.strip(io.BytesIO(upload), MAX_PIXELS, served, difference) is not None
    return served.getvalue(), difference.getvalue()


async def chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def put_together(served: bytes, difference: bytes, chunk_size: int) -> bytes:
    runs, run_bytes = await originals.read_runs(chunks_of(difference, chunk_size))
    restored = originals.restored(chunks_of(served, chunk_size), runs, run_bytes)
    return b"".join([piece async for piece in restored])


@pytest.mark.parametrize("upload", UPLOADS)
@pytest.mark.parametrize("chunk_size", [1, 7, 256 * 1024])
async def test_the_jpeg_and_its_difference_make_the_upload_byte_for_byte(
    upload: bytes, chunk_size: int
) -> None:
    served, difference = stripped(upload)
    assert await put_together(served, difference, chunk_size) == upload
    # NOTE: the difference holds only what the served JPEG lacks, and a line saying where.
    header = difference.index(b"\n") + 1
    assert len(difference) - header == len(upload) - len(served)


def test_the_difference_of_a_photo_is_its_metadata_not_a_second_copy() -> None:
    upload = samples.upright_jpeg_with_metadata((2000, 1500))
    served, difference = stripped(upload)
    assert not samples.has_exif(served)
    assert len(difference) < 2_000 < len(upload) // 10


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda difference: difference[:-1], id="a run cut short"),
        pytest.param(lambda difference: difference[: difference.index(b"\n")], id="no header"),
        pytest.param(lambda difference: b"{not runs}\n", id="a header that is not runs"),
        pytest.param(lambda difference: b"[[40,4],[42,4]]\n" + bytes(8), id="overlapping runs"),
        pytest.param(lambda difference: b"[[40,0]]\n", id="an empty run"),
    ],
)
async def test_a_damaged_difference_is_an_error_never_a_wrong_file(damage: object) -> None:
    served, difference = stripped(samples.upright_jpeg_with_metadata())
    assert callable(damage)
    with pytest.raises(originals.DamagedDifference):
        await put_together(served, damage(difference), 64)


async def test_a_served_jpeg_cut_short_is_an_error_never_a_wrong_file() -> None:
    served, difference = stripped(samples.mpo())
    with pytest.raises(originals.DamagedDifference):
        await put_together(served[: len(served) // 2], difference, 64)
