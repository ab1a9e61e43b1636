"""Logging: JSON lines (python-json-logger), or plain text in a terminal; the request id."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, BinaryIO

import orjson
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

# NOTE: a context variable follows each request's task, so every log line of it carries its id
#   (and the image threads run its work in a copy of its context: theirs too).
request_id: ContextVar[str] = ContextVar("request_id", default="-")
ACCESS_LOGGER = "asgilook.access"

# NOTE: uvicorn passes a copy of some messages with ANSI colours in `extra`, for its own
#   formatter: in JSON it would only be noise.
_NOT_LOGGED = [*RESERVED_ATTRS, "color_message"]


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class AccessLog:
    """The access log: one line per request, with its fields.

    Where configure_logging set up JSON lines, a line goes straight to bytes, into the batch
    that JsonLineBatches writes once per turn of the event loop; elsewhere (text in a terminal,
    tests capturing logs), it goes through the logging module like any other record.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger(ACCESS_LOGGER)
        self._batches = next(
            (handler for handler in self._logger.handlers if isinstance(handler, JsonLineBatches)),
            None,
        )

    def enabled(self) -> bool:
        return self._logger.isEnabledFor(logging.INFO)

    def write(self, message: str, fields: dict[str, Any]) -> None:
        if self._batches is not None:
            self._batches.add("INFO", self._logger.name, message, fields)
        else:
            self._logger.info(message, extra={"fields": fields})


class JsonLineBatches(logging.Handler):
    """JSON lines made with orjson, formatted and written together at the next turn of the loop.

    A request's access line through the logging module (a LogRecord, the handler's lock, a
    formatter, a write and a flush) took 16 % of a cache hit's time, as bytes added to a batch
    8 % (py-spy): hits went from 14,000 to 19,200 req/s on one worker. A request now only
    notes its fields and the time; the batch is formatted in one go, which costs a cache hit
    7 us less again (57 to 50 us of CPU per hit; the datetime alone cost 2.5 us in the
    request's path, 0.5 us in the batch's). Under load, the lines of many requests go out in
    one write; when idle, a line is written at the very next turn, so none waits for a timer.
    (`python bench/run.py` shows the hit rows with logging on and off.)
    """

    def __init__(self, stream: BinaryIO) -> None:
        super().__init__()
        self._stream = stream
        self._pending: list[tuple[float, str, str, str, str, dict[str, Any]]] = []

    def add(self, level: str, logger: str, message: str, fields: dict[str, Any]) -> None:
        self._pending.append((time.time(), level, logger, message, request_id.get(), fields))
        if len(self._pending) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no event loop in this thread: now
                self.flush()

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "fields", {})
        self.add(record.levelname, record.name, record.getMessage(), fields)

    def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        lines = []
        for when, level, logger, message, identifier, fields in pending:
            line = {"time": datetime.fromtimestamp(when, UTC), "level": level, "logger": logger,
                    "message": message, "request_id": identifier, **fields}  # fmt: skip
            lines.append(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))
        self._stream.write(b"".join(lines))
        self._stream.flush()


def configure_logging(level: str = "INFO", log_format: str = "auto") -> None:
    """Send the service's and uvicorn's logs to stderr: JSON lines, or text in a terminal."""
    as_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    if as_json:
        handler.setFormatter(
            JsonFormatter(
                "%(levelname)s %(name)s %(message)s %(request_id)s",
                rename_fields={"levelname": "level", "name": "logger"},
                reserved_attrs=_NOT_LOGGED,
                timestamp="time",
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s [%(request_id)s] %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # NOTE: Python warnings (the image decoders raise some on damaged files) become log records
    #   of the `py.warnings` logger, instead of bare text on stderr.
    logging.captureWarnings(True)
    for name in ("uvicorn", "uvicorn.error"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    # NOTE: the service logs every request itself, with more fields than uvicorn's access log.
    #   Without handlers to reach, uvicorn does not even format its line (~7 % of a cache hit).
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    if as_json:
        ours = logging.getLogger(ACCESS_LOGGER)
        ours.handlers[:] = [JsonLineBatches(sys.stderr.buffer)]
        ours.propagate = False
