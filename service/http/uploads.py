"""What clients upload: the raw body of the tutorial, or the one file part of a
multipart/form-data form (HTML forms, `curl -F file=@photo.jpg`); and the file name they give,
made safe to show and store."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import AsyncIterator
from email.message import EmailMessage
from urllib.parse import quote

from falcon.asgi import Request
from falcon.media import MultipartFormHandler

from ..errors import InvalidForm, UploadTooLarge

MAX_NAME_BYTES = 255
MAX_FIELDS_BYTES = 64 * 1024


def safe_name(given: str | None) -> str | None:
    """The base name only (no directories), without control characters, at most 255 bytes of
    UTF-8 (cut on a character boundary); None if nothing is left."""
    base = re.split(r"[/\\]", given or "")[-1]
    printable = "".join(c for c in base if unicodedata.category(c)[0] != "C").strip()
    name = printable.encode()[:MAX_NAME_BYTES].decode(errors="ignore")
    return name if name not in ("", ".", "..") else None


class RawBody:
    """The request body is the image; a Content-Disposition header may name it."""

    def __init__(self, req: Request) -> None:
        self._stream = req.stream
        self.declared_length: int | None = req.content_length
        self.name = safe_name(_disposition_filename(req.get_header("Content-Disposition")))

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()


class FormFile:
    """The one file part of a multipart/form-data body, streamed as it arrives (counted against
    the upload limit like a raw body); other fields are read and dropped, up to 64 KiB in all.
    Its name is known once it is read."""

    declared_length: int | None = None  # the form's length is not the file's

    def __init__(self, req: Request) -> None:
        self._req = req
        self.name: str | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        # NOTE: Falcon's handler itself, since media types are case-insensitive and Falcon's
        #   lookup by media type is not.
        form = await MultipartFormHandler().deserialize_async(
            self._req.stream, self._req.content_type or "", self._req.content_length
        )
        found = False
        fields_bytes = 0
        async for part in form:
            if not part.filename:  # a text field, or a file input left empty
                fields_bytes += len(await part.get_data())
                if fields_bytes > MAX_FIELDS_BYTES:
                    raise UploadTooLarge(
                        f"a form's fields besides the file are limited to {MAX_FIELDS_BYTES} bytes"
                    )
                continue
            if found:
                raise InvalidForm("the form has more than one file part; send one")
            found = True
            self.name = safe_name(part.filename)
            async for chunk in part.stream:
                yield chunk
        if not found:
            raise InvalidForm("the form has no file part (a field with a filename)")


def upload_body(req: Request) -> RawBody | FormFile:
    if (req.content_type or "").lower().startswith("multipart/form-data"):
        return FormFile(req)
    return RawBody(req)


def attachment(name: str) -> str:
    """A Content-Disposition that downloads under this name: RFC 6266's filename* for any
    character, and an ASCII filename, without quotes or backslashes, for old clients."""
    fallback = re.sub(r'[^\x20-\x7e]|["\\]', "_", name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _disposition_filename(header: str | None) -> str | None:
    """The file name of a Content-Disposition header (filename, or RFC 5987's filename*); None
    if it has none, or none that decodes."""
    disposition = EmailMessage()
    try:
        disposition["Content-Disposition"] = header or ""
        name = disposition.get_filename()
    except (ValueError, LookupError):  # UnicodeError is a ValueError
        return None
    # NOTE: bytes that are not UTF-8 come back replaced, which no file was named.
    return None if name is None or "\ufffd" in name else name
