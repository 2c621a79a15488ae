"""Image files in, RGB pixels out: probing, decoding and thumbnails (folder scanning, content hashing and safe opening
are `simsearch.files`, re-exported here).

Every unreadable image becomes an `ImageError` with a one-line reason, so callers can skip it and go on.
"""

from __future__ import annotations

import io
import logging
import os
import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from simsearch.errors import ImageError
from simsearch.files import MAX_FILE_BYTES, file_sha256, open_regular_file, scan_folder, special_kind

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MAX_FILE_BYTES",
    "EMPTY_FILE",
    "NOT_AN_IMAGE",
    "THUMBNAIL_SIZE",
    "file_sha256",
    "load_image",
    "make_thumbnail",
    "open_regular_file",
    "probe_image",
    "scan_folder",
    "special_kind",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS: int = 100_000_000
THUMBNAIL_SIZE: int = 256
#: The reason given for a file that no image format recognises (as opposed to a damaged image of a known format).
NOT_AN_IMAGE = "not an image"
#: The reason given for a file of no bytes at all.
EMPTY_FILE = "empty file"

_WHITE = (255, 255, 255)
_JPEG_FORMATS = frozenset({"JPEG", "MPO"})
# Modes that carry an alpha channel; they are composited onto white, the usual page/viewer background.
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
# Leading bytes of common formats: lets a corrupt header say "corrupt PNG" instead of "not an image".
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
_BOMB_PIXELS_RE = re.compile(r"\((\d+) pixels\)")
# Serialises the rare temporary raise of Pillow's global limit so concurrent calls restore it correctly.
_PILLOW_LIMIT_LOCK = threading.Lock()

ImageSource = str | os.PathLike | bytes | bytearray | memoryview | Image.Image


# --------------------------------------------------------------------------------------------------------------------
# Probing and decoding
# --------------------------------------------------------------------------------------------------------------------


_EXIF_ORIENTATION = 0x0112


def probe_image(
    path: str | os.PathLike | bytes | bytearray | memoryview, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[str, int, int]:
    """Read only the header of a file (or of encoded bytes): `(format, width, height)`, e.g. `("JPEG", 4000, 3000)`.

    The size is the displayed one: an EXIF orientation of 5-8 (a quarter turn) swaps width and height, as
    `load_image` will. Cheap enough to call on every scanned file: the EXIF block is in the header.

    Raises:
        ImageError: empty, unreadable, not an image, or more than `max_pixels` pixels.
    """
    with _open_source(path) as fp, _opened_image(fp, max_pixels) as im:
        width, height = im.width, im.height
        try:
            if im.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
                width, height = height, width
        except Exception:  # noqa: BLE001 - a broken EXIF block must not lose a good image; load_image ignores it too
            pass
        return str(im.format), width, height


def load_image(
    source: ImageSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int | None = None,
) -> Image.Image:
    """Decode an image fully into an upright 8-bit RGB image.

    EXIF orientation is applied; alpha is composited onto white; palette, CMYK, YCbCr, LAB, HSV, bilevel and grey
    become RGB; multi-frame files (animated GIF/WebP, multi-page TIFF) give their first frame. 16-bit modes (`I;16*`)
    keep their top 8 bits: the format declares the full scale, so brightness stays absolute and an 8-bit image saved
    as 16-bit gives back the very same pixels. `I` (32-bit) and `F` (float) declare no full scale, so they are
    stretched over their actual range.

    Args:
        source: a path, the file's bytes, or an already opened PIL image (converted the same way, never modified;
            returned as is when it is already RGB and upright).
        max_pixels: images with more pixels (width x height from the header) are refused before decoding.
        min_side: when given, a JPEG is decoded by libjpeg at 1/2, 1/4 or 1/8 scale (draft mode), the largest
            reduction that keeps both sides >= `min_side`; many times faster for big photos that will be resized
            down anyway. Other formats, and PIL inputs, ignore it.

    Raises:
        ImageError: empty, unreadable, not an image, truncated, corrupt, or over `max_pixels`.
    """
    if min_side is not None and min_side < 1:
        raise ValueError(f"min_side must be a positive number of pixels, got {min_side}")
    if isinstance(source, Image.Image):
        _check_pixels(source.size, max_pixels)
        try:
            return _to_rgb(_upright(source, owned=False))
        except ImageError:
            raise
        except Exception as exc:
            raise ImageError(_decode_reason(exc)) from exc

    with _open_source(source) as fp, _opened_image(fp, max_pixels) as im:
        try:
            if min_side is not None and im.format in _JPEG_FORMATS:
                # draft() keeps scale s only while size // s >= requested size on both axes, so asking for a square
                # of min_side keeps the short side >= min_side; a uniform scale makes EXIF rotation irrelevant here.
                im.draft("RGB", (min_side, min_side))
            im.load()
            return _to_rgb(_upright(im, owned=True))
        except ImageError:
            raise
        except Exception as exc:  # Pillow's decoders raise many types (OSError, SyntaxError, ValueError, ...)
            raise ImageError(_decode_reason(exc)) from exc


def make_thumbnail(img: Image.Image, max_side: int = THUMBNAIL_SIZE, quality: int = 85) -> bytes:
    """JPEG bytes of `img` shrunk so that its longest side is at most `max_side`, aspect ratio kept.

    Images already small enough are only re-encoded (never enlarged). Non-RGB inputs go through the same conversion
    as `load_image` (alpha onto white, EXIF orientation), and `img` itself is never modified.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    rgb = load_image(img, max_pixels=max(DEFAULT_MAX_PIXELS, img.width * img.height))
    width, height = rgb.size
    if max(width, height) > max_side:
        scale = max_side / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        # Pillow's box filter is an area average over each output pixel (what other libraries call "area"
        # resampling, their usual choice for shrinking): at preview size it looks as bicubic does, for 0.4 ms a
        # photo where bicubic took 1.0 (Caltech-101, 2 cores), paid on every file indexed.
        rgb = rgb.resize(size, Image.Resampling.BOX)
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=quality)
    return out.getvalue()


# --------------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------------


@contextmanager
def _open_source(source: str | os.PathLike | bytes | bytearray | memoryview) -> Iterator[IO[bytes]]:
    """A binary file object for a path or bytes; we own it (and close it), so Pillow never keeps a handle open."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError(EMPTY_FILE)
        yield io.BytesIO(source)
        return
    f = open_regular_file(source)
    try:
        if os.fstat(f.fileno()).st_size == 0:
            raise ImageError(EMPTY_FILE)
        yield f
    finally:
        f.close()


@contextmanager
def _opened_image(fp: IO[bytes], max_pixels: int) -> Iterator[Image.Image]:
    """Open (header only) under our own pixel limit, mapping every failure to an ImageError."""
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
    try:
        with _pillow_limit_at_least(max_pixels):
            im = Image.open(fp)
    except UnidentifiedImageError as exc:
        raise ImageError(_unidentified_reason(fp)) from exc
    except Image.DecompressionBombError as exc:
        match = _BOMB_PIXELS_RE.search(str(exc))
        pixels = f"{int(match.group(1)):,}" if match else "too many"
        raise ImageError(f"image too large: {pixels} pixels > limit {max_pixels:,}") from exc
    except Exception as exc:  # plugins may raise OSError, ValueError, EOFError... on a damaged header
        raise ImageError(_decode_reason(exc)) from exc
    # ImageFile.__exit__ only drops the file reference (the caller closes the file): a returned image stays usable.
    with im:
        _check_pixels(im.size, max_pixels)
        yield im


@contextmanager
def _pillow_limit_at_least(max_pixels: int) -> Iterator[None]:
    """Keep Pillow's global bomb guard from refusing an image that our own `max_pixels` allows.

    Pillow warns above `Image.MAX_IMAGE_PIXELS` (~89.5 M) and raises above twice that. The warning is silenced here
    (our own check follows right after the header is read). Pillow's hard limit is only raised, temporarily and under
    a lock, when a caller asks for more than it allows; the default of 100 M never touches the global.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        pillow_max = Image.MAX_IMAGE_PIXELS
        if pillow_max is None or 2 * pillow_max >= max_pixels:
            yield
            return
        with _PILLOW_LIMIT_LOCK:
            saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = max_pixels
            try:
                yield
            finally:
                Image.MAX_IMAGE_PIXELS = saved


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    pixels = size[0] * size[1]
    if pixels > max_pixels:
        raise ImageError(f"image too large: {pixels:,} pixels > limit {max_pixels:,}")


def _unidentified_reason(fp: IO[bytes]) -> str:
    """Tell a damaged file of a known format from a file that is no image at all."""
    try:
        fp.seek(0)
        head = fp.read(16)
    except OSError:
        return NOT_AN_IMAGE
    for signature, fmt in _SIGNATURES:
        if head.startswith(signature):
            return f"corrupt {fmt} header"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "corrupt WEBP header"
    return NOT_AN_IMAGE


def _decode_reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "truncated" in text.lower():
        return "truncated image file"
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot read file: {exc.strerror}"
    return f"cannot decode image: {text}"


def _upright(im: Image.Image, *, owned: bool) -> Image.Image:
    """Apply the EXIF orientation; in place for images we opened ourselves, on a new image for a caller's one."""
    try:
        orientation = im.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception as exc:  # a broken EXIF block should not cost us otherwise good pixels
        logger.debug("ignoring unreadable EXIF: %s", exc)
        return im
    if orientation not in (2, 3, 4, 5, 6, 7, 8):
        return im
    if owned:
        ImageOps.exif_transpose(im, in_place=True)
        return im
    return ImageOps.exif_transpose(im)


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any mode to 8-bit RGB with a single new image in the common cases."""
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        im.load()
        return im
    if mode in _SIXTEEN_BIT_MODES:
        return _grey_to_rgb(np.asarray(im) >> 8)
    if mode in ("I", "F"):
        return _grey_to_rgb(_stretch(np.asarray(im)))
    if mode in _ALPHA_MODES or "transparency" in im.info:
        # paste() takes RGBA and LA straight into an RGB canvas; other alpha forms need RGBA first.
        rgba = im if mode in ("RGBA", "LA") else im.convert("RGBA")
        canvas = Image.new("RGB", im.size, _WHITE)
        canvas.paste(rgba, mask=rgba)
        return canvas
    try:
        return im.convert("RGB")
    except ValueError as exc:
        raise ImageError(f"unsupported image mode {mode}") from exc


def _stretch(values: np.ndarray) -> np.ndarray:
    """Map the finite range of a 32-bit int or float image onto 0..255 (constant images keep their clipped value)."""
    values = values.astype(np.float32, copy=False)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, np.uint8)
    lo, hi = float(values[finite].min()), float(values[finite].max())
    if hi > lo:
        values = (values - lo) * (255.0 / (hi - lo))
    values = np.nan_to_num(values, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(values + 0.5, 0, 255).astype(np.uint8)


def _grey_to_rgb(grey: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(grey, dtype=np.uint8)).convert("RGB")
