"""Levels: pixels handed from a render to smaller sizes, and the byte budget of those kept."""

from __future__ import annotations

import asyncio
from uuid import uuid4

from PIL import Image

from service.levels import Levels
from service.processing import Level


def level(width: int, height: int) -> Level:
    return Level(Image.new("RGB", (width, height)))


async def test_smaller_sizes_wait_for_a_render_in_progress_larger_ones_do_not() -> None:
    levels, image_id = Levels(max_bytes=1 << 20), uuid4()
    with levels.rendering(image_id, (400, 300)) as hand_on:
        smaller = asyncio.ensure_future(levels.find(image_id, (200, 150)))
        assert await levels.find(image_id, (400, 300)) is None  # not made by this render
        await asyncio.sleep(0)
        assert not smaller.done()
        handed = level(200, 150)
        hand_on(handed)
        assert await smaller is handed
    assert await levels.find(image_id, (100, 75)) is handed  # kept for later requests


async def test_a_render_that_fails_leaves_waiters_to_decode_for_themselves() -> None:
    levels, image_id = Levels(max_bytes=1 << 20), uuid4()
    try:
        with levels.rendering(image_id, (400, 300)):
            waiter = asyncio.ensure_future(levels.find(image_id, (200, 150)))
            await asyncio.sleep(0)
            raise RuntimeError("the image store went away")
    except RuntimeError:
        pass
    assert await waiter is None


async def test_levels_kept_stay_within_the_byte_budget_least_recently_used_first() -> None:
    levels = Levels(max_bytes=2 * 100 * 100 * 4)
    first, second, third = uuid4(), uuid4(), uuid4()
    for image_id in (first, second):
        with levels.rendering(image_id, (200, 200)) as hand_on:
            hand_on(level(100, 100))
    assert await levels.find(first, (50, 50)) is not None  # now the most recently used
    with levels.rendering(third, (200, 200)) as hand_on:
        hand_on(level(100, 100))
    assert await levels.find(second, (50, 50)) is None
    assert await levels.find(first, (50, 50)) is not None
    assert await levels.find(third, (50, 50)) is not None
    with levels.rendering(uuid4(), (400, 400)) as hand_on:
        hand_on(level(200, 200))  # larger than the whole budget: handed on, not kept
    assert await levels.find(first, (50, 50)) is not None


async def test_a_level_just_larger_than_a_size_is_not_used_for_it() -> None:
    """Resized by a hair, pixels blur (up to 1.4 dB PSNR lost): 250x188, decoded for 125x93
    from a 1000x750 reduced copy, must not make 250x187."""
    levels, image_id = Levels(max_bytes=1 << 20), uuid4()
    with levels.rendering(image_id, (125, 93)) as hand_on:
        handed = level(250, 188)
        hand_on(handed)
    assert await levels.find(image_id, (250, 187)) is None
    assert await levels.find(image_id, (125, 93)) is handed
    assert await levels.find(image_id, (125, 94)) is handed  # halved to exactly its size
