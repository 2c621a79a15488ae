"""What the image reader refuses and how: corrupt, missing, truncated and oversized images with a reason, and only
regular files read (no pipe, device or file descriptor)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from image_helpers import GREEN, RED, _noise_jpeg
from PIL import Image

from simsearch.errors import ImageError
from simsearch.images import DEFAULT_MAX_PIXELS, file_sha256, load_image, probe_image

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
