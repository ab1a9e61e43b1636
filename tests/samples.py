"""Generated test images: every kind of upload the service must accept or refuse."""

from __future__ import annotations

import io
import random
import struct
import zlib

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageStat

GPS_IFD = 0x8825
GPS_POSITION = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}
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
    exif[GPS_IFD] = GPS_POSITION
    output = io.BytesIO()
    image.save(output, "JPEG", exif=exif, quality=90)
    return output.getvalue()


def upright_jpeg_with_metadata(size: tuple[int, int] = (640, 480)) -> bytes:
    """A camera JPEG served as uploaded: upright, with EXIF (a GPS position), XMP and a
    comment, which the served JPEG drops and the original keeps."""
    image = Image.new("RGB", size, "blue")
    image.paste((255, 255, 0), (0, 0, size[0] // 4, size[1]))
    exif = image.getexif()
    exif[GPS_IFD] = GPS_POSITION
    output = io.BytesIO()
    image.save(
        output, "JPEG", exif=exif, xmp=b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>",
        comment=b"on holiday", quality=90,
    )  # fmt: skip
    return output.getvalue()


def with_fill_bytes(jpeg_bytes: bytes) -> bytes:
    """The same JPEG with fill bytes (0xFF) before the markers after SOI, which the format
    allows and some encoders write."""
    return jpeg_bytes[:2] + b"\xff\xff\xff" + jpeg_bytes[2:]


def mpo(size: tuple[int, int] = (640, 480)) -> bytes:
    """A phone's multi-picture JPEG: a second picture, with its own EXIF, after the first."""
    output = io.BytesIO()
    first, second = Image.new("RGB", size, "blue"), Image.new("RGB", size, "red")
    exif = first.getexif()
    exif[GPS_IFD] = GPS_POSITION
    first.save(output, "MPO", save_all=True, append_images=[second], exif=exif, quality=90)
    return output.getvalue()


def turned(upright: bytes) -> bytes:
    """A JPEG as phones store one: its pixels sideways, EXIF orientation 8 (turn 90 degrees
    counter-clockwise to view), so that it shows as `upright` does."""
    image = Image.open(io.BytesIO(upright)).transpose(Image.Transpose.ROTATE_270)
    exif = image.getexif()
    exif[ORIENTATION] = 8
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


def scenery(seed: int, size: tuple[int, int]) -> bytes:
    """A made-up landscape (sky, sun, layers of hills): something a person would look at, for
    screenshots of the gallery."""
    rng = random.Random(seed)
    width, height = size
    sky = [rng.randrange(90, 256) for _ in range(3)]
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    image = Image.blend(Image.new("RGB", size, tuple(sky)), image, 0.35)
    draw = ImageDraw.Draw(image)
    sun = (rng.randrange(width), rng.randrange(height // 2))
    radius = max(width, height) // rng.randrange(8, 14)
    draw.ellipse([sun[0] - radius, sun[1] - radius, sun[0] + radius, sun[1] + radius], "#fff3c0")
    hills = (rng.randrange(40, 160), rng.randrange(100, 180), rng.randrange(60, 140))
    for layer in range(4):
        base = height * (0.45 + 0.15 * layer)
        ridge = [(x, base - rng.random() * height * 0.2) for x in range(0, width + 80, 80)]
        shade = [max(0, channel - 30 * layer - rng.randrange(30)) for channel in hills]
        draw.polygon([(0, height), *ridge, (width, height)], tuple(shade))
    output = io.BytesIO()
    image.filter(ImageFilter.SMOOTH).save(output, "JPEG", quality=90)
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


def horizontal_ramp(width: int, low: float, high: float) -> list[float]:
    """The values of a left-to-right gradient, one a column."""
    return [low + (high - low) * x / (width - 1) for x in range(width)]


def deep_tiff(
    size: tuple[int, int], ramp: list[float], *, bits: int, kind: str = "uint", channels: int = 1
) -> bytes:
    """An uncompressed TIFF of more than 8 bits a sample, that Pillow cannot write itself:
    every row is `ramp`, in every channel (an alpha channel, the 4th, is opaque).

    kind: "uint", "int" (signed) or "float"; channels: 1 (grey), 3 (RGB) or 4 (RGBA).
    """
    width, height = size
    code = {("uint", 16): "H", ("uint", 32): "I", ("int", 32): "i", ("float", 32): "f"}
    opaque = {"uint": 2**bits - 1, "int": 2 ** (bits - 1) - 1, "float": 1.0}[kind]
    cast = float if kind == "float" else round
    pixels = [
        value for column in ramp for value in [cast(column)] * min(channels, 3)
        + [opaque] * (channels == 4)
    ]  # fmt: skip
    data = struct.pack(f"<{len(pixels)}{code[kind, bits]}", *pixels) * height
    entries: list[tuple[int, int, int, bytes]] = []  # tag, type, count, value
    extra = b""  # values too long for an entry follow the entries

    def entry(tag: int, kind_code: int, values: list[int]) -> None:
        packed = struct.pack(f"<{len(values)}{'H' if kind_code == 3 else 'I'}", *values)
        entries.append((tag, kind_code, len(values), packed))

    sample_format = {"uint": 1, "int": 2, "float": 3}[kind]
    entry(256, 4, [width])
    entry(257, 4, [height])
    entry(258, 3, [bits] * channels)
    entry(259, 3, [1])  # no compression
    entry(262, 3, [1 if channels == 1 else 2])  # black is zero, or RGB
    entry(273, 4, [0])  # strip offset: patched below
    entry(277, 3, [channels])
    entry(278, 4, [height])
    entry(279, 4, [len(data)])
    entry(284, 3, [1])
    if channels == 4:
        entry(338, 3, [2])  # unassociated alpha
    entry(339, 3, [sample_format] * channels)
    ifd_size = 2 + 12 * len(entries) + 4
    extra_offset = 8 + ifd_size
    body = b""
    for tag, kind_code, count, packed in entries:
        if len(packed) <= 4:
            value = packed.ljust(4, b"\0")
        else:
            value = struct.pack("<I", extra_offset + len(extra))
            extra += packed
        body += struct.pack("<HHI", tag, kind_code, count) + value
    data_offset = extra_offset + len(extra)
    body = body.replace(
        struct.pack("<HHI", 273, 4, 1) + b"\0\0\0\0",
        struct.pack("<HHI", 273, 4, 1) + struct.pack("<I", data_offset),
    )
    header = b"II*\0" + struct.pack("<I", 8)
    return header + struct.pack("<H", len(entries)) + body + b"\0\0\0\0" + extra + data


def deep_png(size: tuple[int, int], ramp: list[float], *, channels: int) -> bytes:
    """A 16-bit PNG, every row `ramp`: grey (1 channel), RGB (3) or RGBA (4, opaque)."""
    width, height = size
    colour_type = {1: 0, 3: 2, 4: 6}[channels]
    row = b"".join(
        struct.pack(">H", round(value)) * min(channels, 3) + b"\xff\xff" * (channels == 4)
        for value in ramp
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\0" + row for _ in range(height)))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def difference(thumbnail: bytes, upload: bytes) -> float:
    """How far a thumbnail is from the upload resized to its size (Lanczos): the largest mean
    difference of a channel, 0 to 255. JPEG noise re-encoded differs by about 14."""
    rendered = Image.open(io.BytesIO(thumbnail)).convert("RGB")
    expected = Image.open(io.BytesIO(upload)).convert("RGB")
    expected = expected.resize(rendered.size, Image.Resampling.LANCZOS)
    return max(ImageStat.Stat(ImageChops.difference(rendered, expected)).mean)
