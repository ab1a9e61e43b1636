"""Storage in an S3-compatible bucket (AWS S3, MinIO, SeaweedFS) through aioboto3.

Keys, under the configured prefix:
  originals/{id}               the upload exactly as received, or (user metadata form:
                               difference) what the served JPEG lacks of it (originals.py)
  images/{id}.jpeg             the JPEG served, with width, height and modified as user metadata
  eighth/{id}.jpeg             the thumbnail at 1/8 scale, made at upload (large images), with
                               the JPEG's metadata: a thumbnail miss reads it alone
  reduced/{id}.jpeg            a copy at 1/4 scale, for the thumbnails it makes, likewise
  largest/{id}.jpeg            the thumbnail at 1/2 scale, made at upload (images of 8 to 20 MP),
                               likewise
  half/{id}.jpeg               a copy at 1/2 scale, likewise, which images stored before there
                               were largest thumbnails have instead
  index/{id}/{w}x{h}/{epoch}[/@{owner}][/{name}]
                               an empty object per image: listing the index is the image listing,
                               one LIST call per page, because UUIDv7 ids sort by upload time
  pending/{id}                 an upload or delete in progress: written first, removed last, so
                               that one cut off by an outage or a crash is finished by the janitor
                               (an image still listed is whole: only its marker goes)
  janitor/{round}              claims a janitor round for one worker of all replicas

No write overwrites an object (conditional writes, If-None-Match), so a failed save removes only
what it wrote itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import quote, unquote
from uuid import UUID

import aioboto3
import aiohttp
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .. import originals
from ..errors import ImageExists, ImageNotFound, StorageUnavailable
from ..images import (
    ByteRange,
    ConvertedUpload,
    Copy,
    ImageRecord,
    ImageStat,
    KeptOriginal,
    StoredImage,
    copy_sizes,
)
from ..metrics import Metrics

log = logging.getLogger(__name__)

READ_CHUNK_BYTES = 256 * 1024
IN_MEMORY_BODY_BYTES = 8 * 1024 * 1024
ORIGINAL_FORM = "form"  # user metadata of an original: originals.WHOLE or originals.DIFFERENCE
NAME_SEGMENT = 240  # characters of a percent-encoded file name per segment of a key
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_ALREADY_EXISTS = "PreconditionFailed"  # a conditional write found the key taken


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class S3Storage:
    """Images, originals and the index as objects in one bucket."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        region: str = "us-east-1",
        endpoint_url: str | None = None,
        create_bucket: bool = False,
        max_attempts: int = 3,
        metrics: Metrics,
    ) -> None:
        self._bucket = bucket
        self._prefix = prefix
        self._region = region
        self._endpoint_url = endpoint_url
        self._create_bucket = create_bucket
        self._max_attempts = max_attempts
        self._metrics = metrics
        self._stack = AsyncExitStack()
        self._client: Any = None
        # NOTE: the removals of pending markers still under way, by image.
        self._unmarking: dict[UUID, asyncio.Task[None]] = {}

    async def __aenter__(self) -> S3Storage:
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "total_max_attempts": self._max_attempts},
            connect_timeout=3,
            read_timeout=30,
            max_pool_connections=64,
        )
        session = aioboto3.Session()
        self._client = await self._stack.enter_async_context(
            session.client(
                "s3",
                region_name=self._region,
                endpoint_url=self._endpoint_url,
                config=config,
            )
        )
        if self._create_bucket:
            try:
                await self._ensure_bucket()
            except BaseException:
                await self._stack.aclose()
                raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.gather(*self._unmarking.values(), return_exceptions=True)
        await self._stack.aclose()

    @contextlib.contextmanager
    def _call(self, operation: str) -> Iterator[None]:
        """Time an S3 call, and turn what S3 and the network raise into domain errors."""
        try:
            with self._metrics.timed(self._metrics.s3_seconds, operation):
                yield
        except ClientError as error:
            code = _code(error)
            if code in _NOT_FOUND_CODES:
                raise ImageNotFound("no image with this id") from None
            if code == _ALREADY_EXISTS:
                raise ImageExists("an image with this id is stored already") from None
            self._failed(operation, error)
            raise StorageUnavailable(f"the image store failed ({code})") from error
        except (TimeoutError, BotoCoreError, aiohttp.ClientError, OSError) as error:
            self._failed(operation, error)
            raise StorageUnavailable("the image store cannot be reached") from error

    def _failed(self, operation: str, error: Exception) -> None:
        self._metrics.s3_errors.labels(operation).inc()
        log.warning("S3 %s failed: %s", operation, error)

    async def check(self) -> None:
        with self._call("head_bucket"):
            await self._client.head_bucket(Bucket=self._bucket)

    async def save(
        self,
        image_id: UUID,
        original: KeptOriginal,
        original_type: str,
        converted: Awaitable[ConvertedUpload],
    ) -> None:
        writes = _Writes()
        puts: list[asyncio.Task[None]] = []

        def put(key: str, body: IO[bytes], **options: Any) -> None:
            puts.append(asyncio.create_task(self._create(key, _body(body), writes, **options)))

        try:
            # NOTE: timed as one "upload", the wait for the conversion it overlaps included.
            with self._call("upload"):
                await self._create(self._pending_key(image_id), b"", writes)
                put(
                    self._original_key(image_id),
                    original.file,
                    ContentType=original_type,
                    Metadata={ORIGINAL_FORM: original.form},
                )
                upload = await converted
                record = upload.record
                metadata = _metadata(record)
                put(
                    self._jpeg_key(image_id),
                    upload.jpeg,
                    ContentType="image/jpeg",
                    Metadata=metadata,
                )
                for copy, file in (await upload.copies).items():
                    put(
                        self._copy_key(image_id, copy),
                        file,
                        ContentType="image/jpeg",
                        Metadata=metadata,
                    )
                await asyncio.gather(*puts)
                # NOTE: the index entry goes last: an image is listed only once it is whole.
                await self._create(self._index_key(record), b"", writes)
        except BaseException:
            # NOTE: writes under way end first, landed or failed, not cancelled: one cut off
            #   from us that the store still finished after the removal would stay for ever.
            if puts:
                await asyncio.wait(puts)
            for task in puts:
                if not task.cancelled():
                    task.exception()  # the error to report is the first, raised here
            await self._remove(writes)
            raise
        # NOTE: whole now; the marker goes after the answer (one round trip less to wait for).
        unmarking = self._unmarking[image_id] = asyncio.create_task(self._unmark(image_id))
        unmarking.add_done_callback(lambda _: self._unmarking.pop(image_id, None))

    async def _unmark(self, image_id: UUID) -> None:
        """Remove the pending marker of an image stored whole; if that fails, the janitor
        will, and leave the image alone, as it is listed."""
        try:
            with self._call("unmark"):
                await self._client.delete_object(
                    Bucket=self._bucket, Key=self._pending_key(image_id)
                )
        except StorageUnavailable:
            pass  # logged by _call

    async def stat(self, image_id: UUID) -> ImageStat:
        with self._call("head_object"):
            response = await self._client.head_object(
                Bucket=self._bucket, Key=self._jpeg_key(image_id)
            )
        record = _record_from_metadata(image_id, response["Metadata"])
        return ImageStat(record, response["ContentLength"])

    async def open(self, image_id: UUID, byte_range: ByteRange | None = None) -> StoredImage:
        request = {"Bucket": self._bucket, "Key": self._jpeg_key(image_id)}
        if byte_range is not None:
            request["Range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
        with self._call("get_object"):
            response = await self._client.get_object(**request)
        record = _record_from_metadata(image_id, response["Metadata"])
        return self._stream(record, response, byte_range)

    def _stream(
        self,
        record: ImageRecord,
        response: dict[str, Any],
        byte_range: ByteRange | None,
        content_type: str = "image/jpeg",
    ) -> StoredImage:
        """A GetObject response's body, to be read in chunks."""
        body = response["Body"]
        length = response["ContentLength"]
        if byte_range is not None:  # "bytes 0-99/12345": the whole length is after the slash
            length = int(response["ContentRange"].rsplit("/", 1)[1])

        async def chunks() -> AsyncIterator[bytes]:
            with self._call("read_body"):
                async for chunk in body.iter_chunks(READ_CHUNK_BYTES):
                    yield chunk

        async def close() -> None:
            body.close()

        return StoredImage(record, length, chunks(), close, byte_range, content_type)

    async def open_original(self, record: ImageRecord) -> tuple[StoredImage, str]:
        with self._call("get_object"):
            response = await self._client.get_object(
                Bucket=self._bucket, Key=self._original_key(record.id)
            )
        # NOTE: stored before originals said their form: whole.
        form = response["Metadata"].get(ORIGINAL_FORM, originals.WHOLE)
        return self._stream(record, response, None, response["ContentType"]), form

    async def open_copy(self, image_id: UUID, copy: Copy) -> StoredImage:
        with self._call("get_object"):
            response = await self._client.get_object(
                Bucket=self._bucket, Key=self._copy_key(image_id, copy)
            )
        if "width" not in response["Metadata"]:  # a copy stored before copies said the record
            response["Body"].close()
            raise ImageNotFound("this copy does not say its image's record")
        return self._stream(_record_from_metadata(image_id, response["Metadata"]), response, None)

    async def delete(self, record: ImageRecord) -> None:
        with self._call("delete"):
            # NOTE: marked first, so the janitor finishes a delete cut off halfway; unlisted
            #   next, so a half-finished delete never shows a broken image.
            pending = self._pending_key(record.id)
            # NOTE: after its upload's marker is gone, or that removal would take this one.
            unmarking = self._unmarking.get(record.id)
            if unmarking is not None:
                await asyncio.wait([unmarking])
            await self._client.put_object(Bucket=self._bucket, Key=pending, Body=b"")
            await self._client.delete_object(Bucket=self._bucket, Key=self._index_key(record))
            await self._delete_objects(self._files_keys(record.id))
            await self._client.delete_object(Bucket=self._bucket, Key=pending)

    async def page(self, after: UUID | None, limit: int) -> list[ImageRecord]:
        index_prefix = f"{self._prefix}index/"
        request = {"Bucket": self._bucket, "Prefix": index_prefix, "MaxKeys": limit}
        if after is not None:
            # NOTE: "~" sorts after every character of "{w}x{h}/{epoch}", so the page starts
            #   at the next id.
            request["StartAfter"] = f"{index_prefix}{after}/~"
        with self._call("list_objects"):
            response = await self._client.list_objects_v2(**request)
        records = []
        for entry in response.get("Contents", []):
            try:
                records.append(_record_from_index_key(entry["Key"][len(index_prefix) :]))
            except ValueError:
                log.warning("ignoring a malformed index key %r", entry["Key"])
        return records

    async def _ensure_bucket(self) -> None:
        with self._call("create_bucket"):
            try:
                await self._client.head_bucket(Bucket=self._bucket)
                return
            except ClientError as error:
                if _code(error) not in ("404", "NoSuchBucket"):
                    raise
            request: dict[str, Any] = {"Bucket": self._bucket}
            if self._region != "us-east-1":
                request["CreateBucketConfiguration"] = {"LocationConstraint": self._region}
            # NOTE: another replica may have created it a moment ago.
            with contextlib.suppress(self._client.exceptions.BucketAlreadyOwnedByYou):
                await self._client.create_bucket(**request)
            log.info("created bucket %s", self._bucket)

    async def claim_round(self, round_number: int) -> bool:
        claims = f"{self._prefix}janitor/"
        with self._call("janitor_claim"):
            try:
                await self._create(f"{claims}{round_number}", b"", _Writes())
            except ClientError as error:
                if _code(error) == _ALREADY_EXISTS:
                    return False  # another worker has this round
                raise
            # NOTE: the claims of earlier rounds are spent.
            listed = await self._client.list_objects_v2(Bucket=self._bucket, Prefix=claims)
            spent = [
                entry["Key"]
                for entry in listed.get("Contents", [])
                if not entry["Key"].removeprefix(claims).isdigit()
                or int(entry["Key"].removeprefix(claims)) < round_number
            ]
            if spent:
                await self._delete_objects(spent)
        return True

    async def clean_up(self, older_than: datetime) -> list[UUID]:
        with self._call("janitor"):
            pending = await self._client.list_objects_v2(
                Bucket=self._bucket, Prefix=f"{self._prefix}pending/"
            )
            removed = []
            for entry in pending.get("Contents", []):
                try:
                    image_id = UUID(entry["Key"].rsplit("/", 1)[1])
                except ValueError:
                    log.warning("ignoring a malformed pending key %r", entry["Key"])
                    continue
                if entry["LastModified"] < older_than and await self._finish(image_id):
                    removed.append(image_id)
        return removed

    async def _finish(self, image_id: UUID) -> bool:
        """Finish an upload or delete cut off midway, and remove its pending marker. An image
        still listed is whole (the marker's removal was cut off, or a delete before it
        unlisted anything): it stays. Otherwise all that is stored for it goes; True then."""
        index = await self._client.list_objects_v2(
            Bucket=self._bucket, Prefix=f"{self._prefix}index/{image_id}/"
        )
        listed = bool(index.get("Contents"))
        if not listed:
            await self._delete_objects(self._files_keys(image_id))
        await self._client.delete_object(Bucket=self._bucket, Key=self._pending_key(image_id))
        return not listed

    async def _create(self, key: str, body: Any, writes: _Writes, **options: Any) -> None:
        """Put an object that must not exist yet."""
        writes.attempted.append(key)
        try:
            await self._client.put_object(
                Bucket=self._bucket, Key=key, Body=body, IfNoneMatch="*", **options
            )
        except ClientError as error:
            writes.refused |= _code(error) == _ALREADY_EXISTS
            raise
        writes.written.append(key)

    async def _remove(self, writes: _Writes) -> None:
        """Best-effort removal of what a failed save wrote, its pending marker last: if this
        fails too, the marker stays, and the janitor removes the rest later."""
        keys = writes.ours()
        if not keys:
            return
        marker, *objects = keys  # the marker was written first
        objects.sort(key=lambda key: not key.startswith(f"{self._prefix}index/"))
        try:
            with self._call("clean_up"):
                if objects:
                    await self._delete_objects(objects)
                await self._client.delete_object(Bucket=self._bucket, Key=marker)
        except StorageUnavailable:
            log.error("could not clean up after a failed upload; the janitor will: %s", keys)

    async def _delete_objects(self, keys: list[str]) -> None:
        response = await self._client.delete_objects(
            Bucket=self._bucket,
            Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True},
        )
        if response.get("Errors"):
            raise StorageUnavailable(f"the image store refused to delete: {response['Errors']}")

    def _jpeg_key(self, image_id: UUID) -> str:
        return f"{self._prefix}images/{image_id}.jpeg"

    def _original_key(self, image_id: UUID) -> str:
        return f"{self._prefix}originals/{image_id}"

    def _copy_key(self, image_id: UUID, copy: Copy) -> str:
        return f"{self._prefix}{copy.value}/{image_id}.jpeg"

    def _files_keys(self, image_id: UUID) -> list[str]:
        copies = [self._copy_key(image_id, copy) for copy in Copy]
        return [self._jpeg_key(image_id), *copies, self._original_key(image_id)]

    def _pending_key(self, image_id: UUID) -> str:
        return f"{self._prefix}pending/{image_id}"

    def _index_key(self, record: ImageRecord) -> str:
        width, height = record.size
        key = f"{self._prefix}index/{record.id}/{width}x{height}/{int(record.modified.timestamp())}"
        # NOTE: the listing is read from these keys alone, so the owner and the file name are
        #   part of them. A key name is key-safe; a percent-encoded file name never holds "@".
        #   The name goes in segments short enough for every store (MinIO's limit: 255).
        if record.owner is not None:
            key += f"/@{record.owner}"
        if record.name is None:
            return key
        encoded = quote(record.name, safe="")
        segments = [encoded[at : at + NAME_SEGMENT] for at in range(0, len(encoded), NAME_SEGMENT)]
        return "/".join([key, *segments])


@dataclass
class _Writes:
    """The keys a save tried to create, those known to have landed, and whether one was
    refused as existing."""

    attempted: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    refused: bool = False

    def ours(self) -> list[str]:
        """What a failed save may remove. A write cut off midway may or may not have landed,
        but a conditional write lands only on a free key, so it is ours either way; once one
        was refused, the id was taken before this save, and only what landed is ours."""
        return self.written if self.refused else self.attempted


def _body(file: IO[bytes]) -> IO[bytes]:
    """What put_object sends: a small file from memory (one write, no thread hop per chunk); a
    large one straight from its file, in small chunks, so that it is never whole in memory
    (aioboto3's upload_fileobj would hold several copies of each 8 MiB part)."""
    start = file.tell()
    size = file.seek(0, io.SEEK_END) - start
    file.seek(start)
    return io.BytesIO(file.read()) if size <= IN_MEMORY_BODY_BYTES else file


def _metadata(record: ImageRecord) -> dict[str, str]:
    """The JPEG's user metadata: its record, less the id (its key), in ASCII."""
    metadata = {
        "width": str(record.size[0]),
        "height": str(record.size[1]),
        "modified": str(int(record.modified.timestamp())),
    }
    # NOTE: the name goes percent-encoded (the owner's, a key's name, is ASCII already).
    if record.owner is not None:
        metadata["owner"] = record.owner
    if record.name is not None:
        metadata["name"] = quote(record.name, safe="")
    for copy in Copy:
        copy_size = record.copy_size(copy)
        if copy_size is not None:
            metadata[copy.value] = f"{copy_size[0]}x{copy_size[1]}"
    return metadata


def _record_from_metadata(image_id: UUID, metadata: dict[str, str]) -> ImageRecord:
    name = metadata.get("name")
    return ImageRecord(
        image_id,
        (int(metadata["width"]), int(metadata["height"])),
        datetime.fromtimestamp(int(metadata["modified"]), UTC),
        metadata.get("owner"),
        unquote(name) if name is not None else None,
        copy_sizes({copy: _size(metadata[copy.value]) for copy in Copy if copy.value in metadata}),
    )


def _size(text: str) -> tuple[int, int]:
    width, height = text.split("x")
    return int(width), int(height)


def _record_from_index_key(key: str) -> ImageRecord:
    image_id, size, epoch, *rest = key.split("/")
    owner = rest.pop(0)[1:] if rest and rest[0].startswith("@") else None
    return ImageRecord(
        UUID(image_id),
        _size(size),
        datetime.fromtimestamp(int(epoch), UTC),
        owner,
        unquote("".join(rest)) if rest else None,
    )
