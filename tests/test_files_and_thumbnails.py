"""Tests for simsearch.files and the thumbnails: scanning folders, hashing files, making JPEG previews."""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path

import numpy as np
import pytest
from image_helpers import RED, WHITE, _close
from PIL import Image

from simsearch.images import THUMBNAIL_SIZE, file_sha256, make_thumbnail, scan_folder

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
