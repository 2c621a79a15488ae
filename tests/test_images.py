"""Tests for simsearch.images: decoding every mode and format, EXIF orientation and draft mode (failures and
refused files: test_image_failures.py; scanning, hashing, thumbnails: test_files_and_thumbnails.py)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE_PHOTOS
from image_helpers import BLUE, GREEN, RED, WHITE, _close, _noise_jpeg
from PIL import ExifTags, Image

from simsearch.images import load_image, probe_image


def _marked(size: tuple[int, int]) -> Image.Image:
    """Blue image with a red block in the stored top-left corner: shows where a rotation moved it."""
    im = Image.new("RGB", size, BLUE)
    im.paste(RED, (0, 0, size[0] // 4, size[1] // 4))
    return im


# --------------------------------------------------------------------------------------------------------------------
# Modes
# --------------------------------------------------------------------------------------------------------------------


def _mode_image(mode: str) -> Image.Image:
    size = (37, 23)
    if mode == "P+transparency":
        im = Image.new("P", size, 1)
        im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
        im.info["transparency"] = 0
        return im
    if mode == "I":
        return Image.fromarray(np.arange(37 * 23, dtype=np.int32).reshape(23, 37) * 1000)
    if mode == "F":
        return Image.fromarray(np.linspace(-1.0, 1.0, 37 * 23, dtype=np.float32).reshape(23, 37))
    return Image.new(mode, size)


@pytest.mark.parametrize(
    "mode",
    ["P", "P+transparency", "RGBA", "LA", "PA", "RGBa", "CMYK", "YCbCr", "LAB", "HSV", "I;16", "I;16B", "I"]
    + ["F", "1", "L", "RGB", "RGBX"],
)
def test_every_mode_loads_as_rgb_of_the_same_size(mode: str) -> None:
    img = load_image(_mode_image(mode))
    assert img.mode == "RGB"
    assert img.size == (37, 23)


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("P", "PNG"), ("RGBA", "PNG"), ("LA", "PNG"), ("I;16", "PNG")]
    + [("1", "PNG"), ("L", "PNG"), ("CMYK", "JPEG"), ("CMYK", "TIFF"), ("F", "TIFF"), ("I", "TIFF"), ("YCbCr", "TIFF")],
)
def test_modes_stored_in_files_load_as_rgb(tmp_path: Path, mode: str, fmt: str) -> None:
    path = tmp_path / f"image.{fmt.lower()}"
    _mode_image(mode).save(path, fmt)
    with Image.open(path) as check:
        assert check.mode == mode  # the file really holds the mode under test
    img = load_image(path)
    assert (img.mode, img.size) == ("RGB", (37, 23))


def test_transparent_rgba_pixels_become_white_and_half_alpha_blends_onto_white() -> None:
    im = Image.new("RGBA", (4, 1), (0, 0, 0, 0))
    im.putpixel((1, 0), (255, 0, 0, 255))
    im.putpixel((2, 0), (255, 0, 0, 128))
    img = load_image(im)
    assert img.getpixel((0, 0)) == WHITE
    assert img.getpixel((1, 0)) == RED
    assert _close(img.getpixel((2, 0)), (255, 127, 127), tol=2)


def test_palette_transparency_and_la_alpha_become_white(tmp_path: Path) -> None:
    p = _mode_image("P+transparency")
    p.putpixel((0, 0), 0)
    path = tmp_path / "p.png"
    p.save(path)
    img = load_image(path)
    assert img.getpixel((0, 0)) == WHITE
    assert img.getpixel((1, 0)) == RED
    la = Image.new("LA", (2, 1), (0, 0))
    la.putpixel((1, 0), (0, 255))
    assert load_image(la).getpixel((0, 0)) == WHITE
    assert load_image(la).getpixel((1, 0)) == (0, 0, 0)


def test_sixteen_bit_keeps_the_high_byte_and_float_is_stretched_over_its_range(tmp_path: Path) -> None:
    arr16 = np.array([[0, 0x00FF, 0xABCD, 0xFFFF]], dtype=np.uint16)
    path = tmp_path / "sixteen.png"
    Image.fromarray(arr16).save(path)
    img = load_image(path)
    assert [img.getpixel((x, 0))[0] for x in range(4)] == [0x00, 0x00, 0xAB, 0xFF]
    big_endian = Image.fromarray(arr16).convert("I").convert("I;16B")
    assert [load_image(big_endian).getpixel((x, 0))[0] for x in range(4)] == [0x00, 0x00, 0xAB, 0xFF]
    floats = Image.fromarray(np.array([[-2.0, 0.0, 2.0]], dtype=np.float32))
    assert [load_image(floats).getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (128, 128, 128), WHITE]


def test_a_pil_input_is_not_modified_and_an_rgb_upright_one_is_returned_as_is() -> None:
    rgba = Image.new("RGBA", (5, 5), (0, 0, 0, 0))
    load_image(rgba)
    assert rgba.mode == "RGBA" and rgba.getpixel((0, 0)) == (0, 0, 0, 0)
    rgb = Image.new("RGB", (5, 5), RED)
    assert load_image(rgb) is rgb


# --------------------------------------------------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "ext"),
    [("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp"), ("BMP", "bmp")] + [("GIF", "gif"), ("TIFF", "tiff")],
)
def test_each_format_loads_with_its_colour(tmp_path: Path, fmt: str, ext: str) -> None:
    path = tmp_path / f"green.{ext}"
    Image.new("RGB", (30, 20), GREEN).save(path, fmt)
    img = load_image(path)
    assert (img.mode, img.size) == ("RGB", (30, 20))
    assert _close(img.getpixel((15, 10)), GREEN)
    assert probe_image(path) == (fmt, 30, 20)


@pytest.mark.parametrize(
    ("fmt", "ext", "options"), [("GIF", "gif", {}), ("WEBP", "webp", {"lossless": True})] + [("TIFF", "tiff", {})]
)
def test_animated_and_multi_page_files_give_their_first_frame(
    tmp_path: Path, fmt: str, ext: str, options: dict
) -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in (RED, GREEN, BLUE)]
    path = tmp_path / f"anim.{ext}"
    frames[0].save(path, fmt, save_all=True, append_images=frames[1:], duration=100, **options)
    with Image.open(path) as check:
        assert getattr(check, "n_frames", 1) == 3
    img = load_image(path)
    assert img.mode == "RGB"
    assert _close(img.getpixel((8, 8)), RED)


@pytest.mark.parametrize("name", ["photo.png", "photo"])
def test_a_jpeg_with_a_wrong_or_no_extension_still_loads(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    Image.new("RGB", (20, 10), BLUE).save(path, "JPEG")
    assert probe_image(path) == ("JPEG", 20, 10)
    img = load_image(path)
    assert img.size == (20, 10) and _close(img.getpixel((10, 5)), BLUE)


def test_bytes_input_loads_like_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    data = _noise_jpeg(path, (40, 30))
    assert np.array_equal(np.asarray(load_image(data)), np.asarray(load_image(path)))


def test_a_real_caltech_photo_loads_and_draft_mode_keeps_the_short_side() -> None:
    data = (SAMPLE_PHOTOS / "airplanes" / "image_0001.jpg").read_bytes()  # an unmodified Caltech-101 file
    with Image.open(io.BytesIO(data)) as header:
        size = header.size
    img = load_image(data)
    assert img.mode == "RGB" and img.size == size
    small = load_image(data, min_side=64)
    assert min(small.size) >= 64 and small.size[0] <= size[0]


# --------------------------------------------------------------------------------------------------------------------
# EXIF orientation and draft mode
# --------------------------------------------------------------------------------------------------------------------


def _save_with_orientation(img: Image.Image, path: Path, orientation: int) -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    img.save(path, "JPEG", exif=exif, quality=95)


@pytest.mark.parametrize(
    ("orientation", "red_corner"),
    # 6: the camera was turned clockwise, so display rotates 90 deg clockwise: stored top-left goes top-right.
    # 8: the other way round: stored top-left goes bottom-left.
    [(6, "top-right"), (8, "bottom-left"), (1, "top-left"), (3, "bottom-right")],
)
def test_exif_orientation_rotates_in_the_right_direction(tmp_path: Path, orientation: int, red_corner: str) -> None:
    path = tmp_path / "rotated.jpg"
    _save_with_orientation(_marked((80, 40)), path, orientation)
    img = load_image(path)
    width, height = img.size
    assert (width, height) == ((40, 80) if orientation in (6, 8) else (80, 40))
    corners = {
        "top-left": (2, 2),
        "top-right": (width - 3, 2),
        "bottom-left": (2, height - 3),
        "bottom-right": (width - 3, height - 3),
    }
    for name, xy in corners.items():
        assert _close(img.getpixel(xy), RED if name == red_corner else BLUE, tol=40), name
    assert probe_image(path)[1:] == (width, height)  # the probe reports the displayed size, as load_image gives


def test_exif_orientation_is_applied_to_a_pil_input_without_changing_it(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    _save_with_orientation(_marked((80, 40)), path, 6)
    with Image.open(path) as opened:
        img = load_image(opened)
        assert opened.size == (80, 40)
    assert img.size == (40, 80)


@pytest.mark.parametrize(
    ("size", "min_side", "expected"),
    # libjpeg scales by 1/2, 1/4 or 1/8; the largest reduction that keeps the short side >= min_side is expected.
    [((1600, 1200), 224, (400, 300)), ((1000, 3001), 250, (250, 751)), ((1792, 1792), 224, (224, 224))],
)
def test_draft_mode_decodes_a_large_jpeg_smaller_but_never_below_min_side(
    tmp_path: Path, size: tuple[int, int], min_side: int, expected: tuple[int, int]
) -> None:
    path = tmp_path / "large.jpg"
    Image.new("RGB", size, GREEN).save(path, "JPEG")
    img = load_image(path, min_side=min_side)
    assert img.mode == "RGB"
    assert min(img.size) >= min_side
    assert img.size == expected


def test_draft_mode_with_exif_rotation_keeps_the_short_side(tmp_path: Path) -> None:
    path = tmp_path / "portrait.jpg"
    _save_with_orientation(_marked((1600, 1000)), path, 6)
    img = load_image(path, min_side=224)
    assert img.size[0] < img.size[1]  # rotated to portrait
    assert 224 <= min(img.size) < 1000


def test_draft_mode_leaves_small_jpegs_and_other_formats_at_full_size(tmp_path: Path) -> None:
    Image.new("RGB", (300, 200), GREEN).save(tmp_path / "small.jpg")
    Image.new("RGB", (1600, 1200), GREEN).save(tmp_path / "large.png")
    assert load_image(tmp_path / "small.jpg", min_side=224).size == (300, 200)
    assert load_image(tmp_path / "large.png", min_side=224).size == (1600, 1200)
    with pytest.raises(ValueError, match="min_side"):
        load_image(tmp_path / "small.jpg", min_side=0)
