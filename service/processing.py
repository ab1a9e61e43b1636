"""Pure Pillow functions on bytes and sizes: the only module that imports PIL."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import BinaryIO

# NOTE: importing the plugins registers them; Image.open(formats=...) needs them registered.
from PIL import (  # noqa: F401
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageCms,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    UnidentifiedImageError,
    WebPImagePlugin,
)

from .errors import ImageTooLarge, InvalidImage, UnsupportedImage

Size = tuple[int, int]

# NOTE: an allow-list keeps hostile uploads away from risky decoders (EPS runs Ghostscript).
#   JPEG includes MPO, the multi-picture JPEG of phone cameras.
ACCEPTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
STORED_QUALITY = 90
THUMBNAIL_QUALITY = 80
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@dataclass(frozen=True)
class NormalisedImage:
    """An upload turned into the JPEG the service serves."""

    jpeg: bytes
    size: Size
    original_type: str


def normalise(source: BinaryIO, max_pixels: int) -> NormalisedImage:
    """Decode an upload and re-encode it as an upright sRGB JPEG without metadata.

    The pixel limit is checked from the header, before any pixel is decoded.
    """
    try:
        image = Image.open(source, formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        raise UnsupportedImage("the body is not an image in a supported format") from None
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"images are limited to {max_pixels} pixels") from None
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise ImageTooLarge(
                f"{width}x{height} is {width * height} pixels; the limit is {max_pixels}"
            )
        original_type = image.get_format_mimetype() or "application/octet-stream"
        try:
            image.load()
            upright = ImageOps.exif_transpose(image)
            rgb = _to_srgb(upright)
        # NOTE: hostile bytes reach deep into the decoders, which raise many exception types.
        except Exception as error:
            raise InvalidImage(f"the image is truncated or corrupt ({error})") from None
    return NormalisedImage(_encode(rgb, STORED_QUALITY), rgb.size, original_type)


def thumbnail(jpeg: bytes, size: Size) -> bytes:
    """Render a JPEG of exactly `size` pixels from a stored JPEG."""
    with Image.open(io.BytesIO(jpeg), formats=("JPEG",)) as image:
        # NOTE: draft() lets libjpeg decode at 1/2, 1/4 or 1/8 scale, still >= size.
        image.draft("RGB", size)
        resized = image.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    return _encode(resized, THUMBNAIL_QUALITY)


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
    return image.convert("RGB")


def _encode(image: Image.Image, quality: int) -> bytes:
    # NOTE: nothing from image.info is passed on, so no EXIF (GPS!), XMP or comments.
    output = io.BytesIO()
    image.save(output, "JPEG", quality=quality)
    return output.getvalue()
