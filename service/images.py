"""The domain: image records, the thumbnail size series and the ImageService use cases."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import enum
import logging
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, Protocol, Self
from uuid import UUID

import uuid6

from . import originals, processing
from .errors import (
    ClientDisconnected,
    EmptyUpload,
    ImageNotFound,
    InvalidCursor,
    RangeNotSatisfiable,
    UploadTimeout,
    UploadTooLarge,
)
from .formats import JPEG, Format
from .levels import Levels
from .metrics import Metrics
from .workers import ImageWorkers

log = logging.getLogger(__name__)

Size = tuple[int, int]

# NOTE: uploads up to this size stay in memory while they are checked; larger ones spill to disk.
SPOOL_MEMORY_BYTES = 1024 * 1024
# NOTE: a thumbnail this large is most often the largest size of a photo (2000x1500 of 12 MP),
#   which is stored as it is served (or, stored before, renders from its half copy): reading
#   the 1/4 copy for its record would be a read for nothing.
SOURCE_WITH_RECORD_MAX_PIXELS = 1_000_000
# NOTE: images whose copies a worker remembers (about 200 bytes each).
COPIES_SEEN_MAX = 10_000
LIKELY_EIGHTH_OF = (8_000_000, 24_000_000)  # pixels of the images


@dataclass(frozen=True)
class ImageRecord:
    """What the service knows about one stored image."""

    id: UUID
    size: Size
    modified: datetime
    owner: str | None = None  # the name of the API key that uploaded it
    name: str | None = None  # the file name it was uploaded under, if the client gave one
    # NOTE: the sizes of the copies stored beside its JPEG.
    copies: processing.Copies = field(default_factory=processing.Copies)

    def copy_size(self, copy: Copy) -> Size | None:
        """The size of one of its copies, if it has it."""
        return size_of(self.copies, copy)


class Copy(enum.Enum):
    """The copies stored beside a large image's JPEG, by where they are kept (and the name of
    their size in processing.Copies, which says which exist), smallest first."""

    EIGHTH = "eighth"  # the thumbnail at 1/8 scale, served as it is
    REDUCED = "reduced"  # at 1/4 scale: the thumbnails it makes well render from it
    HALF = "half"  # at 1/2 scale, likewise: where LARGEST is not made (odd sides; older images)
    LARGEST = "largest"  # the thumbnail at 1/2 scale, served as it is


# NOTE: the copies served as JPEG thumbnails of their size, and those thumbnails render from,
#   smallest first.
SERVED_COPIES = (Copy.EIGHTH, Copy.LARGEST)
SOURCE_COPIES = (Copy.REDUCED, Copy.HALF)


def size_of(copies: processing.Copies, copy: Copy) -> Size | None:
    """The size of one of the copies, if made (Copy's values name the fields of Copies)."""
    size: Size | None = getattr(copies, copy.value)
    return size


def copy_for(copies: processing.Copies, size: Size, format: Format) -> Copy | None:
    """The copy a thumbnail of `size` in `format` is made from: the 1/8 or 1/2 thumbnail
    itself (encoded as a JPEG thumbnail is), or the smallest that renders it well; None for
    the JPEG."""
    if format == JPEG:
        for copy in SERVED_COPIES:
            if size_of(copies, copy) == size:
                return copy
    for copy in SOURCE_COPIES:
        copy_size = size_of(copies, copy)
        if copy_size is not None and processing.resizes_well(copy_size, size):
            return copy
    return None


def copy_sizes(sizes: dict[Copy, Size | None]) -> processing.Copies:
    """The sizes of an image's copies, as its record holds them."""
    return processing.Copies(**{copy.value: size for copy, size in sizes.items()})


ByteRange = tuple[int, int]  # first and last byte, both included
RenderKey = tuple[UUID, Size | None, str]  # an image, a thumbnail size (None: whole), a format


@dataclass(frozen=True)
class ImageStat:
    """A stored JPEG's record and its length in bytes, read without its body."""

    record: ImageRecord
    length: int


@dataclass
class StoredImage:
    """An opened stored JPEG (or a range of it, or the original upload), read chunk by chunk."""

    record: ImageRecord
    length: int  # of the whole JPEG
    chunks: AsyncIterator[bytes]
    close: Callable[[], Awaitable[None]]
    byte_range: ByteRange | None = None
    content_type: str = "image/jpeg"

    def __aiter__(self) -> StoredImage:
        return self

    async def __anext__(self) -> bytes:
        return await anext(self.chunks)

    async def read_all(self) -> bytes:
        """Read the whole JPEG, for rendering; full-image GETs stream instead."""
        return b"".join([chunk async for chunk in self.chunks])


@dataclass(frozen=True)
class Source:
    """A stored JPEG read whole to render from (a copy or the served JPEG), and its size."""

    jpeg: bytes
    size: Size


@dataclass(frozen=True)
class ThumbnailSource:
    """What a thumbnail is made from: the image's record, and its source if read with it."""

    record: ImageRecord
    source: Source | None


@dataclass(frozen=True)
class ConvertedUpload:
    """What an upload became: its record, the JPEG to serve, and its copies (the record says
    which), which may still be in the making: a JPEG served as uploaded is checked (decoded,
    which makes its copies) while its JPEG goes to storage, and a damaged one fails there."""

    record: ImageRecord
    jpeg: IO[bytes]
    copies: Awaitable[dict[Copy, IO[bytes]]]


@dataclass(frozen=True)
class KeptOriginal:
    """The upload as it is kept, to be downloaded as received: whole, or as what the served
    JPEG lacks of it (`originals.DIFFERENCE`)."""

    file: IO[bytes]
    form: str = originals.WHOLE


class UploadBody(Protocol):
    """An upload as it arrives: its bytes, the length announced for them if any, and the file
    name the client gave, if any (known once the bytes are read)."""

    declared_length: int | None
    name: str | None

    def __aiter__(self) -> AsyncIterator[bytes]: ...


class Storage(Protocol):
    """Where images and their records live: an S3 bucket or the embedded local store. Opened
    (connected) on entry, closed on exit."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def check(self) -> None:
        """Raise StorageUnavailable unless the store answers."""

    async def save(
        self,
        image_id: UUID,
        original: KeptOriginal,
        original_type: str,
        converted: Awaitable[ConvertedUpload],
    ) -> None:
        """Store an upload: the original at once, while `converted` is made; then what it
        became, each file as soon as it is ready, and its record. All or nothing: if anything
        fails, `converted` and its copies included, what was written is removed (or left
        to the janitor) and the error raised."""

    async def stat(self, image_id: UUID) -> ImageStat:
        """The record and JPEG length of an image; raises ImageNotFound."""

    async def open(self, image_id: UUID, byte_range: ByteRange | None = None) -> StoredImage:
        """Open the JPEG of an image, or a satisfiable range of it; raises ImageNotFound."""

    async def open_original(self, record: ImageRecord) -> tuple[StoredImage, str]:
        """Open the upload as it is kept, with its content type, and the form it is kept in
        (originals.WHOLE, or DIFFERENCE: what its JPEG lacks of it); raises ImageNotFound."""

    async def open_copy(self, image_id: UUID, copy: Copy) -> StoredImage:
        """Open a copy of an image, with the image's record: one read where a stat and an open
        would be two. ImageNotFound if the image has no such copy that says its record (too
        small for one, stored before copies, or before they said it) or does not exist."""

    async def delete(self, record: ImageRecord) -> None:
        """Delete an image and everything stored for it; raises ImageNotFound."""

    async def page(self, after: UUID | None, limit: int) -> list[ImageRecord]:
        """Up to `limit` records in upload order, starting after the id `after`."""

    async def claim_round(self, round_number: int) -> bool:
        """True for the one caller, of all workers and replicas, that claims this round first."""

    async def clean_up(self, older_than: datetime) -> list[UUID]:
        """Remove what uploads and deletes begun before `older_than` and never finished left
        behind; the ids of the images concerned."""


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


def resolve_range(requested: tuple[int, int], length: int) -> ByteRange:
    """Turn a Range header's (first, last) into the bytes to send; raise if unsatisfiable.

    A negative first is a suffix length ("bytes=-500"), a last of -1 means "to the end".
    """
    first, last = requested
    start = max(length + first, 0) if first < 0 else first
    end = length - 1 if last < 0 else min(last, length - 1)
    if start >= length or start > end:
        raise RangeNotSatisfiable(length)
    return start, end


def encode_cursor(image_id: UUID) -> str:
    return base64.urlsafe_b64encode(image_id.bytes).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> UUID:
    try:
        return UUID(bytes=base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        raise InvalidCursor(f"{cursor!r} is not a cursor this service gave out") from None


def _copy_files(
    copies: processing.Copies, outputs: processing.CopyOutputs
) -> dict[Copy, IO[bytes]]:
    """The files of the copies made, rewound."""
    files: dict[Copy, IO[bytes]] = {}
    for copy in Copy:
        if size_of(copies, copy) is not None:
            files[copy] = getattr(outputs, copy.value)
            files[copy].seek(0)
    return files


async def _restored_original(jpeg: StoredImage, difference: StoredImage) -> StoredImage:
    """An upload kept as a difference, from its served JPEG and that difference, both opened."""

    async def close() -> None:
        await jpeg.close()
        await difference.close()

    try:
        runs, run_bytes = await originals.read_runs(difference.chunks)
    except BaseException:
        await close()
        raise
    return StoredImage(
        jpeg.record,
        jpeg.length + sum(length for _, length in runs),
        originals.restored(jpeg.chunks, runs, run_bytes),
        close,
        content_type=difference.content_type,
    )


async def _dismissed(*works: asyncio.Future[Any] | None) -> None:
    """Cancel work whose outcome no longer matters, and wait until its threads are done with
    what they read and write. Its error is not the one to report (asyncio would log it as
    never retrieved)."""
    started = [work for work in works if work is not None]
    for work in started:
        work.cancel()
    if started:
        await asyncio.wait(started)
    for work in started:
        if not work.cancelled():
            work.exception()


def utc_now() -> datetime:
    return datetime.now(UTC)


class ImageService:
    """The use cases: upload, list, open, render a thumbnail, delete."""

    def __init__(
        self,
        storage: Storage,
        workers: ImageWorkers,
        levels: Levels,
        *,
        metrics: Metrics,
        max_upload_bytes: int,
        upload_timeout: float,
        max_image_pixels: int,
        min_thumb_size: int,
        new_id: Callable[[], UUID] = uuid6.uuid7,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._storage = storage
        self._workers = workers
        self._levels = levels
        self._metrics = metrics
        self._max_upload_bytes = max_upload_bytes
        self._upload_timeout = upload_timeout
        self._max_image_pixels = max_image_pixels
        self._min_thumb_size = min_thumb_size
        self._new_id = new_id
        self._clock = clock
        # NOTE: concurrent requests for one thumbnail share one render (single flight).
        self._renders: dict[RenderKey, asyncio.Future[bytes]] = {}
        # NOTE: the copies of images whose thumbnails were asked here lately, to open first the
        #   one a size is made from (a read too many cost 5 ms of CPU and 2.6 of SeaweedFS's per
        #   1000x750 miss); a hint, never proof: what is opened says if the image still exists.
        self._copies_seen: dict[UUID, processing.Copies] = {}

    def thumbnail_sizes(self, record: ImageRecord) -> list[Size]:
        return thumbnail_sizes(record.size, self._min_thumb_size)

    async def upload(self, body: UploadBody, *, owner: str | None = None) -> ImageRecord:
        """Check, convert and store an upload streamed from the client."""
        declared_length = body.declared_length
        if declared_length is not None and declared_length > self._max_upload_bytes:
            raise UploadTooLarge(f"uploads are limited to {self._max_upload_bytes} bytes")
        # NOTE: the upload is spooled to a named file, so that storage and the check read it
        #   through handles of their own.
        with (
            tempfile.NamedTemporaryFile() as spool,
            tempfile.SpooledTemporaryFile(SPOOL_MEMORY_BYTES) as served,
            tempfile.SpooledTemporaryFile(SPOOL_MEMORY_BYTES) as difference,
        ):
            received = await self._spool(body, declared_length, spool)
            self._metrics.upload_bytes.observe(received)
            if received == 0:
                raise EmptyUpload("the request body is empty; send the image bytes")
            spool.flush()
            spool.seek(0)
            identified = await self._workers.run(processing.identify, spool, self._max_image_pixels)
            image_id = self._new_id()

            def record(size: Size, copies: processing.Copies) -> ImageRecord:
                modified = self._clock().replace(microsecond=0)
                return ImageRecord(image_id, size, modified, owner, body.name, copies)

            async def check() -> dict[Copy, IO[bytes]]:
                outputs = processing.CopyOutputs.in_memory()
                with open(spool.name, "rb") as source:
                    made = await self._workers.run(
                        processing.check,
                        source,
                        self._max_image_pixels,
                        outputs,
                        memory=processing.check_bytes(identified.size),
                    )
                return _copy_files(made, outputs)

            async def convert() -> ConvertedUpload:
                """What an upload that strip() did not take becomes."""
                spool.seek(0)
                outputs = processing.CopyOutputs.in_memory()
                converted = await self._workers.run(
                    processing.convert,
                    spool,
                    self._max_image_pixels,
                    served,
                    outputs,
                    memory=processing.convert_bytes(identified.size),
                )
                served.seek(0)
                made = asyncio.get_running_loop().create_future()
                made.set_result(_copy_files(converted.copies, outputs))
                return ConvertedUpload(record(converted.size, converted.copies), served, made)

            # NOTE: a JPEG served as uploaded is checked while it is stripped of its metadata,
            #   and stored while it is checked; a damaged one fails there. Its original is kept
            #   as what the served JPEG lacks of it: 2.5 MB of a 12 MP photo are not stored twice.
            checking = asyncio.ensure_future(check()) if identified.servable_as_is else None
            converting: asyncio.Future[ConvertedUpload] | None = None
            try:
                size = None
                if checking is not None:
                    spool.seek(0)
                    size = await self._workers.run(
                        processing.strip, spool, self._max_image_pixels, served, difference
                    )
                if size is not None and checking is not None:
                    served.seek(0)
                    difference.seek(0)
                    converting = asyncio.get_running_loop().create_future()
                    converting.set_result(
                        ConvertedUpload(record(size, processing.copies_of(size)), served, checking)
                    )
                else:
                    await _dismissed(checking)  # if laid out unusually: re-encoded instead
                    converting = asyncio.ensure_future(convert())
                with open(spool.name, "rb") as whole:
                    original = (
                        KeptOriginal(difference, originals.DIFFERENCE)
                        if size is not None
                        else KeptOriginal(whole)
                    )
                    await self._storage.save(image_id, original, identified.media_type, converting)
            except BaseException:
                # NOTE: if the store failed before it waited for them; a failure of theirs that
                #   it did not wait for is not the one to report. They end before the spooled
                #   files they use are closed.
                await _dismissed(converting, checking)
                raise
            return converting.result().record

    async def page(self, cursor: str | None, limit: int) -> Page:
        """One page of images, oldest first."""
        after = decode_cursor(cursor) if cursor is not None else None
        records = await self._storage.page(after, limit + 1)
        if len(records) <= limit:
            return Page(records, None)
        return Page(records[:limit], encode_cursor(records[limit - 1].id))

    async def stat(self, image_id: UUID) -> ImageStat:
        """What is known of an image without reading it."""
        return await self._storage.stat(image_id)

    async def open(
        self, image_id: UUID, requested_range: tuple[int, int] | None = None
    ) -> StoredImage:
        """The stored JPEG, or the requested range of it, to be streamed."""
        if requested_range is None:
            return await self._storage.open(image_id)
        stat = await self._storage.stat(image_id)
        return await self._storage.open(image_id, resolve_range(requested_range, stat.length))

    def thumbnail_etag(self, record: ImageRecord, size: Size, format: Format = JPEG) -> str:
        # NOTE: the format and its encoder settings are part of what the bytes depend on.
        settings = "".join(f"-{key}{value}" for key, value in sorted(format.options.items()))
        return f"{record.id}-{size[0]}x{size[1]}-{format.name}{settings}"

    async def thumbnail_source(
        self, image_id: UUID, size: Size, format: Format = JPEG
    ) -> ThumbnailSource:
        """The record of an image that has this thumbnail size, and the source the thumbnail
        is made from if it came with the record: the 1/8 thumbnail, the 1/4 copy, or the JPEG
        of an image without copies. One read of the store where a stat and a read would be two,
        for the sizes pages ask; a large thumbnail's record is read alone, and its source once
        admitted."""
        if size[0] * size[1] > SOURCE_WITH_RECORD_MAX_PIXELS:
            record = (await self._storage.stat(image_id)).record
            self._seen(record)
            self._check_thumbnail_size(record, size)
            return ThumbnailSource(record, None)
        stored, copy = await self._open_first(
            image_id, self._copies_to_open(image_id, size, format)
        )
        try:
            record = stored.record
            self._seen(record)
            self._check_thumbnail_size(record, size)
            if copy is not None and copy is not copy_for(record.copies, size, format):
                if copy is Copy.EIGHTH:  # 30 KB: read, so that the connection is kept
                    await stored.read_all()
                return ThumbnailSource(record, None)
            source_size = self._source_size(record, copy)
            return ThumbnailSource(record, Source(await stored.read_all(), source_size))
        finally:
            await stored.close()

    def _copies_to_open(self, image_id: UUID, size: Size, format: Format) -> list[Copy]:
        """The copies thumbnail_source() tries, in order, before the JPEG."""
        seen = self._copies_seen.get(image_id)
        if seen is not None:
            copy = copy_for(seen, size, format)
            return [copy] if copy else []
        # NOTE: a guess, as a wrong one costs a read either way: the 1/8 thumbnail first for the
        #   sizes that most likely are one, those of camera photos (8 to 24 MP).
        pixels = size[0] * size[1] * 64
        likely_eighth = format == JPEG and LIKELY_EIGHTH_OF[0] <= pixels <= LIKELY_EIGHTH_OF[1]
        return [Copy.EIGHTH, Copy.REDUCED] if likely_eighth else [Copy.REDUCED]

    def _seen(self, record: ImageRecord) -> None:
        if len(self._copies_seen) >= COPIES_SEEN_MAX and record.id not in self._copies_seen:
            del self._copies_seen[next(iter(self._copies_seen))]  # the oldest
        self._copies_seen[record.id] = record.copies

    async def _open_first(
        self, image_id: UUID, copies: list[Copy]
    ) -> tuple[StoredImage, Copy | None]:
        """The first of these copies the image has, with its record; else its JPEG."""
        for copy in copies:
            with contextlib.suppress(ImageNotFound):
                return await self._storage.open_copy(image_id, copy), copy
        return await self._storage.open(image_id), None

    async def thumbnail(
        self,
        record: ImageRecord,
        size: Size,
        format: Format = JPEG,
        source: Source | None = None,
    ) -> bytes:
        """Render one of the image's allowed thumbnail sizes, once for all who ask meanwhile.

        The record (and the source if read with it) is the caller's, read just before
        (thumbnail_source): it is what proves the image is still there, so a level kept for
        an image since deleted is never rendered.
        """
        self._check_thumbnail_size(record, size)
        return await self._once(
            (record.id, size, format.name), lambda: self._render(record, size, format, source)
        )

    async def reencoded(self, record: ImageRecord, format: Format) -> bytes:
        """The whole image in another format, once for all who ask meanwhile."""
        return await self._once(
            (record.id, None, format.name), lambda: self._reencode(record, format)
        )

    async def _once(self, key: RenderKey, render: Callable[[], Awaitable[bytes]]) -> bytes:
        """Single flight: the render of `key` in progress, else a new one."""
        running = self._renders.get(key)
        if running is None:
            running = self._renders[key] = asyncio.ensure_future(render())
            running.add_done_callback(lambda _: self._renders.pop(key, None))
        # NOTE: shielded, so a client going away does not cancel the others' render.
        return await asyncio.shield(running)

    async def _reencode(self, record: ImageRecord, format: Format) -> bytes:
        memory = processing.decode_and_render_bytes(record.size, record.size, None)
        async with self._workers.admitted(memory):
            jpeg = await self._read(self._storage.open(record.id))
            reencoded, _ = await self._workers.in_thread(
                processing.decode_and_render, jpeg, record.size, None, format
            )
        return reencoded

    async def _render(
        self, record: ImageRecord, size: Size, format: Format, source: Source | None
    ) -> bytes:
        copy = copy_for(record.copies, size, format)
        if copy in SERVED_COPIES:  # made at upload as this very thumbnail
            return (
                source.jpeg
                if source
                else await self._read(self._storage.open_copy(record.id, copy))
            )
        # NOTE: decoded levels are shared by every format.
        level = await self._levels.find(record.id, size)
        if level is not None:
            return await self._workers.run(
                processing.render, level, size, format, memory=processing.render_bytes(size)
            )
        with self._levels.rendering(record.id, size) as hand_on:
            # NOTE: a copy, where it makes the size well, is a fraction of the bytes to read
            #   and decode; images stored before there were copies have none.
            source_size = source.size if source else self._source_size(record, copy)
            # NOTE: shrunk for the next size down that is rendered (not the 1/8 thumbnail), unless
            #   that renders from a smaller copy (it decodes for less than the halving of a large
            #   level costs); a level decoded larger than needed (libjpeg scales by 1/8 at most)
            #   may serve larger sizes too.
            smaller = [
                s
                for s in self.thumbnail_sizes(record)
                if s[0] < size[0] and copy_for(record.copies, s, format) not in SERVED_COPIES
            ]
            next_size = smaller[0] if smaller else size
            same_source = copy_for(record.copies, next_size, format) is copy
            hand_on_size = next_size if same_source else None
            memory = processing.decode_and_render_bytes(source_size, size, hand_on_size)
            # NOTE: a source not read yet is read once admitted: a job waiting for its turn
            #   holds none (one read with the record is small: a reduced copy, or the JPEG of
            #   an image too small for one).
            async with self._workers.admitted(memory):
                if source is None:
                    jpeg = await self._read_source(record, copy)
                else:
                    jpeg = source.jpeg
                thumbnail, next_level = await self._workers.in_thread(
                    processing.decode_and_render, jpeg, size, hand_on_size, format
                )
            if next_level is not None:
                hand_on(next_level)
            return thumbnail

    def _source_size(self, record: ImageRecord, copy: Copy | None) -> Size:
        return (record.copy_size(copy) if copy else None) or record.size

    async def _read_source(self, record: ImageRecord, copy: Copy | None) -> bytes:
        if copy is not None:
            with contextlib.suppress(ImageNotFound):  # a copy that does not say its record
                return await self._read(self._storage.open_copy(record.id, copy))
        return await self._read(self._storage.open(record.id))

    async def _read(self, opening: Awaitable[StoredImage]) -> bytes:
        """A stored JPEG, whole, to be decoded."""
        stored = await opening
        try:
            return await stored.read_all()
        finally:
            await stored.close()

    def _check_thumbnail_size(self, record: ImageRecord, size: Size) -> None:
        if size not in self.thumbnail_sizes(record):
            raise ImageNotFound(f"{size[0]}x{size[1]} is not a thumbnail size of this image")

    async def delete(
        self, image_id: UUID, authorize: Callable[[ImageRecord], None] = lambda record: None
    ) -> None:
        """Delete an image, if `authorize` (given its record) does not raise."""
        record = (await self._storage.stat(image_id)).record
        authorize(record)
        await self._storage.delete(record)
        self._levels.forget(image_id)
        self._copies_seen.pop(image_id, None)

    async def original(
        self, image_id: UUID, authorize: Callable[[ImageRecord], None]
    ) -> StoredImage:
        """The upload as received, if `authorize` (given the image's record) does not raise."""
        record = (await self._storage.stat(image_id)).record
        authorize(record)
        kept, form = await self._storage.open_original(record)
        if form == originals.WHOLE:
            return kept
        try:
            jpeg = await self._storage.open(image_id)
        except BaseException:
            await kept.close()
            raise
        return await _restored_original(jpeg, kept)

    async def _spool(
        self, body: AsyncIterable[bytes], declared_length: int | None, spool: IO[bytes]
    ) -> int:
        """Receive the whole body, within the byte limit and the upload timeout."""
        received = 0
        try:
            async with asyncio.timeout(self._upload_timeout):
                async for chunk in body:
                    received += len(chunk)
                    if received > self._max_upload_bytes:
                        raise UploadTooLarge(
                            f"uploads are limited to {self._max_upload_bytes} bytes"
                        )
                    # NOTE: a write to the page cache is quicker than a hop to a thread.
                    spool.write(chunk)
                if declared_length is not None and received < declared_length:
                    raise ClientDisconnected("the body ended before its Content-Length")
        except TimeoutError:
            log.info("upload dropped: %d bytes in %s s", received, self._upload_timeout)
            raise UploadTimeout(
                f"the body must arrive within {self._upload_timeout:g} s; {received} bytes did"
            ) from None
        except ClientDisconnected:
            log.info("upload abandoned: the client disconnected after %d bytes", received)
            raise
        return received
