"""Turning a person's picture into a Fashion-MNIST-style image, and the unreadable files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.serving.images import (
    BACKGROUND_TOLERANCE,
    BlankImageError,
    ImageReadError,
    load_fashion_mnist,
    read_image,
    to_fashion_mnist,
)
from tests.support.synthetic import make_garment_images


def garment(height: int, width: int, level: int = 200) -> np.ndarray:
    """A filled rectangle of `level` on black: an easy object to locate after fitting."""
    return np.full((height, width), level, dtype=np.uint8)


def on_canvas(obj: np.ndarray, size: tuple[int, int], background: int,
              top: int, left: int) -> np.ndarray:
    canvas = np.full(size, background, dtype=np.uint8)
    canvas[top:top + obj.shape[0], left:left + obj.shape[1]] = obj
    return canvas


def bounding_box(image: np.ndarray, threshold: int = 20) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(image > threshold)
    return rows.min(), rows.max() + 1, cols.min(), cols.max() + 1


def test_a_fashion_mnist_image_passes_through_unchanged():
    images, _ = make_garment_images(2, seed=3)
    for image in images:
        assert np.array_equal(to_fashion_mnist(Image.fromarray(image)), image)


def test_a_28x28_image_on_white_is_only_inverted():
    images, _ = make_garment_images(1, seed=4)
    out = to_fashion_mnist(Image.fromarray(255 - images[0]))
    assert np.array_equal(out, images[0])


def test_a_dark_object_on_white_is_trimmed_fitted_centred_and_inverted():
    # A 120x60 dark object at the top left of a 300x200 white photo.
    photo = on_canvas(255 - garment(120, 60), (300, 200), background=255, top=10, left=5)
    out = to_fashion_mnist(Image.fromarray(photo).convert("RGB"))
    assert out.shape == (28, 28) and out.dtype == np.uint8
    top, bottom, left, right = bounding_box(out)
    assert (top, bottom) == (0, 28)  # longest side fills the height
    assert 13 <= right - left <= 15  # aspect ratio 2:1 kept
    assert abs((left + right) / 2 - 14) <= 1  # centred
    assert out[:, :5].max() == 0 and out[:, -5:].max() == 0  # black background
    assert out[10:18, 12:16].min() > 150  # the object is light


def test_a_light_object_on_black_is_fitted_without_inverting():
    photo = on_canvas(garment(40, 80), (100, 100), background=0, top=30, left=10)
    out = to_fashion_mnist(Image.fromarray(photo))
    top, bottom, left, right = bounding_box(out)
    assert (left, right) == (0, 28) and 13 <= bottom - top <= 15
    assert out[14, 14] > 150 and out[0, 0] == 0


def test_a_grey_backdrop_becomes_black():
    photo = on_canvas(garment(60, 30, level=20), (90, 90), background=180, top=15, left=30)
    out = to_fashion_mnist(Image.fromarray(photo))
    assert out[:, :5].max() == 0  # backdrop: 180, inverted 75, levelled to 0
    assert out[14, 14] == (235 - 75) * 255 // (255 - 75)  # object: 20, inverted 235


def test_transparency_counts_as_white_background():
    rgba = np.zeros((50, 50, 4), dtype=np.uint8)  # fully transparent black
    rgba[10:40, 20:30] = (30, 30, 30, 255)  # an opaque dark object
    out = to_fashion_mnist(Image.fromarray(rgba, mode="RGBA"))
    assert out[0, 0] == 0 and out[14, 14] > 200


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    deep = (on_canvas(garment(20, 10), (28, 28), 0, 4, 9).astype(np.uint16) * 257)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    out = load_fashion_mnist(tmp_path / "deep.png")
    assert out.max() == 200 and out[0, 0] == 0


def test_jpeg_and_png_files_decode(tmp_path):
    photo = on_canvas(255 - garment(80, 40), (100, 100), background=255, top=10, left=30)
    for name in ("photo.png", "photo.jpg"):
        Image.fromarray(photo).convert("RGB").save(tmp_path / name)
        out = load_fashion_mnist(tmp_path / name)
        assert out.shape == (28, 28) and out[:, :5].max() <= 10 and out[14, 14] > 150


# --- unreadable files: one message naming the file and the reason --------------------


def png_bytes(tmp_path) -> bytes:
    Image.fromarray(garment(50, 50)).save(tmp_path / "good.png")
    return (tmp_path / "good.png").read_bytes()


@pytest.mark.parametrize("name, content, reason", [
    ("empty.png", lambda good: b"", "empty file"),
    ("notes.png", lambda good: b"shopping list: socks\n", r"not an image \(Pillow cannot"),
    ("cut.png", lambda good: good[: len(good) // 2], "truncated or damaged image data"),
    ("header-only.png", lambda good: good[:40], r"truncated or damaged PNG file"),
    ("header-only.jpg", lambda good: b"\xff\xd8\xff\xe0" + bytes(10),
     r"truncated or damaged JPEG file"),
])
def test_a_bad_file_is_named_with_its_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content(png_bytes(tmp_path)))
    with pytest.raises(ImageReadError, match=rf"^{path}: {reason}") as caught:
        read_image(path)
    assert "\n" not in str(caught.value)


def test_a_truncated_jpeg_is_named(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)).save(
        tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=rf"^{tmp_path / 'cut.jpg'}: truncated"):
        read_image(tmp_path / "cut.jpg")


# --- pictures with nothing in them: refused, since a network names a class anyway ------


@pytest.mark.parametrize("picture, reason", [
    (Image.new("L", (300, 300), 255), "blank picture (every pixel has grey level 255)"),
    (Image.new("RGB", (300, 200), (0, 0, 0)), "blank picture (every pixel has grey level 0)"),
    (Image.new("L", (28, 28), 0), "blank picture (every pixel has grey level 0)"),  # as-is size
    (Image.new("RGBA", (64, 64), (0, 0, 0, 0)),  # transparent counts as white
     "blank picture (every pixel has grey level 255)"),
    (Image.fromarray(on_canvas(np.full((40, 40), 240 - BACKGROUND_TOLERANCE + 1, np.uint8),
                               (100, 100), 240, 30, 30)),
     f"nothing stands out from the background (every pixel within {BACKGROUND_TOLERANCE} grey "
     "levels of the border's 240)"),
], ids=["white", "black", "black-28x28", "transparent", "too-faint"])
def test_a_picture_with_nothing_in_it_is_refused(picture, reason):
    with pytest.raises(BlankImageError) as caught:
        to_fashion_mnist(picture)
    assert str(caught.value) == f"{reason}: nothing to classify"


def test_an_object_just_past_the_tolerance_is_kept():
    photo = on_canvas(np.full((40, 40), 240 - BACKGROUND_TOLERANCE - 1, np.uint8), (100, 100),
                      240, 30, 30)
    out = to_fashion_mnist(Image.fromarray(photo))
    assert out.shape == (28, 28) and out.min() > 0  # the square, trimmed, fills the canvas


def test_a_blank_file_is_named(tmp_path):
    Image.new("L", (300, 300), 255).save(tmp_path / "white.png")
    with pytest.raises(BlankImageError) as caught:
        load_fashion_mnist(tmp_path / "white.png")
    assert str(caught.value) == (f"{tmp_path / 'white.png'}: blank picture (every pixel has grey "
                                 "level 255): nothing to classify")
