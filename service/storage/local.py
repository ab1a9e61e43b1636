"""The embedded store: files on local disk and an SQLite index, shared by workers on one host."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar
from uuid import UUID

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

log = logging.getLogger(__name__)

T = TypeVar("T")
READ_CHUNK_BYTES = 256 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,  -- canonical UUIDv7 text sorts by upload time
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    modified INTEGER NOT NULL,
    owner TEXT,  -- the name of the API key that uploaded it
    name TEXT,  -- the file name it was uploaded under
    original_type TEXT NOT NULL DEFAULT 'application/octet-stream',
    original_form TEXT NOT NULL DEFAULT 'whole',  -- or 'difference' (originals.py)
    reduced_width INTEGER,  -- the size of the copy at 1/4 scale, if the image has one
    reduced_height INTEGER,
    half_width INTEGER,  -- the size of the copy at 1/2 scale, if the image has one
    half_height INTEGER,
    eighth_width INTEGER,  -- the size of the thumbnail at 1/8 scale, if the image has one
    eighth_height INTEGER,
    largest_width INTEGER,  -- the size of the thumbnail at 1/2 scale, if the image has one
    largest_height INTEGER
);
-- Uploads and deletes in progress; one cut off by a crash leaves its row for the janitor.
CREATE TABLE IF NOT EXISTS pending (id TEXT PRIMARY KEY, since INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS janitor_rounds (round INTEGER PRIMARY KEY);
"""
_COPY_COLUMNS = [f"{copy.value}_{side}" for copy in Copy for side in ("width", "height")]
_ADDED_COLUMNS = {
    "owner": "TEXT",
    "name": "TEXT",
    "original_type": "TEXT NOT NULL DEFAULT 'application/octet-stream'",
    "original_form": "TEXT NOT NULL DEFAULT 'whole'",
    **dict.fromkeys(_COPY_COLUMNS, "INTEGER"),
}
_RECORD_COLUMN_NAMES = ["id", "width", "height", "modified", "owner", "name", *_COPY_COLUMNS]
_RECORD_COLUMNS = ", ".join(_RECORD_COLUMN_NAMES)


class LocalStorage:
    """Layout under the root: originals/{id} (whole, or what the JPEG lacks of the upload, as
    its row's original_form says), images/{id}.jpeg, the copies eighth/{id}.jpeg,
    reduced/{id}.jpeg and largest/{id}.jpeg (half/{id}.jpeg for images stored before; large
    images only) and index.sqlite3.

    A save reserves its id (a pending row) before it writes a file, so a failed one removes
    only files of its own; a row left pending by a crash is the janitor's to finish.
    """

    def __init__(self, root: Path) -> None:
        self._root = root
        # NOTE: one thread owns the SQLite connection and runs all blocking file work.
        self._thread: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None

    async def __aenter__(self) -> LocalStorage:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="asgilook-disk")
        await self._run(self._open_database)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._db is not None:
            await self._run(self._db.close)
        assert self._thread is not None
        self._thread.shutdown()

    async def check(self) -> None:
        await self._run(self._check)

    async def save(
        self,
        image_id: UUID,
        original: KeptOriginal,
        original_type: str,
        converted: Awaitable[ConvertedUpload],
    ) -> None:
        await self._run(self._reserve, image_id)
        original_written = asyncio.ensure_future(
            self._run(self._write, self._original_path(image_id), original.file)
        )
        try:
            upload = await converted
            await original_written
            await self._run(self._write, self._jpeg_path(image_id), upload.jpeg)
            await self._run(
                self._finish, upload.record, await upload.copies, original_type, original.form
            )
        except BaseException:
            original_written.cancel()
            # NOTE: the one disk thread runs this after any write still in progress.
            await self._run(self._clean_up_after, image_id)
            raise

    async def stat(self, image_id: UUID) -> ImageStat:
        return await self._run(self._stat, image_id)

    async def open(self, image_id: UUID, byte_range: ByteRange | None = None) -> StoredImage:
        record, file = await self._run(self._open, image_id)
        return self._stream(record, file, byte_range)

    async def open_original(self, record: ImageRecord) -> tuple[StoredImage, str]:
        content_type, form, file = await self._run(self._open_original, record.id)
        return self._stream(record, file, None, content_type), form

    async def open_copy(self, image_id: UUID, copy: Copy) -> StoredImage:
        record, file = await self._run(self._open_copy, image_id, copy)
        return self._stream(record, file, None)

    def _stream(
        self,
        record: ImageRecord,
        file: IO[bytes],
        byte_range: ByteRange | None,
        content_type: str = "image/jpeg",
    ) -> StoredImage:
        length = os.fstat(file.fileno()).st_size
        start, end = byte_range or (0, length - 1)

        async def chunks() -> AsyncIterator[bytes]:
            await self._run(file.seek, start)
            remaining = end - start + 1
            while remaining > 0 and (
                chunk := await self._run(file.read, min(READ_CHUNK_BYTES, remaining))
            ):
                remaining -= len(chunk)
                yield chunk

        async def close() -> None:
            file.close()

        return StoredImage(record, length, chunks(), close, byte_range, content_type)

    async def delete(self, record: ImageRecord) -> None:
        await self._run(self._delete, record.id)

    async def page(self, after: UUID | None, limit: int) -> list[ImageRecord]:
        return await self._run(self._list, after, limit)

    async def claim_round(self, round_number: int) -> bool:
        return await self._run(self._claim_round, round_number)

    async def clean_up(self, older_than: datetime) -> list[UUID]:
        return await self._run(self._clean_up, int(older_than.timestamp()))

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)
        except (sqlite3.Error, OSError) as error:  # a locked index, a full or failing disk
            raise StorageUnavailable(f"the image store failed: {error}") from error

    def _open_database(self) -> None:
        for folder in ("originals", "images", *(copy.value for copy in Copy)):
            (self._root / folder).mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            self._root / "index.sqlite3", timeout=10, isolation_level=None, check_same_thread=False
        )
        # NOTE: WAL lets several uvicorn workers read while one writes.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        # NOTE: an index made before images had owners and names gains their columns.
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(images)")}
        for column, declaration in _ADDED_COLUMNS.items():
            if column not in columns:
                self._db.execute(f"ALTER TABLE images ADD COLUMN {column} {declaration}")

    def _check(self) -> None:
        self._database.execute("SELECT 1 FROM images LIMIT 1").fetchall()
        if not os.access(self._root / "images", os.W_OK):
            raise StorageUnavailable(f"{self._root / 'images'} is not writable")

    def _reserve(self, image_id: UUID) -> None:
        reserved = self._database.execute(
            "INSERT OR IGNORE INTO pending SELECT ?, ? "
            "WHERE NOT EXISTS (SELECT 1 FROM images WHERE id = ?)",
            (str(image_id), int(time.time()), str(image_id)),
        ).rowcount
        if not reserved:
            raise ImageExists("an image with this id is stored already")

    def _finish(
        self,
        record: ImageRecord,
        copies: dict[Copy, IO[bytes]],
        original_type: str,
        original_form: str,
    ) -> None:
        """Write the copies, then list the image."""
        for copy, file in copies.items():
            self._write(self._copy_path(record.id, copy), file)
        with self._transaction():
            self._database.execute(
                f"INSERT INTO images ({_RECORD_COLUMNS}, original_type, original_form) "
                f"VALUES ({', '.join('?' * (len(_RECORD_COLUMN_NAMES) + 2))})",
                (
                    str(record.id),
                    *record.size,
                    int(record.modified.timestamp()),
                    record.owner,
                    record.name,
                    *(side for copy in Copy for side in record.copy_size(copy) or (None, None)),
                    original_type,
                    original_form,
                ),
            )
            self._database.execute("DELETE FROM pending WHERE id = ?", (str(record.id),))

    def _clean_up_after(self, image_id: UUID) -> None:
        try:
            self._remove(image_id)
        except (OSError, sqlite3.Error) as error:
            log.error("could not clean up after a failed upload; the janitor will: %s", error)

    def _stat(self, image_id: UUID) -> ImageStat:
        record = self._record(image_id)
        try:
            return ImageStat(record, self._jpeg_path(image_id).stat().st_size)
        except FileNotFoundError:
            raise ImageNotFound("no image with this id") from None

    def _open(self, image_id: UUID) -> tuple[ImageRecord, IO[bytes]]:
        return self._record(image_id), _open_file(self._jpeg_path(image_id))

    def _open_copy(self, image_id: UUID, copy: Copy) -> tuple[ImageRecord, IO[bytes]]:
        record = self._record(image_id)
        if record.copy_size(copy) is None:
            raise ImageNotFound(f"this image has no {copy.value} copy")
        return record, _open_file(self._copy_path(image_id, copy))

    def _open_original(self, image_id: UUID) -> tuple[str, str, IO[bytes]]:
        row = self._database.execute(
            "SELECT original_type, original_form FROM images WHERE id = ?", (str(image_id),)
        ).fetchone()
        if row is None:
            raise ImageNotFound("no image with this id")
        return row[0], row[1], _open_file(self._original_path(image_id))

    def _delete(self, image_id: UUID) -> None:
        self._record(image_id)
        with self._transaction():
            self._database.execute("DELETE FROM images WHERE id = ?", (str(image_id),))
            self._database.execute(
                "INSERT OR REPLACE INTO pending VALUES (?, ?)", (str(image_id), int(time.time()))
            )
        self._remove(image_id)

    def _remove(self, image_id: UUID) -> None:
        """The files of an image pending removal, written or half-written, then its row."""
        for path in (
            self._jpeg_path(image_id),
            *(self._copy_path(image_id, copy) for copy in Copy),
            self._original_path(image_id),
        ):
            path.unlink(missing_ok=True)
            _partial(path).unlink(missing_ok=True)
        self._database.execute("DELETE FROM pending WHERE id = ?", (str(image_id),))

    def _claim_round(self, round_number: int) -> bool:
        with self._transaction():
            self._database.execute("DELETE FROM janitor_rounds WHERE round < ?", (round_number,))
            return bool(
                self._database.execute(
                    "INSERT OR IGNORE INTO janitor_rounds VALUES (?)", (round_number,)
                ).rowcount
            )

    def _clean_up(self, older_than: int) -> list[UUID]:
        rows = self._database.execute("SELECT id FROM pending WHERE since < ?", (older_than,))
        removed = [UUID(image_id) for (image_id,) in rows.fetchall()]
        for image_id in removed:
            self._database.execute("DELETE FROM images WHERE id = ?", (str(image_id),))
            self._remove(image_id)
        return removed

    def _list(self, after: UUID | None, limit: int) -> list[ImageRecord]:
        rows = self._database.execute(
            f"SELECT {_RECORD_COLUMNS} FROM images WHERE id > ? ORDER BY id LIMIT ?",
            (str(after) if after else "", limit),
        )
        return [_record(*row) for row in rows]

    def _record(self, image_id: UUID) -> ImageRecord:
        row = self._database.execute(
            f"SELECT {_RECORD_COLUMNS} FROM images WHERE id = ?", (str(image_id),)
        ).fetchone()
        if row is None:
            raise ImageNotFound("no image with this id")
        return _record(*row)

    @property
    def _database(self) -> sqlite3.Connection:
        assert self._db is not None, "LocalStorage used outside the app's lifespan"
        return self._db

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._database.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._database.execute("ROLLBACK")
            raise
        self._database.execute("COMMIT")

    def _write(self, path: Path, source: IO[bytes]) -> None:
        """Write a file whole or not at all: under a name of its own, then renamed."""
        partial = _partial(path)
        with partial.open("wb") as file:
            shutil.copyfileobj(source, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)

    def _jpeg_path(self, image_id: UUID) -> Path:
        return self._root / "images" / f"{image_id}.jpeg"

    def _original_path(self, image_id: UUID) -> Path:
        return self._root / "originals" / str(image_id)

    def _copy_path(self, image_id: UUID, copy: Copy) -> Path:
        return self._root / copy.value / f"{image_id}.jpeg"


def _partial(path: Path) -> Path:
    return path.with_name(f"{path.name}.partial")


def _open_file(path: Path) -> IO[bytes]:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise ImageNotFound("no image with this id") from None


def _record(
    image_id: str,
    width: int,
    height: int,
    modified: int,
    owner: str | None,
    name: str | None,
    *copy_sides: int | None,
) -> ImageRecord:
    """An image's record from its row: the columns of _RECORD_COLUMNS, in order."""
    sizes = zip(copy_sides[::2], copy_sides[1::2], strict=True)
    return ImageRecord(
        UUID(image_id),
        (width, height),
        datetime.fromtimestamp(modified, UTC),
        owner,
        name,
        copy_sizes(
            {copy: (w, h) if w and h else None for copy, (w, h) in zip(Copy, sizes, strict=True)}
        ),
    )
