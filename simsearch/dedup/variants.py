"""Seeded near-duplicate variants of real photos: what a photo becomes after being re-shared, edited or screenshot.

Calibration (`simsearch calibrate --variants`) and the near-duplicate benchmark both make their "same item" pairs
here, so a threshold is fitted on exactly the kind of change it is scored on. Every transform is drawn from a
`numpy.random.Generator`, so a seed gives the same variants on every machine.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

__all__ = ["TRANSFORMS", "make_variant", "make_variants", "save_jpeg"]

Transform = Callable[[Image.Image, np.random.Generator], tuple[Image.Image, str]]

#: Quality of the JPEG a variant is saved as (the `jpeg` transform re-encodes far lower on purpose).
SAVE_QUALITY = 90
_WORDS = ("SALE", "holiday 2019", "© photo club", "IMG_2041", "best shot", "draft", "shared via app", "#travel")


def save_jpeg(image: Image.Image, quality: int = SAVE_QUALITY) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _jpeg(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    quality = int(rng.integers(15, 36))
    with Image.open(io.BytesIO(save_jpeg(image, quality))) as out:
        return out.convert("RGB"), f"jpeg q{quality}"


def _resize(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    scale = float(rng.uniform(0.4, 0.6))
    size = (max(16, round(image.width * scale)), max(16, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR), f"resize x{scale:.2f}"


def _crop(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """Remove 10-30% of the area, more from some sides than others (a re-framed photo, not a centred zoom)."""
    keep = float(np.sqrt(1.0 - rng.uniform(0.10, 0.30)))  # linear fraction kept on each axis
    w, h = image.size
    cw, ch = max(8, round(w * keep)), max(8, round(h * keep))
    left = int(rng.integers(0, w - cw + 1))
    top = int(rng.integers(0, h - ch + 1))
    return image.crop((left, top, left + cw, top + ch)), f"crop {100 * (1 - keep * keep):.0f}%"


def _flip(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    return ImageOps.mirror(image), "mirror"


def _rotate(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """Rotate by 2-10 degrees either way, then crop the largest centred box free of the blank corners."""
    angle = float(rng.uniform(2.0, 10.0)) * (1 if rng.random() < 0.5 else -1)
    rotated = image.rotate(angle, resample=Image.Resampling.BILINEAR, expand=False)
    w, h = image.size
    a = np.deg2rad(abs(angle))
    # The centred box of the same aspect ratio that fits inside the rotated frame.
    scale = 1.0 / (np.cos(a) + np.sin(a) * max(w / h, h / w))
    cw, ch = max(8, int(w * scale)), max(8, int(h * scale))
    left, top = (w - cw) // 2, (h - ch) // 2
    return rotated.crop((left, top, left + cw, top + ch)), f"rotate {angle:+.1f}°"


def _colour(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    brightness = float(rng.uniform(0.7, 1.35))
    saturation = float(rng.uniform(0.6, 1.4))
    contrast = float(rng.uniform(0.8, 1.2))
    out = ImageEnhance.Brightness(image).enhance(brightness)
    out = ImageEnhance.Color(out).enhance(saturation)
    out = ImageEnhance.Contrast(out).enhance(contrast)
    return out, f"colour b{brightness:.2f} s{saturation:.2f} c{contrast:.2f}"


def _text(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """A caption in a corner or across the bottom, in white with a dark outline, as editors and apps add them."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    words = str(rng.choice(_WORDS))
    size = max(10, round(min(image.size) * float(rng.uniform(0.08, 0.14))))
    font = ImageFont.load_default(size=size)
    left, top, right, bottom = draw.textbbox((0, 0), words, font=font, stroke_width=2)
    x = int(rng.integers(0, max(1, int(image.width - (right - left)))))
    y = int(rng.integers(0, max(1, int(image.height - (bottom - top)))))
    draw.text((x, y), words, font=font, fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0))
    return out, f"text '{words}'"


#: Name -> transform; each takes an RGB image and a generator and returns the variant and a short description.
TRANSFORMS: dict[str, Transform] = {
    "jpeg": _jpeg,
    "resize": _resize,
    "crop": _crop,
    "mirror": _flip,
    "rotate": _rotate,
    "colour": _colour,
    "text": _text,
}


def make_variant(image: Image.Image, name: str, rng: np.random.Generator) -> tuple[bytes, str]:
    """One variant of `image` by the transform `name`, as JPEG bytes, and its description."""
    out, description = TRANSFORMS[name](image.convert("RGB"), rng)
    quality = None if name != "jpeg" else 100  # the low-quality look is already baked in; keep it as it is
    return save_jpeg(out, quality or SAVE_QUALITY), description


def make_variants(
    image: Image.Image, count: int, rng: np.random.Generator, names: Sequence[str] | None = None
) -> list[tuple[bytes, str]]:
    """`count` variants of `image`, each by a different transform drawn from `names` (default: all)."""
    pool = list(names or TRANSFORMS)
    chosen = rng.choice(len(pool), size=min(count, len(pool)), replace=False)
    return [make_variant(image, pool[int(i)], rng) for i in chosen]
