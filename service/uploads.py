"""What clients upload: the raw body of the tutorial, or the one file part of a
multipart/form-data form (HTML forms, `curl -F file=@photo.jpg`); and the file name they give,
made safe to show and store."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import AsyncIterator
from email.message import EmailMessage

from falcon.asgi import Request

from .errors import InvalidForm

MAX_NAME_BYTES = 255


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
        disposition = EmailMessage()
        disposition["Content-Disposition"] = req.get_header("Content-Disposition") or ""
        self.name = safe_name(disposition.get_filename())

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()


class FormFile:
    """The one file part of a multipart/form-data body, streamed as it arrives; other fields
    are read (up to Falcon's part size limit) and dropped. Its name is known once it is read."""

    declared_length: int | None = None  # the form's length is not the file's

    def __init__(self, req: Request) -> None:
        self._req = req
        self.name: str | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        form = await self._req.get_media()
        found = False
        async for part in form:
            if part.filename is None:
                await part.get_data()
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
    if req.content_type is not None and req.content_type.startswith("multipart/form-data"):
        return FormFile(req)
    return RawBody(req)
