"""Pure Pillow functions on bytes and sizes: the only module that imports PIL."""

from __future__ import annotations

import contextlib
import functools
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, cast

import pillow_heif

# NOTE: importing the plugins registers them; Image.open(formats=...) needs them registered.
from PIL import (  # noqa: F401
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageCms,
    ImageFile,
    ImageMath,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    UnidentifiedImageError,
    WebPImagePlugin,
)

from .errors import ImageTooLarge, InvalidImage, ServiceError, UnsupportedImage
from .formats import JPEG, Format
from .originals import COPY_CHUNK_BYTES, ByteRun, write_difference

Size = tuple[int, int]

# NOTE: HEIC/HEIF (iPhones) through pillow-heif, which applies the container's rotation and
#   mirroring on decoding and resets EXIF's orientation, so it is applied once; Pillow reads AVIF
#   itself, and turns its rotation into EXIF's orientation, applied below.
pillow_heif.register_heif_opener()

# NOTE: an allow-list keeps hostile uploads away from risky decoders (EPS runs Ghostscript).
#   JPEG includes MPO, the multi-picture JPEG of phone cameras.
ACCEPTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "HEIF", "AVIF")
STORED_QUALITY = 90
# NOTE: a copy at 1/4 scale is stored beside the JPEG of an image this large, and the thumbnails
#   it covers render from it: a 12 MP photo's 1000x750 copy is about 300 KB, against 2.5 MB
#   whose entropy decoding alone costs 25 ms; its thumbnails are within 0.5 dB PSNR of direct
#   renders (tests/test_processing.py). 4:4:4: with 4:2:0, saturated edges (a red sun) lost
#   0.7 dB at 1000x750. Photos of 8 to 20 MP also get a copy at 1/2 scale, for the size it is:
#   a 12 MP photo's 2000x1500 decodes from its 1 MB in 14 ms instead of 29 from the JPEG (at
#   upload, it costs an encode of 12 ms; the 1/4 copy is then halved from it). Not beyond
#   20 MP: the upload's decode at 1/2 scale would hold more than 25 MB (36 MB for 36 MP,
#   against 9 at 1/4), past a worker's default image memory.
# NOTE: and every image with a 1/4 copy gets its thumbnail at 1/8 scale (the series' third size,
#   500x375 of 12 MP, which a gallery's grid asks for at 1x) made at upload from the same pixels,
#   with render(): stored, it is served as it is, without a decode or an encode. A cold-page
#   request then took 3.0 ms of the service's CPU instead of 10.7, and half of SeaweedFS's. It
#   is a JPEG of about 30 KB; making it adds about 1 ms to the check.
REDUCED_SCALE = 4
REDUCED_MIN_PIXELS = 2_000_000
HALF_MIN_PIXELS = 8_000_000
HALF_MAX_PIXELS = 20_000_000
REDUCED_OPTIONS = {"quality": 90, "subsampling": "4:4:4"}
JPEG_MAX_SIDE = 65_500  # libjpeg's limit
ORIENTATION = 0x0112  # the EXIF tag
SAMPLE_FORMAT = 339  # the TIFF tag: 1 unsigned, 2 signed integers, 3 floats
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


# An upload: identify() reads its header; a JPEG served as uploaded is then strip()ped of its
# metadata and check()ed, and any other image is convert()ed. The pixel limit is checked from
# the header, before any pixel is decoded. Whatever the decoders raise becomes InvalidImage
# (400: the file is damaged) or UnsupportedImage (415: Pillow cannot read this variant).


@dataclass(frozen=True)
class Copies:
    """The sizes of the copies made of an image large enough for them: its thumbnail at 1/8
    scale (`eighth`), a copy at 1/4 (`reduced`), and for the largest its thumbnail at 1/2
    (`largest`), or a copy at 1/2 scale (`half`) that it renders from where libjpeg's 1/2
    scale is not its size (odd sides), as for every image stored before largest thumbnails."""

    eighth: Size | None = None
    reduced: Size | None = None
    half: Size | None = None
    largest: Size | None = None


@dataclass(frozen=True)
class CopyOutputs:
    """Where the copies go."""

    eighth: BinaryIO
    reduced: BinaryIO
    half: BinaryIO
    largest: BinaryIO

    @classmethod
    def in_memory(cls) -> CopyOutputs:
        return cls(io.BytesIO(), io.BytesIO(), io.BytesIO(), io.BytesIO())


@dataclass(frozen=True)
class ConvertedImage:
    """What convert() made: the JPEG served went to its `output` file, and the copies to
    theirs."""

    size: Size
    copies: Copies


@dataclass(frozen=True)
class Identified:
    """What an upload's header says: its media type and its size in pixels."""

    media_type: str
    size: Size
    servable_as_is: bool  # an upright JPEG that strip() will most likely copy


def identify(source: BinaryIO, max_pixels: int) -> Identified:
    """The media type and size of an upload, read from its header, which must pass the checks a
    header allows (a format accepted, the pixel limit, a codec this Pillow has): an upload can
    start going to storage while it is checked or converted."""
    with _refusals(source, max_pixels), Image.open(source, formats=ACCEPTED_FORMATS) as image:
        _check_header(image, max_pixels)
        media_type = image.get_format_mimetype() or "application/octet-stream"
        return Identified(media_type, image.size, _servable_as_is(image))


def strip(source: BinaryIO, max_pixels: int, output: BinaryIO, difference: BinaryIO) -> Size | None:
    """Write a JPEG that can be served as it is to `output`, minus its metadata, and what it
    lacks of the upload to `difference` (originals.write_difference); give its size. None
    (and nothing written) for an image that must be converted.

    No generation loss, no decode or re-encode, and copied in chunks, so a large one is never
    whole in memory; but nothing is decoded either: check() must follow before it is served.
    """
    with _refusals(source, max_pixels), Image.open(source, formats=ACCEPTED_FORMATS) as image:
        _check_header(image, max_pixels)
        if not _servable_as_is(image):
            return None
        removed = _copy_without_metadata(source, output)
        if removed is not None:
            write_difference(source, removed, difference)
            return image.size
    output.seek(0)
    output.truncate()
    return None


def check(source: BinaryIO, max_pixels: int, outputs: CopyOutputs) -> Copies:
    """Decode a JPEG that strip() copied at a reduced scale: that reads every byte of it, to
    refuse a truncated or corrupt one, and the decode makes its copies (copies_of tells which),
    written to `outputs`."""
    with _refusals(source, max_pixels), Image.open(source, formats=ACCEPTED_FORMATS) as image:
        copies = copies_of(image.size)
        image.draft("RGB", _divided(image.size, _check_scale(copies)))
        image.load()
        return _save_copies(image, copies, outputs)


def copies_of(size: Size) -> Copies:
    """The copies an image of `size` gets, or none: its thumbnails at 1/8 and 1/2 scale (the
    sizes of the series, sides rounded down), and copies at libjpeg's 1/4 scale and, for the
    1/2 thumbnail of odd sides, 1/2 scale (rounded up)."""
    pixels = size[0] * size[1]
    if pixels < REDUCED_MIN_PIXELS:
        return Copies()
    at_half = HALF_MIN_PIXELS <= pixels <= HALF_MAX_PIXELS
    # NOTE: pixels just larger than a thumbnail blur it (resizes_well): 2001x1500 is kept as a
    #   copy, which 2000x1499 renders from as from a JPEG.
    exact_half = size[0] % 2 == 0 and size[1] % 2 == 0
    return Copies(
        eighth=(size[0] // 8, size[1] // 8),
        reduced=_scaled_size(size, _divided(size, REDUCED_SCALE)),
        half=_scaled_size(size, _divided(size, 2)) if at_half and not exact_half else None,
        largest=(size[0] // 2, size[1] // 2) if at_half and exact_half else None,
    )


def _check_scale(copies: Copies) -> int:
    """The libjpeg scale (1/n) check() decodes at: its largest copy's, or 1/8 without copies."""
    return 2 if copies.largest or copies.half else REDUCED_SCALE if copies.reduced else 8


def _divided(size: Size, divisor: int) -> Size:
    """What draft() is asked for, for libjpeg's 1/`divisor` scale."""
    return max(size[0] // divisor, 1), max(size[1] // divisor, 1)


def _save_copies(pixels: Image.Image, copies: Copies, outputs: CopyOutputs) -> Copies:
    """Write the copies from pixels at the largest copy's size (or larger): the 1/2 thumbnail
    (as any thumbnail of its size is rendered, to be served as it is) or copy, those pixels
    halved to the 1/4 scale (two halvings are one 1/4 box average), and the 1/8 thumbnail
    rendered from the 1/4 pixels."""
    half = copies.largest or copies.half
    if half is not None:
        if pixels.size != half:
            pixels = pixels.reduce(2)
        if copies.largest is not None:
            outputs.largest.write(render(Level(pixels), copies.largest))
        else:
            pixels.save(outputs.half, "JPEG", **REDUCED_OPTIONS)
    if copies.reduced is not None:
        if pixels.size != copies.reduced:
            pixels = pixels.reduce(REDUCED_SCALE // 2 if half else REDUCED_SCALE)
        pixels.save(outputs.reduced, "JPEG", **REDUCED_OPTIONS)
    if copies.eighth is not None:
        outputs.eighth.write(render(Level(pixels), copies.eighth))
    return copies


@contextlib.contextmanager
def _refusals(source: BinaryIO, max_pixels: int) -> Iterator[None]:
    """What Pillow raises, as the service's errors."""
    try:
        yield
    except UnidentifiedImageError:
        raise _unidentified(source) from None
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"images are limited to {max_pixels} pixels") from None
    except ServiceError:
        raise
    # NOTE: hostile bytes reach deep into the decoders, which raise many exception types.
    except Exception as error:
        raise refusal(error) from None


def _check_header(image: ImageFile.ImageFile, max_pixels: int) -> None:
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"{width}x{height} is {width * height} pixels; the limit is {max_pixels}"
        )
    if max(width, height) > JPEG_MAX_SIDE:
        raise ImageTooLarge(f"{width}x{height}: a JPEG has at most {JPEG_MAX_SIDE} pixels a side")
    _check_codec(image)


def convert(
    source: BinaryIO, max_pixels: int, output: BinaryIO, outputs: CopyOutputs
) -> ConvertedImage:
    """Decode, turn upright, convert to sRGB and encode (what strip() does not take); the
    copies from the same pixels."""
    with _refusals(source, max_pixels), Image.open(source, formats=ACCEPTED_FORMATS) as image:
        _check_header(image, max_pixels)
        return _convert(image, output, outputs)


def _convert(image: ImageFile.ImageFile, output: BinaryIO, outputs: CopyOutputs) -> ConvertedImage:
    image.load()
    # NOTE: in place, and no RGB copy of an RGB image: a 50 MP decode is 150 MB.
    ImageOps.exif_transpose(image, in_place=True)
    rgb = _to_srgb(_to_eight_bits(image))
    # NOTE: nothing from image.info is passed on, so no EXIF (GPS!), XMP or comments.
    rgb.save(output, "JPEG", quality=STORED_QUALITY)
    return ConvertedImage(rgb.size, _save_copies(rgb, copies_of(rgb.size), outputs))


def refusal(error: Exception) -> ServiceError:
    """Why a file that Pillow failed to open or decode is refused: 415 for a variant of a format
    that Pillow cannot read (a compression, bit depth or codec it lacks), 400 for damage.

    Pillow raises plain OSError, ValueError, SyntaxError... for both, and tells them apart only
    in its messages, which name what is unsupported; BMP says "Unsupported" of values the
    format does not define at all, which is damage.
    """
    message = str(error) or type(error).__name__
    if isinstance(error, MemoryError):
        return ImageTooLarge("decoding this image needs more memory than this server has")
    bmp_field = _BMP_FIELD.search(message)
    if bmp_field is not None:
        field, value = bmp_field.group(1).lower(), int(bmp_field.group(2))
        if value not in _BMP_DEFINED.get(field, ()):
            return InvalidImage(f"the file is damaged: {value} is not a BMP {field}")
    if isinstance(error, NotImplementedError) or _UNSUPPORTED.search(message):
        return UnsupportedImage(f"this variant of the format is not supported ({message})")
    return InvalidImage(f"the image is truncated or corrupt ({message})")


def _unidentified(source: BinaryIO) -> ServiceError:
    """Image.open() found no format that reads the file: is it one, damaged or of a variant?

    Image.open() swallows why each format refused it; a format whose signature the file starts
    with is asked again, for its reason.
    """
    source.seek(0)
    prefix = source.read(16)
    for format in ACCEPTED_FORMATS:
        factory, accept = Image.OPEN[format]
        if accept is not None and accept(prefix) is True:
            source.seek(0)
            try:
                factory(source, "")
            except Exception as error:
                if format == "TIFF" and isinstance(error.__cause__, KeyError):
                    # NOTE: the one lookup Pillow leaves unguarded: a compression it cannot name.
                    return UnsupportedImage(f"TIFF compression {error} is not supported")
                return refusal(error)
    return UnsupportedImage("the body is not an image in a supported format")


# NOTE: what Pillow's messages say of a variant it cannot read, as opposed to damage.
_UNSUPPORTED = re.compile(
    r"unsupported|not (yet )?supported|cannot handle|not available|too large for"
    r"|unknown pixel mode",
    re.IGNORECASE,
)
_BMP_FIELD = re.compile(
    r"Unsupported BMP (header type|pixel depth|compression|palette size) "
    r"\((\d+)\)",
    re.IGNORECASE,
)
# Values the BMP format defines (Windows and OS/2 headers, JPEG/PNG/CMYK compressions); the
# palette of a BMP has at most 256 entries, which Pillow reads, so a palette it refuses is damage.
_BMP_DEFINED: dict[str, frozenset[int]] = {
    "header type": frozenset({12, 16, 40, 52, 56, 64, 108, 124}),
    "pixel depth": frozenset({0, 1, 2, 4, 8, 16, 24, 32, 48, 64}),
    "compression": frozenset({0, 1, 2, 3, 4, 5, 6, 11, 12, 13}),
}
# TIFF compressions whose codec libtiff may be built without; probed once, by writing one.
_OPTIONAL_TIFF_CODECS = ("jpeg", "tiff_adobe_deflate", "tiff_deflate", "lzma", "zstd", "webp")


@functools.cache
def _tiff_codec_available(compression: str) -> bool:
    try:
        Image.new("RGB", (1, 1)).save(io.BytesIO(), "TIFF", compression=compression)
    except OSError:
        return False
    return True


def _check_codec(image: Image.Image) -> None:
    """Refuse a TIFF whose codec this libtiff lacks: libtiff would call it a decoder error."""
    compression = image.info.get("compression") if image.format == "TIFF" else None
    if compression in _OPTIONAL_TIFF_CODECS and not _tiff_codec_available(compression):
        raise UnsupportedImage(f"TIFF with {compression} compression is not supported here")


def _to_eight_bits(image: Image.Image) -> Image.Image:
    """Greyscale deeper than 8 bits, scaled to 0..255 instead of clipped (which shows white).

    16 bits: v / 257. Floats: 0.0..1.0, clamped. 32-bit integers: the range the data uses.
    (Pillow already reads 16-bit RGB(A) as 8 bits a channel.)
    """
    if image.mode.startswith("I;16"):
        return image.convert("I").point(lambda value: value / 257).convert("L")
    if image.mode == "F":
        return image.point(lambda value: value * 255).convert("L")
    if image.mode != "I":
        return image
    values = image.convert("F")
    unsigned = isinstance(image, TiffImagePlugin.TiffImageFile) and (
        image.tag_v2.get(SAMPLE_FORMAT, (1,))[0] == 1
    )
    if unsigned:
        # NOTE: Pillow reads unsigned 32-bit samples as signed ones: undo the wrap-around.
        values = ImageMath.lambda_eval(lambda env: env["v"] + (env["v"] < 0) * 2.0**32, v=values)
    low, high = cast(tuple[float, float], values.getextrema())
    if low >= 0 and high <= 255:
        return image.convert("L")  # 8-bit values in a wider type: nothing to scale
    scale = 255 / max(high - low, 1)
    return values.point(lambda value: (value - low) * scale).convert("L")


def _servable_as_is(image: Image.Image) -> bool:
    """A YCbCr JPEG, upright, without a colour profile to apply."""
    return (
        image.format in ("JPEG", "MPO")
        and image.mode == "RGB"
        and image.getexif().get(ORIENTATION, 1) == 1
        and "icc_profile" not in image.info
    )


def _copy_without_metadata(source: BinaryIO, output: BinaryIO) -> tuple[ByteRun, ...] | None:
    """Copy the first JPEG of a file with only what decoding needs: no EXIF, XMP, IPTC, comments;
    give the byte runs left out.

    Segments before the scan are kept unless they are metadata (APP0 JFIF and APP14 Adobe,
    which says how to read the colours, stay); then the image data up to the first EOI, which
    drops what follows, such as the second picture of an MPO file and its EXIF. None if the
    layout is not the plain one this expects: the caller then re-encodes.
    """
    removed = _ByteRuns()
    source.seek(0)
    if source.read(2) != b"\xff\xd8":
        return None
    output.write(b"\xff\xd8")
    while True:
        marker = source.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None
        if marker[1] == 0xFF:  # a fill byte before a marker
            removed.add(source.seek(-1, io.SEEK_CUR) - 1, 1)
            continue
        if marker[1] == 0xDA:  # start of scan: the image data follows, up to the first EOI
            output.write(marker)
            end = _copy_to_end_of_image(source, output)
            if end is None:
                return None
            removed.add(end, source.seek(0, io.SEEK_END) - end)
            return removed.runs()
        length_bytes = source.read(2)
        length = int.from_bytes(length_bytes, "big")
        if len(length_bytes) < 2 or length < 2:
            return None
        if (0xE1 <= marker[1] <= 0xEF and marker[1] != 0xEE) or marker[1] == 0xFE:
            # NOTE: metadata: skipped unread (the seek says where it ends)
            removed.add(source.seek(length - 2, io.SEEK_CUR) - length - 2, length + 2)
            continue
        segment = source.read(length - 2)
        if len(segment) < length - 2:
            return None
        output.write(marker + length_bytes + segment)


def _copy_to_end_of_image(source: BinaryIO, output: BinaryIO) -> int | None:
    """Copy up to the first EOI marker, included; where the bytes after it start."""
    previous = b""
    while chunk := source.read(COPY_CHUNK_BYTES):
        # NOTE: one byte of the last chunk, in case the EOI marker straddles the two.
        end = (previous[-1:] + chunk).find(b"\xff\xd9")
        if end >= 0:
            kept = end + 2 - len(previous[-1:])
            output.write(chunk[:kept])
            return source.tell() - len(chunk) + kept
        output.write(chunk)
        previous = chunk
    return None


class _ByteRuns:
    """Byte runs in file order, the adjacent joined."""

    def __init__(self) -> None:
        self._runs: list[ByteRun] = []

    def add(self, start: int, length: int) -> None:
        if length <= 0:
            return
        if self._runs and sum(self._runs[-1]) == start:
            self._runs[-1] = (self._runs[-1][0], self._runs[-1][1] + length)
        else:
            self._runs.append((start, length))

    def runs(self) -> tuple[ByteRun, ...]:
        return tuple(self._runs)


@dataclass(frozen=True)
class Level:
    """Decoded pixels of a stored image, from which thumbnails this size or smaller are made."""

    pixels: Image.Image

    @property
    def size(self) -> Size:
        return self.pixels.size

    @property
    def nbytes(self) -> int:
        return _pixel_bytes(self.pixels.size)


def decode(jpeg: bytes, size: Size) -> Level:
    """Decode a stored JPEG at the smallest scale that is still at least `size`, or at least
    twice `size` where that scale would not give `size` exactly."""
    # NOTE: no `with`: closing the image would free the pixels; load() lets go of the bytes.
    image = Image.open(io.BytesIO(jpeg), formats=("JPEG",))
    image.draft("RGB", _decode_draft(image.size, size))
    image.load()
    # NOTE: convert() would copy even an RGB image: 9 MB more at 2000x1500.
    return Level(image if image.mode == "RGB" else image.convert("RGB"))


def _decode_draft(full: Size, size: Size) -> Size:
    """What decode() asks draft() for, for a thumbnail of `size` from a JPEG of `full` size."""
    # NOTE: draft() lets libjpeg decode at 1/2, 1/4 or 1/8 scale: far less work. libjpeg
    #   rounds scaled sides up: 1000x750 at 1/4 is 250x188, too close to 250x187.
    return size if resizes_well(_scaled_size(full, size), size) else (size[0] * 2, size[1] * 2)


def resizes_well(level_size: Size, size: Size) -> bool:
    """Whether pixels of `level_size` make a faithful thumbnail of `size`: they are that size,
    or at least twice it. A resize from just larger shifts pixels by fractions, a blur (up to
    1.4 dB PSNR lost, 1001x750 to 1000x749), where one from twice the size averages them."""
    return level_size == size or (level_size[0] >= 2 * size[0] and level_size[1] >= 2 * size[1])


def _scaled_size(full: Size, size: Size) -> Size:
    """The size Pillow's draft() decodes a JPEG of `full` size at, asked for `size`."""
    scale = min(full[0] // max(size[0], 1), full[1] // max(size[1], 1))
    divisor = next((divisor for divisor in (8, 4, 2) if scale >= divisor), 1)
    return (-(-full[0] // divisor), -(-full[1] // divisor))


def shrink(level: Level, size: Size) -> Level:
    """Halve the pixels while they stay at least `size`: the next levels of the mipmap chain.

    Only exact halvings (even sides), as libjpeg's scaled decoding does: a thumbnail made from
    a shrunk level is as close to a full-resolution Lanczos resize as one made from the source
    (measured on a 12 MP photo: 41-54 dB PSNR either way, a few milliseconds instead of 25).
    A halving stops short of a level just larger than `size` (see resizes_well).
    """
    pixels = level.pixels
    while pixels.size != _halved(pixels.size, size):
        pixels = pixels.reduce(2)
    return level if pixels is level.pixels else Level(pixels)


def renders_well(level_size: Size, size: Size) -> bool:
    """Whether render() makes a faithful thumbnail of `size` from a level of `level_size`: a
    level kept for one size may be just larger than another (250x188 for 250x187)."""
    return resizes_well(_halved(level_size, size), size)


def _halved(level_size: Size, size: Size) -> Size:
    """The size shrink() halves a level of `level_size` to, for `size`."""
    width, height = level_size
    while width % 2 == 0 and height % 2 == 0 and resizes_well((width // 2, height // 2), size):
        width, height = width // 2, height // 2
    return width, height


def decode_and_render(
    jpeg: bytes, size: Size, next_size: Size | None, format: Format = JPEG
) -> tuple[bytes, Level | None]:
    """A thumbnail of `size` from a stored JPEG, and the level its next smaller size,
    `next_size`, will be made from (if one is asked for). One job, so that the pixels decoded
    live only while a thread works on them."""
    level = decode(jpeg, size)
    return render(level, size, format), shrink(level, next_size) if next_size else None


def render(level: Level, size: Size, format: Format = JPEG) -> bytes:
    """A thumbnail of exactly `size` pixels, in `format`, from a level at least that large."""
    pixels = shrink(level, size).pixels
    if pixels.size != size:
        pixels = pixels.resize(size, Image.Resampling.LANCZOS)
    output = io.BytesIO()
    pixels.save(output, format.pillow, **format.options)
    return output.getvalue()


# What each job holds while it runs, in bytes, for the image threads' memory budget: decoded
# pixels (4 bytes each in Pillow), which dwarf the files around them.


def check_bytes(size: Size) -> int:
    """check() of an image of `size`: its reduced decode, and the 1/4 copy halved from it."""
    copies = copies_of(size)
    decoded = _pixel_bytes(_scaled_size(size, _divided(size, _check_scale(copies))))
    return decoded * 5 // 4 if copies.largest or copies.half else decoded


def convert_bytes(size: Size) -> int:
    """convert() of an image of `size`: the decode, and a turned or converted copy of it."""
    return 2 * _pixel_bytes(size)


def decode_and_render_bytes(full: Size, size: Size, next_size: Size | None) -> int:
    """decode_and_render() of `size` from a JPEG of `full` size: the pixels decoded, and the
    next level if one is asked for (a quarter as many; the thumbnail's bytes are a few %)."""
    decoded = _pixel_bytes(_scaled_size(full, _decode_draft(full, size)))
    return decoded * 5 // 4 if next_size else decoded


def render_bytes(size: Size) -> int:
    """render() of `size` from a level: the resized pixels."""
    return _pixel_bytes(size)


def _pixel_bytes(size: Size) -> int:
    return size[0] * size[1] * 4


def _to_srgb(image: Image.Image) -> Image.Image:
    """Flatten transparency onto white and convert colours to sRGB."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        flattened = Image.new("RGB", rgba.size, "white")
        flattened.paste(rgba, mask=rgba.getchannel("A"))
        return flattened
    icc_profile = image.info.get("icc_profile")
    if icc_profile and image.mode in ("RGB", "CMYK"):
        try:
            source_profile = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
            converted = ImageCms.profileToProfile(image, source_profile, _SRGB, outputMode="RGB")
        except (ImageCms.PyCMSError, OSError):
            converted = None  # an unusable profile: keep the pixels as they are
        if converted is not None:
            return converted
    return image if image.mode == "RGB" else image.convert("RGB")
