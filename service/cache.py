"""Response cache stores: Redis (shared by every worker) or in-process with a byte budget.

Entries live in namespaces (the listing, or one image and its thumbnails). Invalidating a
namespace gives it a new random generation; an entry counts only if it was stored under the
current generation, so a response rendered before a write can never be served after it, even if
a slow request stores it late.

Both stores keep hot entries in process (LocalEntries), so that a hit costs no I/O: the
in-process cache is nothing else, and the Redis cache keeps a small copy in front of Redis whose
namespaces are dropped, in every worker, by a message on a Redis pub/sub channel.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, NamedTuple, Protocol, Self

import msgpack
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from . import redis_client
from .metrics import Metrics

log = logging.getLogger(__name__)

# NOTE: while Redis is down, each worker asks again at most this often.
REDIS_RETRY_SECONDS = 1.0
# NOTE: bounds how long a lost pub/sub message could leave a copy in front of Redis stale.
LOCAL_TTL_SECONDS = 10.0
# A write waits at most this long for its invalidation to come back through the channel.
ECHO_TIMEOUT_SECONDS = 0.25
# Bytes an entry costs beyond its serialised value: key, tuple, bookkeeping.
ENTRY_OVERHEAD = 512


class Cache(Protocol):
    """Cached responses, by namespace. Opened (connected) on entry, closed on exit."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def check(self) -> None:
        """Raise unless the cache answers."""

    def peek(self, key: str) -> Any | None:
        """A value held in this process and still valid, without any I/O; else None."""

    async def get(self, namespace: str, key: str) -> tuple[Any | None, str]:
        """The cached value (or None) and the generation to store a fresh value under."""

    async def set(self, namespace: str, key: str, generation: str, value: Any) -> None:
        """Store a value, unless the namespace was invalidated since `generation` was read."""

    async def invalidate(self, *namespaces: str) -> None:
        """Make every entry of these namespaces unreachable, in every worker."""


GENERATION_FILE_BYTES = 64  # more than the 16 hex digits of a generation


def _new_generation() -> str:
    return secrets.token_hex(8)


class _Entry(NamedTuple):
    namespace: str
    generation: str
    expires: float
    size: int
    value: Any


class LocalEntries:
    """Entries in this process: least recently used evicted past a byte budget, and a TTL."""

    def __init__(self, max_bytes: int, ttl: float) -> None:
        self._max_bytes = max_bytes
        self._ttl = ttl
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0

    def get(self, key: str) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires < time.monotonic():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, namespace: str, key: str, generation: str, value: Any, packed_size: int) -> None:
        """Keep a value; `packed_size`, its size serialised, is roughly what it holds."""
        size = ENTRY_OVERHEAD + packed_size
        # NOTE: one huge entry must not flush the whole cache.
        if size > self._max_bytes // 4:
            return
        self._drop(key)
        expires = time.monotonic() + self._ttl
        self._entries[key] = _Entry(namespace, generation, expires, size, value)
        self._bytes += size
        while self._bytes > self._max_bytes:
            self._drop(next(iter(self._entries)))

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.size


class RedisCache:
    """Entries and generations in Redis, hot entries also in process. Never raises."""

    CHANNEL = "invalidations"

    def __init__(
        self,
        url: str,
        ttl: int,
        metrics: Metrics,
        local_max_bytes: int,
        prefix: str = "asgilook:",
    ) -> None:
        self._url = url
        self._ttl = ttl
        self._metrics = metrics
        self._prefix = prefix
        self._redis: redis.Redis | None = None
        self._retry_at = 0.0
        # NOTE: invalidations that could not reach Redis; sent before it is trusted again.
        self._unsent_invalidations: set[str] = set()
        self._local = LocalEntries(local_max_bytes, min(ttl, LOCAL_TTL_SECONDS))
        # The generation of each namespace as last read from Redis, while subscribed: only
        # then does this process hear of every invalidation.
        self._generations: dict[str, str] = {}
        self._invalidations_heard = 0  # see _remember
        self._subscribed = False
        self._listener: asyncio.Task[None] | None = None
        self._echoes: dict[str, asyncio.Future[None]] = {}

    async def __aenter__(self) -> RedisCache:
        # NOTE: short timeouts, and one retry, at once and on a connection error only: a pooled
        #   connection Redis closed (it restarted) fails its next command with a ConnectionError;
        #   redis-py then drops it and tries once more on a fresh connection (redis-py 8.1 under
        #   RESP3 no longer checks pooled connections before use, redis/redis-py#4252). A Redis
        #   that is down refuses that connection at once; a timeout (a stall, a host that does not
        #   answer) is not retried: a cache that is down must cost nearly nothing.
        self._redis = redis_client.connect(
            self._url,
            socket_connect_timeout=0.5,
            socket_timeout=0.5,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        self._listener = asyncio.create_task(self._listen())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._redis is not None and self._listener is not None
        try:
            # NOTE: redis-py subscribes through asyncio.wait_for, which in Python 3.11 can
            #   swallow a cancellation (CPython gh-86296): cancel until the listener is gone.
            #   asyncio.wait, unlike awaiting the task, lets our own cancellation through.
            while not self._listener.done():
                self._listener.cancel()
                await asyncio.wait([self._listener], timeout=0.1)
        finally:
            await redis_client.close(self._redis)

    async def check(self) -> None:
        await self._client.ping()

    def peek(self, key: str) -> Any | None:
        entry = self._local.get(key)
        if entry is None or self._generations.get(entry.namespace) != entry.generation:
            return None
        return entry.value

    async def get(self, namespace: str, key: str) -> tuple[Any | None, str]:
        if self._unsent_invalidations and not await self._send_invalidations():
            return None, ""
        entry = self._local.get(key)
        if entry is not None and self._generations.get(namespace) == entry.generation:
            return entry.value, entry.generation
        heard = self._invalidations_heard
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
            if created is None and self._retry_at:
                return None, ""  # Redis went away meanwhile
            generation = (created or generation.encode()).decode()
            self._remember(namespace, generation, heard)
            return None, generation
        generation = generation.decode()
        self._remember(namespace, generation, heard)
        if packed is None:
            return None, generation
        stored_generation, value = msgpack.unpackb(packed, raw=False)
        if stored_generation != generation:
            return None, generation
        if self._generations.get(namespace) == generation:
            self._local.put(namespace, key, generation, value, len(packed))
        return value, generation

    async def set(self, namespace: str, key: str, generation: str, value: Any) -> None:
        if generation:
            packed = msgpack.packb([generation, value], use_bin_type=True)
            entry_key = self._entry_key(namespace, key)
            # NOTE: not copied in process yet: only what is asked for again is hot, so one-off
            #   renders do not crowd out the hot entries (nor fill the worker's memory).
            await self._call(self._client.set, entry_key, packed, ex=self._ttl)

    async def invalidate(self, *namespaces: str) -> None:
        """Invalidate, then wait until the message has come back through the channel.

        Redis sends a message to every subscriber at once, so when this worker hears its own,
        the others have been sent theirs: the write is acknowledged only then.
        """
        self._forget(*namespaces)
        self._unsent_invalidations.update(namespaces)
        echo = asyncio.get_running_loop().create_future()
        token = _new_generation()
        self._echoes[token] = echo
        try:
            if await self._send_invalidations(token) and self._subscribed:
                await asyncio.wait_for(echo, ECHO_TIMEOUT_SECONDS)
        except TimeoutError:
            log.warning("invalidation not echoed within %s s", ECHO_TIMEOUT_SECONDS)
        finally:
            self._echoes.pop(token, None)

    def _remember(self, namespace: str, generation: str, heard_before: int) -> None:
        """Trust a generation read from Redis, unless an invalidation came in meanwhile."""
        if self._subscribed and self._invalidations_heard == heard_before:
            self._generations[namespace] = generation

    def _forget(self, *namespaces: str) -> None:
        self._invalidations_heard += 1
        for namespace in namespaces:
            self._generations.pop(namespace, None)

    async def _send_invalidations(self, token: str = "-") -> bool:
        namespaces = list(self._unsent_invalidations)

        async def send() -> list[Any]:
            async with self._client.pipeline(transaction=False) as pipe:
                for namespace in namespaces:
                    pipe.set(self._generation_key(namespace), _new_generation(), ex=self._ttl)
                pipe.publish(self._prefix + self.CHANNEL, " ".join([token, *namespaces]))
                return await pipe.execute()

        if await self._call(send) is None:
            return False
        self._unsent_invalidations.difference_update(namespaces)
        return True

    async def _listen(self) -> None:
        """Drop invalidated namespaces as other workers announce them; resubscribe on errors."""
        while True:
            # NOTE: a connection of its own, which waits for messages without a timeout. No
            #   retries: redis-py would reconnect and resubscribe quietly, and the messages sent
            #   meanwhile would be missed; losing the channel must reach the `finally` below.
            subscriber = redis_client.connect(
                self._url,
                socket_connect_timeout=0.5,
                health_check_interval=5,
                retry=Retry(NoBackoff(), 0),
            )
            try:
                async with subscriber.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self._prefix + self.CHANNEL)
                    self._subscribed = True
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            token, *namespaces = message["data"].decode().split(" ")
                            self._forget(*namespaces)
                            echo = self._echoes.get(token)
                            if echo is not None and not echo.done():
                                echo.set_result(None)
            except (redis.RedisError, OSError) as error:
                log.debug("invalidation channel lost: %s", error)
            finally:
                # NOTE: unsubscribed, this process may miss invalidations: trust nothing local.
                self._subscribed = False
                self._forget(*self._generations)
                self._local.clear()
                await redis_client.close(subscriber)
            await asyncio.sleep(REDIS_RETRY_SECONDS)

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
        except Exception as error:
            # NOTE: whatever the client raises costs an uncached answer only, even what is not
            #   a Redis or network error: under uvloop, a write on a connection the server just
            #   closed raises RuntimeError ("the handler is closed"), which redis-py passes on
            #   (seen in a Sentinel failover of infra/cluster, where it made a GET a 500).
            self._metrics.cache_errors.inc()
            expected = isinstance(error, redis.RedisError | OSError)
            if not self._retry_at or not expected:
                log.warning(
                    "Redis cache unavailable, serving without it: %r",
                    error,
                    exc_info=None if expected else error,
                )
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
    """Entries in this process only; generations are small files in a directory, so that
    uvicorn workers on one host see each other's invalidations.
    """

    def __init__(self, max_bytes: int, ttl: int, generations: Path) -> None:
        self._local = LocalEntries(max_bytes, ttl)
        self._generations = generations

    async def __aenter__(self) -> MemoryCache:
        self._generations.mkdir(parents=True, exist_ok=True)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._local.clear()

    async def check(self) -> None:
        """Always there: it lives in this process."""

    def peek(self, key: str) -> Any | None:
        entry = self._local.get(key)
        if entry is None or entry.generation != self._generation(entry.namespace):
            return None
        return entry.value

    async def get(self, namespace: str, key: str) -> tuple[Any | None, str]:
        generation = self._generation(namespace)
        entry = self._local.get(key)
        if entry is None or entry.generation != generation:
            return None, generation
        return entry.value, generation

    async def set(self, namespace: str, key: str, generation: str, value: Any) -> None:
        # NOTE: a round trip through msgpack, as Redis would do, so both stores hold the same.
        packed = msgpack.packb(value, use_bin_type=True)
        self._local.put(namespace, key, generation, msgpack.unpackb(packed, raw=False), len(packed))

    async def invalidate(self, *namespaces: str) -> None:
        for namespace in namespaces:
            path = self._generation_path(namespace)
            temporary = Path(f"{path}.{os.getpid()}.tmp")
            temporary.write_text(_new_generation())
            os.replace(temporary, path)

    def _generation(self, namespace: str) -> str:
        # NOTE: read on every lookup, another worker may have just replaced it; with os.open
        #   and os.read, 1.6 us, where Path.read_text() took 10.5 (a cache hit's every request).
        try:
            file = os.open(self._generation_path(namespace), os.O_RDONLY)
        except FileNotFoundError:
            return "initial"  # never invalidated: files are never evicted, unlike Redis keys
        try:
            return os.read(file, GENERATION_FILE_BYTES).decode()
        finally:
            os.close(file)

    def _generation_path(self, namespace: str) -> str:
        return f"{self._generations}/{namespace.replace(':', '-')}"
