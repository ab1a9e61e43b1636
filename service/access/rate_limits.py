"""Rate limits on uploads and on thumbnail renders (cache misses), per caller: the `limits`
library's moving window, shared by every worker and replica through Redis when it is
configured, else kept in this process."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import redis.asyncio as redis
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from .. import redis_client
from ..errors import RateLimited

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Quota:
    """Where a caller stands under one limit: the IETF RateLimit and RateLimit-Policy fields
    (draft-ietf-httpapi-ratelimit-headers)."""

    name: str
    limit: int
    window_seconds: int
    remaining: int
    reset_seconds: int

    @property
    def policy(self) -> str:
        return f'"{self.name}";q={self.limit};w={self.window_seconds}'

    @property
    def state(self) -> str:
        return f'"{self.name}";r={self.remaining};t={self.reset_seconds}'


class RateLimits:
    """Named limits ("uploads", "renders"); `take` counts one request of a caller."""

    def __init__(self, limits: dict[str, str], redis_url: str | None) -> None:
        self._items: dict[str, RateLimitItem] = {
            name: parse(text) for name, text in limits.items() if text
        }
        self._redis_url = redis_url
        self._pool: redis.ConnectionPool | None = None
        self._limiter: MovingWindowRateLimiter | None = None
        self._failing = False

    async def __aenter__(self) -> RateLimits:
        storage: Storage
        if self._redis_url:
            # NOTE: a pool of our own, closed on exit; short timeouts, like the cache's.
            self._pool = redis_client.connection_pool(
                self._redis_url, socket_timeout=0.5, socket_connect_timeout=0.5
            )
            storage = RedisStorage(
                # NOTE: the pool decides where to connect (through Sentinel too); the URL is
                #   only the storage's kind.
                "async+redis://",
                implementation="redispy",
                key_prefix="asgilook:limits",
                wrap_exceptions=True,
                # NOTE: limits types its options as scalars; redis-py takes a pool here.
                connection_pool=self._pool,  # type: ignore[arg-type]
            )
        else:
            storage = MemoryStorage()
        self._limiter = MovingWindowRateLimiter(storage)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._pool is not None:
            await redis_client.close_pool(self._pool)

    async def take(self, name: str, caller: str) -> Quota | None:
        """Count a request; RateLimited if it is over the limit. None without such a limit,
        or while Redis cannot be reached (the limit is then not enforced, and that logged)."""
        item = self._items.get(name)
        if item is None:
            return None
        assert self._limiter is not None, "RateLimits used outside the app's lifespan"
        try:
            allowed = await self._limiter.hit(item, name, caller)
            reset_at, remaining = await self._limiter.get_window_stats(item, name, caller)
        except Exception as error:  # the storage's errors, whatever the backend
            if not self._failing:
                log.warning("rate limits not enforced: their storage failed: %s", error)
            self._failing = True
            return None
        if self._failing:
            log.warning("rate limits enforced again")
            self._failing = False
        quota = Quota(
            name,
            item.amount,
            item.get_expiry(),
            remaining,
            max(math.ceil(reset_at - time.time()), 0),
        )
        if not allowed:
            raise RateLimited(
                f"more than {item.amount} {name} in {item.get_expiry()} s; retry in "
                f"{quota.reset_seconds} s",
                quota.policy,
                quota.state,
                max(quota.reset_seconds, 1),
            )
        return quota
