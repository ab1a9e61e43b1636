"""The shared event logs: ordered, with ids the same in every worker and replica, and a
bounded history to resume from."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import redis.asyncio as redis

from .. import redis_client


@dataclass(frozen=True)
class Event:
    id: str
    kind: str  # image.created, image.deleted
    data: dict[str, Any]


class EventLog(Protocol):
    async def __aenter__(self) -> EventLog: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def append(self, kind: str, data: dict[str, Any]) -> None:
        """Publish an event to every worker and replica."""

    async def read(self, after: str | None, block_seconds: float, limit: int) -> list[Event]:
        """Up to `limit` events after `after` (None: from the first), waiting up to
        `block_seconds` for one."""

    async def since(self, after: str) -> list[Event] | None:
        """The retained events after `after`; None if it is older than the history kept (or
        not an id of this log)."""

    async def last_id(self) -> str | None:
        """The id of the newest event, if any."""


class RedisEventLog:
    """A Redis Stream: ids are Redis's, global and ordered; the history is capped in length."""

    def __init__(self, url: str, history: int, key: str = "asgilook:events") -> None:
        self._url = url
        self._history = history
        self._key = key
        self._redis: redis.Redis | None = None

    async def __aenter__(self) -> RedisEventLog:
        self._redis = redis_client.connect(
            self._url, socket_connect_timeout=0.5, decode_responses=True
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._redis is not None
        await redis_client.close(self._redis)

    @property
    def _client(self) -> redis.Redis:
        assert self._redis is not None, "the event log is used outside the app's lifespan"
        return self._redis

    async def append(self, kind: str, data: dict[str, Any]) -> None:
        fields = {"kind": kind, "data": json.dumps(data)}
        await self._client.xadd(
            self._key,
            fields,  # type: ignore[arg-type]
            maxlen=self._history,
            approximate=True,
        )

    async def read(self, after: str | None, block_seconds: float, limit: int) -> list[Event]:
        answer: Any = await self._client.xread(
            {self._key: after or "0-0"}, block=int(block_seconds * 1000), count=limit
        )
        return [_event(entry) for _, entries in answer for entry in entries]

    async def since(self, after: str) -> list[Event] | None:
        oldest: Any = await self._client.xrange(self._key, count=1)
        try:
            if oldest and event_order(after) < event_order(oldest[0][0]):
                return None  # trimmed away: the client must reload
        except ValueError:
            return None
        entries: Any = await self._client.xrange(self._key, f"({after}", "+")
        return [_event(entry) for entry in entries]

    async def last_id(self) -> str | None:
        newest: Any = await self._client.xrevrange(self._key, count=1)
        return str(newest[0][0]) if newest else None


def event_order(identifier: str) -> tuple[int, int]:
    """An event id as something to compare: a Redis Stream's `ms-seq`, or the table's number;
    ValueError if it is neither."""
    milliseconds, _, sequence = identifier.partition("-")
    return int(milliseconds), int(sequence or 0)


def _event(entry: tuple[str, dict[str, str]]) -> Event:
    identifier, fields = entry
    return Event(identifier, fields["kind"], json.loads(fields["data"]))


class LocalEventLog:
    """A table in a SQLite file of the embedded store, shared by the workers of one host; they
    poll it (a few milliseconds' work a tenth of a second)."""

    POLL_SECONDS = 0.1

    def __init__(self, path: Path, history: int) -> None:
        self._path = path
        self._history = history
        self._db: sqlite3.Connection | None = None
        # NOTE: one thread owns the connection: statements, and closing it, one after another
        #   (a cancelled read still finishes its statement there before the close).
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="asgilook-events")

    async def __aenter__(self) -> LocalEventLog:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        await self._in_thread(self._open)
        return self

    def _open(self) -> None:
        self._db = sqlite3.connect(
            self._path, timeout=10, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "kind TEXT NOT NULL, data TEXT NOT NULL, at REAL NOT NULL)"
        )

    async def __aexit__(self, *exc_info: object) -> None:
        if self._db is not None:
            await self._in_thread(self._db.close)
        self._thread.shutdown()

    async def _in_thread(self, function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    async def _run(self, sql: str, *parameters: Any) -> list[Any]:
        assert self._db is not None, "the event log is used outside the app's lifespan"
        database = self._db
        return await self._in_thread(lambda: database.execute(sql, parameters).fetchall())  # type: ignore[no-any-return]

    async def append(self, kind: str, data: dict[str, Any]) -> None:
        await self._run(
            "INSERT INTO events (kind, data, at) VALUES (?, ?, ?)",
            kind,
            json.dumps(data),
            time.time(),
        )
        await self._run(
            "DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?", self._history
        )

    async def read(self, after: str | None, block_seconds: float, limit: int) -> list[Event]:
        deadline = time.monotonic() + block_seconds
        while True:
            rows = await self._run(
                "SELECT id, kind, data FROM events WHERE id > ? ORDER BY id LIMIT ?",
                int(after or 0),
                limit,
            )
            if rows or time.monotonic() >= deadline:
                return [Event(str(row[0]), row[1], json.loads(row[2])) for row in rows]
            await asyncio.sleep(self.POLL_SECONDS)

    async def since(self, after: str) -> list[Event] | None:
        if not after.isdigit():
            return None
        oldest = await self._run("SELECT MIN(id) FROM events")
        if oldest[0][0] is not None and int(after) < oldest[0][0] - 1:
            return None
        return await self.read(after, 0, self._history)

    async def last_id(self) -> str | None:
        newest = await self._run("SELECT MAX(id) FROM events")
        return str(newest[0][0]) if newest[0][0] is not None else None
