"""Tests for simsearch.files and simsearch.images: scanning, hashing, probing, decoding every mode/format, and the
failure reasons."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE_PHOTOS
from PIL import ExifTags, Image

from simsearch.errors import ImageError
from simsearch.images import (
    DEFAULT_MAX_PIXELS,
    THUMBNAIL_SIZE,
    file_sha256,
    load_image,
    make_thumbnail,
    probe_image,
    scan_folder,
)

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)


def _close(actual: tuple[int, ...], expected: tuple[int, ...], tol: int = 12) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected, strict=True))


def _noise_jpeg(path: Path, size: tuple[int, int], seed: int = 0) -> bytes:
    """A JPEG of random blocks (noise compresses badly, so cutting it in half really cuts image data)."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, "JPEG", quality=90)
    return path.read_bytes()


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


# --------------------------------------------------------------------------------------------------------------------
# Failures
# --------------------------------------------------------------------------------------------------------------------


def _corrupt_file(tmp_path: Path, kind: str) -> Path:
    if kind == "empty":
        path = tmp_path / "empty.jpg"
        path.write_bytes(b"")
    elif kind == "text":
        path = tmp_path / "notes.png"
        path.write_text("these are not the pixels you are looking for\n")
    elif kind == "random":
        path = tmp_path / "random.jpg"
        path.write_bytes(np.random.default_rng(1).bytes(4096))
    elif kind == "header-only png":
        path = tmp_path / "header.png"
        Image.new("RGB", (64, 64), RED).save(path)
        data = path.read_bytes()
        path.write_bytes(data[: data.index(b"IDAT") - 4])  # signature + IHDR, no pixel data
    elif kind == "truncated jpeg":
        path = tmp_path / "cut.jpg"
        data = _noise_jpeg(path, (300, 200))
        path.write_bytes(data[: len(data) // 2])
    else:
        raise AssertionError(kind)
    return path


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("empty", "empty file"),
        ("text", "not an image"),
        ("random", "not an image"),
        ("header-only png", "corrupt PNG"),
        ("truncated jpeg", "truncated image file"),
    ],
)
def test_corrupt_inputs_raise_image_error_with_a_reason(tmp_path: Path, kind: str, reason: str) -> None:
    path = _corrupt_file(tmp_path, kind)
    with pytest.raises(ImageError, match=reason):
        load_image(path)
    with pytest.raises(ImageError, match=reason):
        load_image(path.read_bytes())
    if kind != "truncated jpeg":  # a truncated body has a valid header: only decoding can tell
        with pytest.raises(ImageError, match=reason):
            probe_image(path)


def test_a_missing_file_or_a_folder_raises_image_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="cannot read file"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="cannot read file"):
        probe_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="not a file"):
        load_image(tmp_path)


def test_truncated_images_are_still_reported_after_loading_others(tmp_path: Path) -> None:
    from PIL import ImageFile

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # the module must not switch Pillow to silent grey padding
    with pytest.raises(ImageError, match="truncated"):
        load_image(_corrupt_file(tmp_path, "truncated jpeg"))


def test_pixel_limit_refuses_large_images_in_probe_and_load(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 80), GREEN).save(path)
    message = r"image too large: 8,000 pixels > limit 5,000"
    with pytest.raises(ImageError, match=message):
        probe_image(path, max_pixels=5_000)
    with pytest.raises(ImageError, match=message):
        load_image(path, max_pixels=5_000)
    with pytest.raises(ImageError, match=message):
        load_image(Image.open(path), max_pixels=5_000)
    assert load_image(path, max_pixels=8_000).size == (100, 80)
    assert DEFAULT_MAX_PIXELS == 100_000_000


@pytest.mark.parametrize("pillow_limit", [3_000, 1_000])  # warning zone (> limit) and error zone (> 2 x limit)
def test_pillow_global_guard_does_not_fire_before_our_own_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pillow_limit: int
) -> None:
    path = tmp_path / "legit.png"
    Image.new("RGB", (80, 50), GREEN).save(path)  # 4,000 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow_limit)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert probe_image(path, max_pixels=10_000) == ("PNG", 80, 50)
        assert load_image(path, max_pixels=10_000).size == (80, 50)
    assert Image.MAX_IMAGE_PIXELS == pillow_limit  # any temporary change was undone
    with pytest.raises(ImageError, match="image too large: 4,000 pixels > limit 1,500"):
        load_image(path, max_pixels=1_500)


# --------------------------------------------------------------------------------------------------------------------
# Scanning, hashing, thumbnails
# --------------------------------------------------------------------------------------------------------------------


def test_scan_folder_recurses_sorted_skips_hidden_and_includes_non_images(tmp_path: Path) -> None:
    for rel in ["b.jpg", "a/z.png", "a/y/readme.txt", "c", "a.txt", ".hidden.jpg", ".git/x.jpg", "a/.cache/x.jpg"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = list(scan_folder(tmp_path))
    assert all(p.is_absolute() for p in found)
    rels = [p.relative_to(tmp_path.resolve()).as_posix() for p in found]
    assert rels == ["a/y/readme.txt", "a/z.png", "a.txt", "b.jpg", "c"]
    assert found == list(scan_folder(str(tmp_path)))


def test_scan_folder_includes_symlinked_files_but_not_symlinked_folders(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "real.jpg").write_bytes(b"x")
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"x")
    try:
        (root / "link.jpg").symlink_to(outside)
        (root / "loop").symlink_to(root, target_is_directory=True)
        (root / "broken.jpg").symlink_to(tmp_path / "nowhere")
    except OSError as exc:
        pytest.skip(f"symlinks not supported here: {exc}")
    with caplog.at_level(logging.WARNING, logger="simsearch.files"):
        rels = [p.relative_to(root.resolve()).as_posix() for p in scan_folder(root)]
    assert rels == ["link.jpg", "sub/real.jpg"]
    assert "not following" in caplog.text and "loop" in caplog.text  # skipped, but not silently


def test_scan_folder_rejects_a_missing_root_and_a_file_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="folder not found"):
        list(scan_folder(tmp_path / "missing"))
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        list(scan_folder(tmp_path / "file.jpg"))


@pytest.mark.parametrize("size", [0, 10, (1 << 20) * 2 + 17])
def test_file_sha256_equals_hashlib_on_the_bytes(tmp_path: Path, size: int) -> None:
    data = np.random.default_rng(size).bytes(size)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("size", "expected"), [((1000, 500), (256, 128)), ((300, 900), (85, 256)), ((50, 40), (50, 40))]
)
def test_make_thumbnail_gives_jpeg_with_longest_side_at_most_256_and_the_aspect_kept(
    size: tuple[int, int], expected: tuple[int, int]
) -> None:
    img = Image.new("RGB", size, RED)
    data = make_thumbnail(img)
    assert data[:3] == b"\xff\xd8\xff"
    with Image.open(io.BytesIO(data)) as thumb:
        assert thumb.format == "JPEG" and thumb.mode == "RGB"
        assert thumb.size == expected
        assert max(thumb.size) <= THUMBNAIL_SIZE
    assert img.size == size  # the input is not shrunk in place


def test_make_thumbnail_accepts_other_modes_and_sizes() -> None:
    rgba = Image.new("RGBA", (400, 100), (0, 0, 0, 0))
    with Image.open(io.BytesIO(make_thumbnail(rgba, max_side=64, quality=70))) as thumb:
        assert thumb.size == (64, 16)
        assert _close(thumb.getpixel((32, 8)), WHITE, tol=3)


# ---------------------------------------------------------------------------------------------------------------------
# Only regular files are read: a named pipe or a device would hang a reader or feed it endless bytes.
# ---------------------------------------------------------------------------------------------------------------------


def _in_thread_with_timeout(fn, seconds: float = 10.0):
    """Run `fn` in a daemon thread; a regression that blocks fails the test instead of hanging the suite."""
    import threading

    outcome: dict[str, object] = {}

    def run():
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{fn} blocked for {seconds} s"
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome.get("value")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need a POSIX system")
def test_a_named_pipe_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    for read in (lambda: load_image(fifo), lambda: probe_image(fifo), lambda: file_sha256(fifo)):
        with pytest.raises(ImageError, match="not a regular file \\(a named pipe\\)"):
            _in_thread_with_timeout(read)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero on this system")
def test_a_link_to_a_device_is_refused(tmp_path):
    link = tmp_path / "zero.jpg"
    link.symlink_to("/dev/zero")
    with pytest.raises(ImageError, match="a device"):
        _in_thread_with_timeout(lambda: load_image(link))
    with pytest.raises(ImageError, match="a device"):
        _in_thread_with_timeout(lambda: file_sha256(link))


def test_an_int_is_not_read_as_a_file_descriptor():
    with pytest.raises(ImageError, match="not a file path: int"):
        load_image(0)  # type: ignore[arg-type]


def test_a_file_over_the_byte_limit_is_refused_before_decoding(tmp_path):
    from simsearch.images import open_regular_file

    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff\xd8\xff" + b"\0" * 100)
    with pytest.raises(ImageError, match="file too large: 103 bytes \\(limit 50\\)"):
        open_regular_file(big, max_bytes=50)
