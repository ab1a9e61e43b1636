"""Decoded pixels of recently rendered images, so that their smaller thumbnails skip the source.

The thumbnail series is a mipmap chain: every size is half the one before. Decoding a 12 MP
source costs 25-35 ms even at 1/8 scale (entropy decoding reads all of it); a thumbnail made
from pixels already decoded for a larger size costs a few. So a render hands on the level its
smaller sizes need: requests for those sizes, made meanwhile or soon after, wait for it or
take it from here instead of decoding the source again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from uuid import UUID

from .processing import Level, Size, renders_well


def covers(level_size: Size, size: Size) -> bool:
    return level_size[0] >= size[0] and level_size[1] >= size[1]


class Levels:
    """Levels kept per image (least recently used dropped past `max_bytes`), and levels coming."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._kept: OrderedDict[UUID, Level] = OrderedDict()
        # NOTE: per image, the renders in progress: the size each renders, and its future level
        #   for the sizes below.
        self._coming: dict[UUID, list[tuple[Size, asyncio.Future[Level | None]]]] = {}

    async def find(self, image_id: UUID, size: Size) -> Level | None:
        """A level that makes a faithful thumbnail of `size`, kept or from a render of a larger
        size in progress."""
        level = self._kept.get(image_id)
        if level is not None and renders_well(level.size, size):
            self._kept.move_to_end(image_id)
            return level
        for rendering, future in self._coming.get(image_id, []):
            if rendering[0] > size[0] and rendering[1] > size[1]:
                level = await asyncio.shield(future)
                return level if level is not None and renders_well(level.size, size) else None
        return None

    @contextlib.contextmanager
    def rendering(self, image_id: UUID, size: Size) -> Iterator[Callable[[Level], None]]:
        """Announce a render of `size`; the caller hands on the level for smaller sizes.

        Whoever waits for it gets None if the render ends without handing one on.
        """
        future: asyncio.Future[Level | None] = asyncio.get_running_loop().create_future()
        coming = self._coming.setdefault(image_id, [])
        coming.append((size, future))

        def hand_on(level: Level) -> None:
            future.set_result(level)
            self._keep(image_id, level)

        try:
            yield hand_on
        finally:
            if not future.done():
                future.set_result(None)
            coming.remove((size, future))
            if not coming:
                del self._coming[image_id]

    def forget(self, image_id: UUID) -> None:
        kept = self._kept.pop(image_id, None)
        if kept is not None:
            self._bytes -= kept.nbytes

    def _keep(self, image_id: UUID, level: Level) -> None:
        kept = self._kept.get(image_id)
        if kept is not None and covers(kept.size, level.size):
            level = kept  # the larger one serves more sizes
        self.forget(image_id)
        if level.nbytes > self._max_bytes:
            return
        self._kept[image_id] = level
        self._bytes += level.nbytes
        while self._bytes > self._max_bytes:
            _, dropped = self._kept.popitem(last=False)
            self._bytes -= dropped.nbytes
