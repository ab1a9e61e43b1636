"""Deterministic, photo-like test images: smooth colour fields with texture and grain.

Pure noise would be the worst case for JPEG (huge files, decoding bound by entropy coding);
these compress and decode like camera photos (a 12 MP one is about 2.5 MB at quality 90).
"""

from __future__ import annotations

import io
import random

from PIL import Image


def photo(seed: int, size: tuple[int, int] = (4000, 3000), quality: int = 90) -> bytes:
    rng = random.Random(seed)
    width, height = size

    def noise(mode: str, scale: int, resample: Image.Resampling) -> Image.Image:
        w, h = max(width // scale, 1), max(height // scale, 1)
        bands = len(mode)
        return Image.frombytes(mode, (w, h), rng.randbytes(w * h * bands)).resize(size, resample)

    colour = noise("RGB", max(width // 16, 1), Image.Resampling.BICUBIC)
    texture = Image.blend(
        noise("L", 4, Image.Resampling.BICUBIC), noise("L", 2, Image.Resampling.BILINEAR), 0.3
    )
    image = Image.blend(colour, Image.merge("RGB", (texture, texture, texture)), 0.25)
    output = io.BytesIO()
    image.save(output, "JPEG", quality=quality)
    return output.getvalue()


def turned(seed: int, size: tuple[int, int] = (4000, 3000), quality: int = 90) -> bytes:
    """A photo as phones store one held upright: its pixels sideways, EXIF orientation 6 (turn
    90 degrees clockwise), so a service must decode, turn and encode it."""
    image = Image.open(io.BytesIO(photo(seed, (size[1], size[0]), quality)))
    exif = image.getexif()
    exif[0x0112] = 6
    output = io.BytesIO()
    image.save(output, "JPEG", quality=quality, exif=exif)
    return output.getvalue()
