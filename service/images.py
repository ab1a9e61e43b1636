"""The domain: image records, the thumbnail size series and the ImageService use cases."""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, Protocol, TypeVar
from uuid import UUID

import uuid6

from . import processing
from .errors import EmptyUpload, ImageNotFound, InvalidCursor, UploadTooLarge
from .metrics import Metrics

Size = tuple[int, int]
T = TypeVar("T")

# NOTE: uploads up to this size stay in memory while they are checked; larger ones spill to disk.
SPOOL_MEMORY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ImageRecord:
    """What the service knows about one stored image."""

    id: UUID
    size: Size
    modified: datetime


@dataclass
class StoredImage:
    """An opened stored JPEG: its record, its length, and its bytes chunk by chunk."""

    record: ImageRecord
    length: int
    chunks: AsyncIterator[bytes]
    close: Callable[[], Awaitable[None]]

    def __aiter__(self) -> StoredImage:
        return self

    async def __anext__(self) -> bytes:
        return await anext(self.chunks)

    async def read_all(self) -> bytes:
        """Read the whole JPEG, for rendering; full-image GETs stream instead."""
        return b"".join([chunk async for chunk in self.chunks])


class Storage(Protocol):
    """Where images and their records live: an S3 bucket or the embedded local store."""

    async def check(self) -> None:
        """Raise StorageUnavailable unless the store answers."""

    async def save(
        self, record: ImageRecord, original: IO[bytes], original_type: str, jpeg: bytes
    ) -> None:
        """Store the original upload, its JPEG and its record, or nothing at all."""

    async def open(self, image_id: UUID) -> StoredImage:
        """Open the JPEG of an image; raises ImageNotFound."""

    async def delete(self, image_id: UUID) -> None:
        """Delete an image and everything stored for it; raises ImageNotFound."""

    async def page(self, after: UUID | None, limit: int) -> list[ImageRecord]:
        """Up to `limit` records in upload order, starting after the id `after`."""


@dataclass(frozen=True)
class Page:
    """One page of the image listing, and the cursor of the next one if there is more."""

    records: list[ImageRecord]
    next_cursor: str | None


def thumbnail_sizes(size: Size, min_size: int) -> list[Size]:
    """The allowed thumbnail sizes: halved, quartered, ... while both sides stay >= min_size."""
    width, height = size
    sizes = []
    factor = 2
    while width // factor >= min_size and height // factor >= min_size:
        sizes.append((width // factor, height // factor))
        factor *= 2
    return sizes


def encode_cursor(image_id: UUID) -> str:
    return base64.urlsafe_b64encode(image_id.bytes).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> UUID:
    try:
        return UUID(bytes=base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        raise InvalidCursor(f"{cursor!r} is not a cursor this service gave out") from None


def utc_now() -> datetime:
    return datetime.now(UTC)


class ImageWorkers:
    """A thread pool for CPU-bound image work, open for the app's lifetime.

    Pillow releases the GIL while it decodes, resizes and encodes, so threads scale across cores.
    """

    def __init__(self, threads: int, metrics: Metrics) -> None:
        self._threads = threads or os.cpu_count() or 1
        self._metrics = metrics
        self._executor: ThreadPoolExecutor | None = None

    async def __aenter__(self) -> ImageWorkers:
        self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="asgilook-image")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._executor is not None
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        assert self._executor is not None, "ImageWorkers used outside the app's lifespan"
        loop = asyncio.get_running_loop()
        with self._metrics.timed(self._metrics.render_seconds, function.__name__):
            return await loop.run_in_executor(self._executor, function, *args)


class ImageService:
    """The use cases: upload, list, open, render a thumbnail, delete."""

    def __init__(
        self,
        storage: Storage,
        workers: ImageWorkers,
        *,
        metrics: Metrics,
        max_upload_bytes: int,
        max_image_pixels: int,
        min_thumb_size: int,
        new_id: Callable[[], UUID] = uuid6.uuid7,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._storage = storage
        self._workers = workers
        self._metrics = metrics
        self._max_upload_bytes = max_upload_bytes
        self._max_image_pixels = max_image_pixels
        self._min_thumb_size = min_thumb_size
        self._new_id = new_id
        self._clock = clock

    def thumbnail_sizes(self, record: ImageRecord) -> list[Size]:
        return thumbnail_sizes(record.size, self._min_thumb_size)

    async def upload(self, body: AsyncIterable[bytes], declared_length: int | None) -> ImageRecord:
        """Check, convert and store an upload streamed from the client."""
        if declared_length is not None and declared_length > self._max_upload_bytes:
            raise UploadTooLarge(f"uploads are limited to {self._max_upload_bytes} bytes")
        with tempfile.SpooledTemporaryFile(SPOOL_MEMORY_BYTES) as spool:
            received = await self._spool(body, spool)
            self._metrics.upload_bytes.observe(received)
            if received == 0:
                raise EmptyUpload("the request body is empty; send the image bytes")
            spool.seek(0)
            normalised = await self._workers.run(
                processing.normalise, spool, self._max_image_pixels
            )
            record = ImageRecord(
                self._new_id(), normalised.size, self._clock().replace(microsecond=0)
            )
            spool.seek(0)
            await self._storage.save(record, spool, normalised.original_type, normalised.jpeg)
        return record

    async def page(self, cursor: str | None, limit: int) -> Page:
        """One page of images, oldest first."""
        after = decode_cursor(cursor) if cursor is not None else None
        records = await self._storage.page(after, limit + 1)
        if len(records) <= limit:
            return Page(records, None)
        return Page(records[:limit], encode_cursor(records[limit - 1].id))

    async def open(self, image_id: UUID) -> StoredImage:
        """The stored JPEG, to be streamed."""
        return await self._storage.open(image_id)

    async def thumbnail(self, image_id: UUID, size: Size) -> bytes:
        """Render one of the image's allowed thumbnail sizes."""
        stored = await self._storage.open(image_id)
        try:
            if size not in self.thumbnail_sizes(stored.record):
                raise ImageNotFound(f"{size[0]}x{size[1]} is not a thumbnail size of this image")
            jpeg = await stored.read_all()
        finally:
            await stored.close()
        return await self._workers.run(processing.thumbnail, jpeg, size)

    async def delete(self, image_id: UUID) -> None:
        await self._storage.delete(image_id)

    async def _spool(self, body: AsyncIterable[bytes], spool: IO[bytes]) -> int:
        received = 0
        async for chunk in body:
            received += len(chunk)
            if received > self._max_upload_bytes:
                raise UploadTooLarge(f"uploads are limited to {self._max_upload_bytes} bytes")
            # NOTE: a write to the page cache is quicker than a hop to a thread.
            spool.write(chunk)
        return received
