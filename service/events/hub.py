"""Each worker's hub: one task tails the shared log and hands every event to this worker's
subscribers, each through a bounded queue; one that does not keep up is dropped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from typing import Any

from ..metrics import Metrics
from .logs import Event, EventLog, event_order

log = logging.getLogger(__name__)

READ_BLOCK_SECONDS = 5.0
RETRY_SECONDS = 1.0


class Reset:
    """The client's last event is older than the history kept: it must reload the listing."""


class Subscription:
    """One client's feed: past events it missed, then live ones, until it closes or lags."""

    def __init__(self, hub: EventHub, queue_size: int) -> None:
        self._hub = hub
        self.backlog: list[Event] | Reset = []
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(queue_size)
        self.last_sent: tuple[int, int] | None = None  # never an event at or before it
        self.dropped = False

    def offer(self, event: Event | None) -> None:
        """Hand on an event (None: the end); a full queue drops the subscription."""
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped = True
            self._hub.forget(self)
            # NOTE: make room for the end, so the stream stops at once.
            self._queue.get_nowait()
            self._queue.put_nowait(None)

    async def events(self, heartbeat_seconds: float | None) -> AsyncIterator[Event | Reset | None]:
        """Backlog, then live events; None every `heartbeat_seconds` without one (if given)."""
        try:
            if isinstance(self.backlog, Reset):
                yield self.backlog
            else:
                for event in self.backlog:
                    if self._new(event):
                        yield event
            while True:
                try:
                    async with asyncio.timeout(heartbeat_seconds):
                        live = await self._queue.get()
                except TimeoutError:
                    yield None
                    continue
                if live is None:
                    return
                if self._new(live):
                    yield live
        finally:
            self._hub.forget(self)

    def _new(self, event: Event) -> bool:
        order = event_order(event.id)
        if self.last_sent is not None and order <= self.last_sent:
            return False
        self.last_sent = order
        return True


class EventHub:
    """Publishes to the shared log; tails it for this worker's subscribers."""

    def __init__(self, log_: EventLog, metrics: Metrics, queue_size: int = 256) -> None:
        self._log = log_
        self._metrics = metrics
        self._queue_size = queue_size
        self._subscribers: set[Subscription] = set()
        self._position: str | None = None  # the last event handed on
        self._positioned = False  # whether that is known yet (the log may be away at start)
        self._failing = False
        self._tail: asyncio.Task[None] | None = None
        self._restore_signals: list[tuple[int, Any]] = []

    async def __aenter__(self) -> EventHub:
        await self._log.__aenter__()
        # NOTE: if the log is away (Redis), the tail finds the position once it is back.
        with contextlib.suppress(Exception):
            await self._start_at_newest()
        self._tail = asyncio.create_task(self._follow())
        self._end_streams_on_shutdown_signals()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for signum, handler in self._restore_signals:
            signal.signal(signum, handler)
        self.close_all()
        assert self._tail is not None
        self._tail.cancel()
        await asyncio.wait([self._tail])
        await self._log.__aexit__(*exc_info)

    async def publish(self, kind: str, data: dict[str, Any]) -> None:
        """Publish an event; one the log cannot take (Redis away) is lost, and logged: what it
        tells of has happened all the same."""
        try:
            await self._log.append(kind, data)
        except Exception as error:
            log.warning("events: %s not published: %s", kind, error)

    async def subscribe(self, last_event_id: str | None) -> Subscription:
        """Live events from now on; first, the ones after `last_event_id` if it is given."""
        subscription = Subscription(self, self._queue_size)
        # NOTE: registered and the position read with no await between: every event after
        #   `position` reaches the queue, and the backlog stops at it.
        self._subscribers.add(subscription)
        position = self._position
        self._metrics.event_subscribers.set(len(self._subscribers))
        if last_event_id:
            try:
                past = await self._log.since(last_event_id)
            except Exception as error:  # the log is away (Redis): the client reloads instead
                log.warning("events: the history cannot be read: %s", error)
                past = None
            if past is None:
                subscription.backlog = Reset()
            else:
                subscription.last_sent = event_order(last_event_id)
                subscription.backlog = [e for e in past if _not_after(e, position)]
        return subscription

    def forget(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)
        self._metrics.event_subscribers.set(len(self._subscribers))

    def close_all(self) -> None:
        for subscription in list(self._subscribers):
            subscription.offer(None)

    async def _follow(self) -> None:
        while True:
            try:
                if not self._positioned:
                    await self._start_at_newest()
                # NOTE: a batch at most a quarter of a queue, then a turn for the subscribers
                #   to send it: a burst of events does not drop those who keep up.
                events = await self._log.read(
                    self._position, READ_BLOCK_SECONDS, max(self._queue_size // 4, 1)
                )
            except Exception as error:  # Redis or the disk away: try again, logged once
                if not self._failing:
                    log.warning("events: the log cannot be read: %s", error)
                self._failing = True
                await asyncio.sleep(RETRY_SECONDS)
                continue
            if self._failing:
                log.warning("events: the log is read again")
                self._failing = False
            for event in events:
                self._position = event.id
                for subscription in list(self._subscribers):
                    subscription.offer(event)
            await asyncio.sleep(0)

    async def _start_at_newest(self) -> None:
        """Live events start after the newest event there is now."""
        self._position = await self._log.last_id()
        self._positioned = True

    def _end_streams_on_shutdown_signals(self) -> None:
        """uvicorn waits for open responses before its lifespan shutdown, and an event stream
        never ends by itself: end them when uvicorn is told to stop (its handlers still run)."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(signum)
            if not callable(previous):
                continue

            def ending(number: int, frame: Any, previous: Any = previous) -> None:
                loop.call_soon_threadsafe(self.close_all)
                previous(number, frame)

            with contextlib.suppress(ValueError):  # not the main thread: nothing to chain
                signal.signal(signum, ending)
                self._restore_signals.append((signum, previous))


def _not_after(event: Event, position: str | None) -> bool:
    """Whether an event is at or before a position of the log."""
    return position is not None and event_order(event.id) <= event_order(position)
