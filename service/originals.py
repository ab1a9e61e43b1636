"""How an upload is kept, to be downloaded as received: whole, or, for a JPEG served as
uploaded, as what the served JPEG lacks of it (its metadata segments, and what follows the
image, such as an MPO's second picture), so that its 2.5 MB are not stored twice.

A difference is a JSON line, the runs of bytes the served JPEG lacks (where each starts in the
upload, and its length, in order), then those bytes one after the other. The upload is the
served JPEG with each run put back where it was. The served JPEG is never rewritten.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import BinaryIO

ByteRun = tuple[int, int]  # where a run of bytes starts in the upload, and its length

WHOLE = "whole"
DIFFERENCE = "difference"
COPY_CHUNK_BYTES = 256 * 1024
MAX_HEADER_BYTES = 16 * 1024 * 1024  # a run is at least a byte: this is far more than enough


class DamagedDifference(Exception):
    """A stored difference, or the JPEG it applies to, is not what it was written as."""


def write_difference(upload: BinaryIO, runs: Sequence[ByteRun], output: BinaryIO) -> None:
    """Write what the served JPEG lacks of `upload`: the runs, then their bytes."""
    output.write(json.dumps(runs, separators=(",", ":")).encode() + b"\n")
    for start, length in runs:
        upload.seek(start)
        while length > 0:
            chunk = upload.read(min(length, COPY_CHUNK_BYTES))
            if not chunk:
                raise DamagedDifference("the upload ended inside a run")
            output.write(chunk)
            length -= len(chunk)


class _Chunks:
    """An async stream of chunks, read by byte counts."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    async def _fill(self) -> bool:
        if not self._buffer:
            self._buffer = await anext(self._chunks, b"")
        return bool(self._buffer)

    async def line(self, limit: int) -> bytes:
        line = b""
        while b"\n" not in self._buffer:
            line += self._buffer
            self._buffer = b""
            if len(line) > limit or not await self._fill():
                raise DamagedDifference("the difference has no header line")
        head, _, self._buffer = self._buffer.partition(b"\n")
        return line + head

    async def take(self, count: int) -> AsyncIterator[bytes]:
        while count > 0:
            if not await self._fill():
                raise DamagedDifference("a stored file ended early")
            piece, self._buffer = self._buffer[:count], self._buffer[count:]
            count -= len(piece)
            yield piece

    async def rest(self) -> AsyncIterator[bytes]:
        while await self._fill():
            piece, self._buffer = self._buffer, b""
            yield piece


async def read_runs(difference: AsyncIterator[bytes]) -> tuple[list[ByteRun], _Chunks]:
    """The runs a difference holds, and the rest of it: their bytes."""
    chunks = _Chunks(difference)
    try:
        runs = [
            (int(start), int(length))
            for start, length in json.loads(await chunks.line(MAX_HEADER_BYTES))
        ]
    except (ValueError, TypeError) as error:
        raise DamagedDifference(f"the difference's header is not its runs ({error})") from None
    ends = [0] + [start + length for start, length in runs]
    if any(start < end or length < 1 for (start, length), end in zip(runs, ends, strict=False)):
        raise DamagedDifference("the difference's runs are not in order, apart and non-empty")
    return runs, chunks


async def restored(
    served: AsyncIterator[bytes], runs: Sequence[ByteRun], run_bytes: _Chunks
) -> AsyncIterator[bytes]:
    """The upload: the served JPEG with the runs put back where they were."""
    jpeg = _Chunks(served)
    position = 0  # in the upload
    for start, length in runs:
        async for piece in jpeg.take(start - position):
            yield piece
        async for piece in run_bytes.take(length):
            yield piece
        position = start + length
    async for piece in jpeg.rest():
        yield piece
