"""Redis clients from ASGILOOK_REDIS_URL: a plain Redis URL, or a primary found through Sentinel.

`redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]` names the sentinels
and the service they watch (the `limits` library's form). Each new connection asks the sentinels
for the current primary, and a connection to a primary that was demoted is dropped, so the
service follows a failover without a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as redis
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelURL:
    """The parts of a `redis+sentinel://` URL."""

    sentinels: list[tuple[str, int]]
    service: str
    db: int
    username: str | None
    password: str | None


def is_sentinel(url: str) -> bool:
    return url.startswith(f"{SENTINEL_SCHEME}://")


def parse_sentinel_url(url: str) -> SentinelURL:
    """The sentinels, service, db and credentials of a URL; ValueError naming what is wrong."""
    parts = urlsplit(url)
    credentials, _, hosts = parts.netloc.rpartition("@")
    sentinels = []
    for location in filter(None, hosts.split(",")):
        host, _, port = location.rpartition(":") if ":" in location else (location, "", "")
        if not host or (port and not port.isdigit()):
            raise ValueError(f"{location!r} is not a sentinel's host:port")
        sentinels.append((host.strip("[]"), int(port or DEFAULT_SENTINEL_PORT)))
    service, _, db = parts.path.strip("/").partition("/")
    if not sentinels or not service or (db and not db.isdigit()):
        raise ValueError("a Sentinel URL is redis+sentinel://host:port[,host:port...]/service[/db]")
    username, _, password = credentials.partition(":")
    return SentinelURL(
        sentinels,
        service,
        int(db or 0),
        unquote(username) or None,
        unquote(password) or None,
    )


def connect(url: str, **options: Any) -> redis.Redis:
    """A client of the Redis primary at `url` (not connected yet); close it with `close`.

    `options` are redis-py's connection options (timeouts, retry, decoding); through Sentinel
    they apply to the sentinels' connections too.
    """
    if not is_sentinel(url):
        return redis.Redis.from_url(url, **options)
    where = parse_sentinel_url(url)
    auth = {"username": where.username, "password": where.password}
    # NOTE: a sentinel answers at once or not at all: never wait long for one (the event
    #   log's own connections have no read timeout, for their blocking reads).
    sentinel_options = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}
    sentinel_options.update(
        (name, value) for name, value in options.items() if name.startswith("socket_")
    )
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        where.sentinels, sentinel_kwargs={**auth, **sentinel_options}
    )
    # NOTE: the client owns its pool (closed with it); the pool knows its Sentinel.
    client: redis.Redis = sentinel.master_for(
        where.service,
        db=where.db,
        username=where.username,
        password=where.password,
        **options,
    )
    return client


def connection_pool(url: str, **options: Any) -> redis.ConnectionPool:
    """A connection pool of the Redis primary at `url`, for libraries that take one."""
    return connect(url, **options).connection_pool


async def close(client: redis.Redis) -> None:
    """Close a client made by `connect`, and its sentinels' connections."""
    await client.aclose()  # and its pool, which it owns
    await _close_sentinels(client.connection_pool)


async def close_pool(pool: redis.ConnectionPool) -> None:
    """Close a pool made by `connection_pool`, and its sentinels' connections."""
    await pool.aclose()
    await _close_sentinels(pool)


async def _close_sentinels(pool: redis.ConnectionPool) -> None:
    if isinstance(pool, SentinelConnectionPool):
        manager: Sentinel = pool.sentinel_manager
        await manager.aclose()
