"""Generated test images: every kind of upload the service must accept or refuse."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image, ImageFilter

GPS_IFD = 0x8825
ORIENTATION = 0x0112


def png_with_alpha(size: tuple[int, int] = (462, 462)) -> bytes:
    """Half-transparent red: the stored JPEG must show it flattened onto white."""
    output = io.BytesIO()
    Image.new("RGBA", size, (255, 0, 0, 128)).save(output, "PNG")
    return output.getvalue()


def jpeg_with_exif(size: tuple[int, int] = (640, 480)) -> bytes:
    """A phone photo: stored sideways, orientation 6 (turn 90 clockwise), with a GPS position."""
    image = Image.new("RGB", size, "blue")
    image.paste((255, 255, 0), (0, 0, size[0] // 4, size[1]))  # a yellow left edge
    exif = image.getexif()
    exif[ORIENTATION] = 6
    exif[GPS_IFD] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}
    output = io.BytesIO()
    image.save(output, "JPEG", exif=exif, quality=90)
    return output.getvalue()


def jpeg(size: tuple[int, int], quality: int = 85) -> bytes:
    """A photo-like JPEG with detail everywhere, so decoding and resizing do real work."""
    gradient = Image.linear_gradient("L").resize(size)
    noise = Image.effect_noise(size, 64)
    image = Image.merge("RGB", (gradient, noise, gradient.transpose(Image.Transpose.ROTATE_180)))
    output = io.BytesIO()
    image.save(output, "JPEG", quality=quality)
    return output.getvalue()


def smooth_photo(size: tuple[int, int]) -> bytes:
    """Gradients and soft detail, closer to a camera photo than jpeg(): resampling errors
    show in it instead of drowning in noise."""
    gradient = Image.linear_gradient("L").resize(size)
    detail = Image.effect_noise(size, 64).filter(ImageFilter.GaussianBlur(1.5))
    image = Image.merge("RGB", (gradient, detail, gradient.transpose(Image.Transpose.ROTATE_180)))
    output = io.BytesIO()
    image.save(output, "JPEG", quality=90)
    return output.getvalue()


def gif_with_transparency() -> bytes:
    image = Image.new("P", (200, 100), 0)
    image.putpalette([0, 0, 0, 0, 255, 0])
    image.paste(1, (100, 0, 200, 100))
    output = io.BytesIO()
    image.save(output, "GIF", transparency=0)
    return output.getvalue()


def garbage() -> bytes:
    return b"this is not an image, it is a text file pretending to be one\n" * 100


def truncated(image: bytes) -> bytes:
    return image[: len(image) // 2]


def png_bomb(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with almost no pixel data behind it.

    A service that decodes before checking the size would fail on the missing data (400);
    one that checks the header refuses it as too large (413).
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + chunk(b"IEND", b"")
    )


def has_exif(jpeg_bytes: bytes) -> bool:
    """True if the JPEG carries an EXIF (APP1) block."""
    return b"Exif\x00\x00" in jpeg_bytes
