"""A person's picture -> a Fashion-MNIST-style image: 28x28 uint8, light garment on black.

Follows the recipe Fashion-MNIST's authors used on Zalando's product photos: trim the
border that has the background's colour, resize the longest side to 28 pixels, centre
on a 28x28 canvas, negate so the garment is light on a dark background, 8-bit grey.
Here the negation happens only when the background is light (judged from the border
pixels), so photos of a dark garment on white and Fashion-MNIST-style images both work.
An image that is already 28x28 is taken as Fashion-MNIST-format and is not re-fitted:
re-centring would shift a real Fashion-MNIST image by a pixel and change its prediction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageOps, UnidentifiedImageError

from pipeline import IMAGE_SHAPE
from pipeline.core.errors import DataError

SIZE = IMAGE_SHAPE[1], IMAGE_SHAPE[0]  # Pillow sizes are (width, height)
# Pixels within this distance of the background level count as background when
# trimming: Fashion-MNIST's recipe used 5 % of the intensity range.
BACKGROUND_TOLERANCE = round(0.05 * 255)
SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
# How PNG and JPEG files begin: such a file that Pillow cannot identify is cut short.
SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}


class ImageReadError(DataError):
    """The file is not a readable image; the message names the file and the reason."""


def read_image(path: str | Path) -> Image.Image:
    """Decode the whole file now, so truncation is found here and not later."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageReadError(f"{path}: empty file")
        with Image.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image)  # phone photos carry their rotation
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: {unidentified_reason(path)}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if "truncated" in reason.lower():
            raise ImageReadError(f"{path}: truncated or damaged image data: {reason}") from None
        raise ImageReadError(f"{path}: unreadable image: {reason}") from None


def unidentified_reason(path: Path) -> str:
    with open(path, "rb") as handle:
        head = handle.read(8)
    for signature, name in SIGNATURES.items():
        if head.startswith(signature):
            return f"truncated or damaged {name} file (Pillow cannot decode its header)"
    return "not an image (Pillow cannot identify its format)"


def to_grayscale(image: Image.Image) -> Image.Image:
    """8-bit grey; transparency becomes white (a cut-out product on a blank page)."""
    if image.mode in SIXTEEN_BIT_MODES:  # Pillow's own conversion clips these at 255
        pixels = np.asarray(image, dtype=np.float64) / 257.0
        return Image.fromarray(np.clip(pixels.round(), 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return image.convert("L")


def border_level(image: Image.Image) -> int:
    """The background's grey level: the median of the outermost pixels."""
    pixels = np.asarray(image)
    border = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])
    return int(np.median(border))


def trim(image: Image.Image, background: int) -> Image.Image:
    """Crop to the bounding box of the pixels that differ from the background."""
    difference = ImageChops.difference(image, Image.new("L", image.size, background))
    box = difference.point(lambda p: 255 if p > BACKGROUND_TOLERANCE else 0).getbbox()
    return image.crop(box) if box else image


def to_black_background(image: Image.Image, background: int) -> Image.Image:
    """Stretch grey levels so the background becomes 0, as in Fashion-MNIST (a photo on
    grey paper would otherwise keep a grey backdrop the network never saw)."""
    if background == 0:
        return image
    return image.point(lambda p: max(0, p - background) * 255 // (255 - background))


def fit(image: Image.Image) -> Image.Image:
    """Trim to the object, longest side to 28 pixels, centred on a black 28x28 canvas."""
    background = border_level(image)
    trimmed = to_black_background(trim(image, background), background)
    return ImageOps.pad(trimmed, SIZE, method=Image.Resampling.LANCZOS, color=0)


def to_fashion_mnist(image: Image.Image) -> np.ndarray:
    """uint8 (28, 28): light object on a dark background, fitted as Fashion-MNIST's were."""
    gray = to_grayscale(image)
    if border_level(gray) > 127:  # dark-on-light, as product photos are
        gray = ImageOps.invert(gray)
    if gray.size != SIZE:
        gray = fit(gray)
    return np.asarray(gray, dtype=np.uint8)


def load_fashion_mnist(path: str | Path) -> np.ndarray:
    return to_fashion_mnist(read_image(path))
