"""The janitor: removes what uploads and deletes cut off midway (an outage of the store, a
crash) left behind, once it is older than any write still in progress could be."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from ..errors import ServiceError
from ..images import Storage, utc_now
from ..metrics import Metrics

log = logging.getLogger(__name__)

# NOTE: rounds come at most this often, and at least this often, whatever the orphan age.
MIN_ROUND_SECONDS, MAX_ROUND_SECONDS = 1.0, 300.0


class Janitor:
    """A round every quarter of the orphan age, done by the one worker of all workers and
    replicas that claims it first in the store."""

    def __init__(
        self,
        storage: Storage,
        orphan_age: float,
        metrics: Metrics,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._storage = storage
        self._orphan_age = timedelta(seconds=orphan_age)
        self._round_seconds = min(max(orphan_age / 4, MIN_ROUND_SECONDS), MAX_ROUND_SECONDS)
        self._metrics = metrics
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Janitor:
        self._task = asyncio.create_task(self._rounds())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        # NOTE: asyncio.wait, unlike awaiting the task, lets our own cancellation through.
        await asyncio.wait([self._task])

    async def _rounds(self) -> None:
        while True:
            await asyncio.sleep(self._round_seconds)
            try:
                await self.sweep()
            except ServiceError as error:
                log.warning("janitor round skipped: %s", error)
            except Exception:  # whatever it is, the next round tries again
                log.exception("janitor round failed")

    async def sweep(self) -> None:
        """One round, if no other worker has claimed it."""
        now = self._clock()
        if not await self._storage.claim_round(int(now.timestamp() // self._round_seconds)):
            return
        removed = await self._storage.clean_up(now - self._orphan_age)
        if removed:
            self._metrics.orphans_removed.inc(len(removed))
            log.warning(
                "janitor removed what %d unfinished uploads or deletes left: %s",
                len(removed),
                ", ".join(map(str, removed)),
            )
