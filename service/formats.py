"""The formats images and thumbnails are served in, their encoder settings, and the choice of
one from a request's Accept header."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image


@dataclass(frozen=True)
class Format:
    name: str  # also the URL's extension
    media_type: str
    pillow: str  # Pillow's name of its encoder
    # NOTE: chosen by measurement (bench/formats.py, bench/FORMATS.md): WebP's and AVIF's
    #   quality is the lowest whose thumbnails match the JPEG ones' by SSIM and by SSIMULACRA 2
    #   (by SSIM alone, WebP at 75 would do; perceptually, it takes 80).
    options: dict[str, Any] = field(default_factory=dict)

    def with_options(self, **options: Any) -> Format:
        return replace(self, options={**self.options, **options})


def encodable(format: Format) -> bool:
    """Whether this Pillow can write the format."""
    Image.init()
    return format.pillow in Image.SAVE


JPEG = Format("jpeg", "image/jpeg", "JPEG", {"quality": 75})
FORMATS = {
    format.name: format
    for format in (
        JPEG,
        # NOTE: method 2 makes a WebP miss 1.0-2.2x a JPEG one up to 1000x750 (3.9x at
        #   2000x1500; method 4: 3.4x at 1000x750 already) for a little quality.
        Format("webp", "image/webp", "WEBP", {"quality": 80, "method": 2}),
        # NOTE: speed 10, one thread: a miss 1.1-1.5x a JPEG one up to 500x375, 2.5x at
        #   1000x750, 4.6x at 2000x1500 (speed 8 encodes 2.3x slower still). One thread, as
        #   the image workers already keep every core busy under load.
        Format("avif", "image/avif", "AVIF", {"quality": 60, "speed": 10, "max_threads": 1}),
    )
    if encodable(format)  # NOTE: a Pillow built without libavif has no AVIF
}
# NOTE: among formats a client accepts equally, the smallest files first; a format it accepts
#   only through a wildcard (*/*, image/*) comes after one it names, and JPEG first among those.
_NAMED_ORDER = ("avif", "webp", "jpeg")
_WILDCARD_ORDER = ("jpeg", "webp", "avif")


def negotiate(accept: str | None) -> Format | None:
    """The format to answer a request with this Accept header; None if it accepts none.

    The client's q-values win; among equal ones, a format it names beats one it accepts
    through a wildcard, then AVIF, WebP, JPEG among named ones. No Accept, or */* alone: JPEG.
    """
    ranges = _parse(accept or "")
    if not ranges:  # NOTE: an Accept without one readable media range is ignored, as if absent
        return JPEG
    best: tuple[float, int, int] | None = None
    chosen = None
    for name, format in FORMATS.items():
        quality, named = _quality(format.media_type, ranges)
        if quality <= 0:
            continue
        order = _NAMED_ORDER if named else _WILDCARD_ORDER
        score = (quality, int(named), len(order) - order.index(name))
        if best is None or score > best:
            best, chosen = score, format
    return chosen


# RFC 9110's token "/" token
_MEDIA_RANGE = re.compile(r"[\w!#$%&'*+.^`|~-]+/[\w!#$%&'*+.^`|~-]+")


def _parse(accept: str) -> list[tuple[str, float]]:
    """(media range, q) pairs; a range with an unreadable q is ignored."""
    ranges = []
    for item in accept.split(","):
        media_range, *parameters = (part.strip() for part in item.split(";"))
        quality = 1.0
        for parameter in parameters:
            key, _, value = parameter.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    quality = -1.0
        if _MEDIA_RANGE.fullmatch(media_range) and quality >= 0:
            ranges.append((media_range.lower(), quality))
    return ranges


def _quality(media_type: str, ranges: list[tuple[str, float]]) -> tuple[float, bool]:
    """The q of the most specific range matching the type, and whether it named the type."""
    kind = media_type.split("/")[0]
    for candidate in (media_type, f"{kind}/*", "*/*"):
        for media_range, quality in ranges:
            if media_range == candidate:
                return quality, candidate == media_type
    return 0.0, False
