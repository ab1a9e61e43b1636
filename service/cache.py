"""Response cache stores: Redis (shared by every worker) or in-process with a byte budget.

Entries live in namespaces (the listing, or one image and its thumbnails). Invalidating a
namespace gives it a new random generation; an entry counts only if it was stored under the
current generation, so a response rendered before a write can never be served after it, even if
a slow request stores it late.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

import msgpack
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .metrics import Metrics

log = logging.getLogger(__name__)

# NOTE: while Redis is down, each worker asks again at most this often.
REDIS_RETRY_SECONDS = 1.0


class Cache(Protocol):
    async def check(self) -> None:
        """Raise unless the cache answers."""

    async def get(self, namespace: str, key: str) -> tuple[Any | None, str]:
        """The cached value (or None) and the generation to store a fresh value under."""

    async def set(self, namespace: str, key: str, generation: str, value: Any) -> None:
        """Store a value, unless the namespace was invalidated since `generation` was read."""

    async def invalidate(self, *namespaces: str) -> None:
        """Make every entry of these namespaces unreachable, in every worker."""


def _new_generation() -> str:
    return secrets.token_hex(8)


def _unpack(packed: bytes | None, generation: str) -> Any | None:
    if packed is None:
        return None
    stored_generation, value = msgpack.unpackb(packed, raw=False)
    return value if stored_generation == generation else None


class RedisCache:
    """Entries and generations in Redis, one round trip per lookup. Never raises."""

    def __init__(self, url: str, ttl: int, metrics: Metrics, prefix: str = "asgilook:") -> None:
        self._url = url
        self._metrics = metrics
        self._ttl = ttl
        self._prefix = prefix
        self._redis: redis.Redis | None = None
        self._retry_at = 0.0
        # NOTE: invalidations that could not reach Redis; sent before it is trusted again.
        self._unsent_invalidations: set[str] = set()

    async def __aenter__(self) -> RedisCache:
        # NOTE: no retries and short timeouts: a cache that is down must cost nearly nothing.
        self._redis = redis.Redis.from_url(
            self._url,
            socket_connect_timeout=0.5,
            socket_timeout=0.5,
            retry=Retry(NoBackoff(), 0),
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._redis is not None
        await self._redis.aclose()

    async def check(self) -> None:
        await self._client.ping()

    async def get(self, namespace: str, key: str) -> tuple[Any | None, str]:
        if self._unsent_invalidations and not await self._send_invalidations():
            return None, ""
        generation_key = self._generation_key(namespace)
        found = await self._call(self._client.mget, generation_key, self._entry_key(namespace, key))
        if found is None:
            return None, ""
        generation, packed = found
        if generation is None:
            # NOTE: NX keeps the generation another worker may have just created.
            generation = _new_generation()
            created = await self._call(
                self._client.set, generation_key, generation, nx=True, ex=self._ttl, get=True
            )
            return None, (created or generation.encode()).decode()
        return _unpack(packed, generation.decode()), generation.decode()

    async def set(self, namespace: str, key: str, generation: str, value: Any) -> None:
        if generation:
            packed = msgpack.packb([generation, value], use_bin_type=True)
            await self._call(
                self._client.set, self._entry_key(namespace, key), packed, ex=self._ttl
            )

    async def invalidate(self, *namespaces: str) -> None:
        self._unsent_invalidations.update(namespaces)
        await self._send_invalidations()

    async def _send_invalidations(self) -> bool:
        namespaces = list(self._unsent_invalidations)
        async with self._client.pipeline(transaction=False) as pipe:
            for namespace in namespaces:
                pipe.set(self._generation_key(namespace), _new_generation(), ex=self._ttl)
            if await self._call(pipe.execute) is None:
                return False
        self._unsent_invalidations.difference_update(namespaces)
        return True

    @property
    def _client(self) -> redis.Redis:
        assert self._redis is not None, "RedisCache used outside the app's lifespan"
        return self._redis

    async def _call(self, command: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a command, or skip it while Redis is known to be down."""
        if time.monotonic() < self._retry_at:
            return None
        try:
            result = await command(*args, **kwargs)
        except (redis.RedisError, OSError) as error:
            self._metrics.cache_errors.inc()
            if not self._retry_at:
                log.warning("Redis cache unavailable, serving without it: %s", error)
            self._retry_at = time.monotonic() + REDIS_RETRY_SECONDS
            return None
        if self._retry_at:
            log.warning("Redis cache is back")
            self._retry_at = 0.0
        return result

    def _generation_key(self, namespace: str) -> str:
        return f"{self._prefix}generation:{namespace}"

    def _entry_key(self, namespace: str, key: str) -> str:
        return f"{self._prefix}entry:{namespace}:{key}"


class MemoryCache:
    """Entries in this process, least recently used evicted past a byte budget.

    Generations are small files in a directory, so that uvicorn workers on one host see each
    other's invalidations.
    """

    def __init__(self, max_bytes: int, ttl: int, generations: Path) -> None:
        self._max_bytes = max_bytes
        self._ttl = ttl
        self._generations = generations
        self._entries: OrderedDict[tuple[str, str], tuple[float, bytes]] = OrderedDict()
        self._bytes = 0

    async def __aenter__(self) -> MemoryCache:
        self._generations.mkdir(parents=True, exist_ok=True)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._entries.clear()
        self._bytes = 0

    async def check(self) -> None:
        """Always there: it lives in this process."""

    async def get(self, namespace: str, key: str) -> tuple[Any | None, str]:
        generation = self._generation(namespace)
        entry = self._entries.get((namespace, key))
        if entry is None:
            return None, generation
        expires, packed = entry
        if expires < time.monotonic():
            self._evict((namespace, key))
            return None, generation
        self._entries.move_to_end((namespace, key))
        return _unpack(packed, generation), generation

    async def set(self, namespace: str, key: str, generation: str, value: Any) -> None:
        packed = msgpack.packb([generation, value], use_bin_type=True)
        # NOTE: one huge entry must not flush the whole cache.
        if len(packed) > self._max_bytes // 4:
            return
        self._evict((namespace, key))
        self._entries[(namespace, key)] = (time.monotonic() + self._ttl, packed)
        self._bytes += len(packed)
        while self._bytes > self._max_bytes:
            self._evict(next(iter(self._entries)))

    async def invalidate(self, *namespaces: str) -> None:
        for namespace in namespaces:
            path = self._generation_path(namespace)
            temporary = path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(_new_generation())
            os.replace(temporary, path)

    def _generation(self, namespace: str) -> str:
        try:
            return self._generation_path(namespace).read_text()
        except FileNotFoundError:
            return "initial"  # never invalidated: files are never evicted, unlike Redis keys

    def _generation_path(self, namespace: str) -> Path:
        return self._generations / namespace.replace(":", "-")

    def _evict(self, entry_key: tuple[str, str]) -> None:
        entry = self._entries.pop(entry_key, None)
        if entry is not None:
            self._bytes -= len(entry[1])
