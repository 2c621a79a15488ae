"""The reliability suite's fuzz corpus, made on the fly from a few good photos: damaged files (truncated, bit-flipped,
empty, text, random bytes, decompression bombs), odd image modes and formats, odd file modes and names (bytes that
are not UTF-8, newlines, very long names), special files (named pipes, sockets, dangling and looping links, links to
devices), deep folders and folders named like images. Each entry says what indexing must do with it."""

from __future__ import annotations

import base64
import io
import os
import random
import shutil
import socket
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: What indexing must do with an entry: index it ("good"), skip and count it ("bad": damaged or no image; "special":
#: no regular file), leave it out ("excluded": hidden files, left out silently like any dotfile), or index or skip it
#: ("either": a damaged file that may still decode, a link to a photo).
EXPECTATIONS = ("good", "bad", "special", "excluded", "either")
#: Nested folders of the deep chains.
DEPTH = 60
#: The decompression bomb's side: 25,000^2 = 625 M pixels, beyond the default pixel limit, in under 1 MB.
BOMB_SIDE = 25_000


@dataclass
class Corpus:
    """The generated entries by expectation: paths as bytes (names need not be UTF-8), and a count per category."""

    root: Path
    entries: dict[str, list[bytes]] = field(default_factory=lambda: {e: [] for e in EXPECTATIONS})
    categories: dict[str, int] = field(default_factory=dict)

    def add(self, category: str, expect: str, path: bytes) -> None:
        self.entries[expect].append(path)
        self.categories[category] = self.categories.get(category, 0) + 1

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.entries.values())


def _encode(image: object, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)  # type: ignore[attr-defined]
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(side: int, *, rows: int | None = None) -> bytes:
    """A grey PNG that declares `side` x `side` pixels: all of them as compressed zeros (`rows` None, a real bomb:
    a few hundred KB that decode to side^2 bytes), or only the first `rows` rows (a header that lies)."""
    header = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
    compressor = zlib.compressobj(9)
    line = b"\0" * (side + 1)  # filter byte + one row
    body = b"".join(compressor.compress(line) for _ in range(side if rows is None else rows)) + compressor.flush()
    return header + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


def _modes(photo: Path) -> dict[str, bytes]:
    """The photo in odd image modes and formats that are still images (each must be indexed)."""
    from PIL import Image

    with Image.open(photo) as im:
        rgb = im.convert("RGB")
    small = rgb.resize((max(1, rgb.width // 2), max(1, rgb.height // 2)))
    return {
        "rgba.png": _encode(rgb.convert("RGBA"), "PNG"),
        "palette.png": _encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        "grey.jpg": _encode(rgb.convert("L"), "JPEG"),
        "cmyk.jpg": _encode(rgb.convert("CMYK"), "JPEG"),
        "deep16.png": _encode(rgb.convert("L").point(lambda v: v * 256, "I").convert("I;16"), "PNG"),
        "bilevel.png": _encode(rgb.convert("1"), "PNG"),
        "grey_alpha.png": _encode(rgb.convert("LA"), "PNG"),
        "progressive.jpg": _encode(rgb, "JPEG", progressive=True, quality=70),
        "image.webp": _encode(rgb, "WEBP"),
        "image.gif": _encode(rgb, "GIF"),
        "image.bmp": _encode(small, "BMP"),
        "image.tiff": _encode(small, "TIFF"),
    }


def _odd_names(i: int) -> list[bytes]:
    """File names that a shell script or a careless tool would trip over; all are images."""
    return [
        b"caf\xe9_%d.jpg" % i,  # Latin-1, not UTF-8
        b"\xff\xfe_%d.jpg" % i,
        b"line\nbreak_%d.jpg" % i,
        b"tab\there_%d.jpg" % i,
        b"-dash_%d.jpg" % i,
        b"  spaces  %d .jpg" % i,
        f"e\u0301t\u00e9_{i}.jpg".encode(),  # a decomposed and a composed accent
        f"\U0001f4f7_{i}.jpg".encode(),
        b"UPPER_%d.JPG" % i,
        b"no_extension_%d" % i,
        b"wrong_%d.png" % i,  # a JPEG named .png
        b"x" * 200 + b"_%d.jpg" % i,
        b"back\\slash_%d.jpg" % i,
        b"quote'\"_%d.jpg" % i,
        b"ansi\x1b[31mred_%d.jpg" % i,
    ]


def build_corpus(root: Path, photos: Sequence[Path], n_files: int, seed: int) -> Corpus:
    """At least `n_files` entries under `root` (made empty first), from `photos` (JPEGs): about two thirds are
    truncated or bit-flipped copies, the rest every other kind above in fixed small numbers."""
    rng = random.Random(seed)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    corpus = Corpus(root)
    base = os.fsencode(root)
    originals = [p.read_bytes() for p in photos]

    def put(category: str, expect: str, rel: bytes, data: bytes, mode: int | None = None) -> None:
        path = os.path.join(base, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as out:
            out.write(data)
        if mode is not None:
            os.chmod(path, mode)
        corpus.add(category, expect, path)

    def link(category: str, expect: str, rel: bytes, target: bytes) -> None:
        path = os.path.join(base, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink(target, path)
        corpus.add(category, expect, path)

    for i, data in enumerate(originals):
        put("photo", "good", b"good/photo_%03d.jpg" % i, data)
    for i, photo in enumerate(photos[:4]):
        for name, data in _modes(photo).items():
            put("image mode or format", "good", b"modes/%d_%s" % (i, name.encode()), data)
    for i in range(3):
        for j, name in enumerate(_odd_names(i)):
            put("odd name", "good", b"names/" + name, originals[(i * 7 + j) % len(originals)])
    root_reads_all = os.geteuid() == 0
    for i, mode in enumerate((0o000, 0o200, 0o444, 0o4755, 0o1777)):
        put("odd file mode", "good" if root_reads_all or mode & 0o400 else "bad", b"modes_%o.jpg" % mode, originals[i])
    for chain in range(3):
        deep = b"/".join(b"d%02d" % level for level in range(DEPTH))
        put("deep folder", "good", b"deep%d/%s/bottom.jpg" % (chain, deep), originals[chain])
    long_folder = b"long/" + b"/".join([b"f" * 100] * 6)  # a photo whose path the store cannot key (511 bytes)
    for i in range(3):
        put("path too long for the store", "bad", b"%s/photo_%d.jpg" % (long_folder, i), originals[i])
    for i in range(5):
        put("folder named like an image", "good", b"folder_%d.jpg/inside.jpg" % i, originals[-1 - i])
    for i in range(10):
        put("hidden file", "excluded", b"hidden/.photo_%d.jpg" % i, originals[i % len(originals)])

    for i in range(10):
        put("empty", "bad", b"empty/e_%d.%s" % (i, (b"jpg", b"png")[i % 2]), b"")
        put("text", "bad", b"text/t_%d.jpg" % i, b"not an image, only words\n" * (i + 1))
        put("random bytes", "bad", b"random/r_%d.jpg" % i, rng.randbytes(rng.randint(1, 50_000)))
        put("magic bytes only", "bad", b"magic/m_%d.jpg" % i, b"\xff\xd8\xff\xe0" + rng.randbytes(i))
        put("not an image", "bad", b"sidecars/s_%d.%s" % (i, (b"xmp", b"mov", b"txt")[i % 3]), b"<x:xmpmeta/>")
    bomb, liar = png_bomb(BOMB_SIDE), png_bomb(60_000, rows=4)
    for i in range(3):
        put("decompression bomb", "bad", b"bombs/bomb_%d.png" % i, bomb)
    for i in range(6):
        put("huge declared size", "bad", b"bombs/liar_%d.png" % i, liar)

    # What is no regular file.
    for i in range(20):
        path = os.path.join(base, b"special/fifo_%02d.jpg" % i)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.mkfifo(path)
        corpus.add("named pipe", "special", path)
        link("dangling link", "special", b"special/dangling_%02d.jpg" % i, b"/nonexistent/photo_%d.jpg" % i)
    for i in range(10):
        link("symlink loop", "special", b"special/loop_a_%d.jpg" % i, b"loop_b_%d.jpg" % i)
        link("symlink loop", "special", b"special/loop_b_%d.jpg" % i, b"loop_a_%d.jpg" % i)
        link("link to /dev/zero", "special", b"special/zero_%d.jpg" % i, b"/dev/zero")
    for i in range(5):
        link("self loop", "special", b"special/self_%d.jpg" % i, b"self_%d.jpg" % i)
        link("link to /dev/urandom", "special", b"special/urandom_%d.jpg" % i, b"/dev/urandom")
        link("link to /dev/null", "special", b"special/null_%d.jpg" % i, b"/dev/null")
    for i in range(3):
        path = os.path.join(base, b"special/socket_%d.jpg" % i)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.close()  # the socket file stays
        corpus.add("socket", "special", path)
        os.makedirs(os.path.join(base, b"cycle_%d/inner" % i))
        os.symlink(b"..", os.path.join(base, b"cycle_%d/inner/up" % i))  # a folder link back up: a cycle to walk
        corpus.categories["folder link cycle"] = corpus.categories.get("folder link cycle", 0) + 1
    for i in range(10):
        link("link to a photo", "either", b"links/l_%d.jpg" % i, os.path.join(base, b"good/photo_%03d.jpg" % i))
    for i in range(6):
        put("photo named as text", "either", b"misnamed/p_%d.txt" % i, originals[i])
    # The damaged majority, scaled to reach n_files.
    damaged = max(0, n_files - corpus.total)
    for i in range(damaged // 2):
        data = originals[rng.randrange(len(originals))]
        put("truncated", "either", b"truncated/t_%04d.jpg" % i, data[: rng.randrange(0, len(data) - 2)])
    for i in range(damaged - damaged // 2):
        data = bytearray(originals[rng.randrange(len(originals))])
        for _ in range(rng.randint(1, 24)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        put("bit-flipped", "either", b"flipped/f_%04d.jpg" % i, bytes(data))
    return corpus


# ------------------------------------------------------------------------------------------------ indexing it


def _entry_path(item: dict[str, str]) -> str:
    """A path of `simsearch index --json` as the store keeps it (non-UTF-8 names come back from their base64)."""
    return os.fsdecode(base64.b64decode(item["path_b64"])) if item.get("path_b64") else item["path"]


def check_indexed(corpus: Corpus, report: dict[str, Any], stored: set[str]) -> dict[str, Any]:
    """Compare one `index --json` report and the paths the collection holds with what the corpus expects; the
    returned dict counts what happened, and its "failures" say what went wrong (none, when all is well)."""
    skipped = {_entry_path(item) for item in report["skipped_files"]}
    special = {_entry_path(item) for item in report["special_files"]}
    paths = {expect: [os.fsdecode(p) for p in entries] for expect, entries in corpus.entries.items()}
    failures: list[str] = []
    missing = [p for p in paths["good"] if p not in stored]
    if missing:
        failures.append(f"{len(missing)} good images not indexed, e.g. {missing[0]!r}")
    wrongly = [p for e in ("bad", "special", "excluded") for p in paths[e] if p in stored]
    if wrongly:
        failures.append(f"{len(wrongly)} bad or special entries indexed, e.g. {wrongly[0]!r}")
    unaccounted = [
        p for e in ("good", "bad", "special", "either") for p in paths[e] if p not in stored | skipped | special
    ]
    if unaccounted:
        failures.append(f"{len(unaccounted)} entries neither indexed, skipped nor counted, e.g. {unaccounted[0]!r}")
    either_in = sum(p in stored for p in paths["either"])
    return {
        "good_indexed": len(paths["good"]) - len(missing),
        "good": len(paths["good"]),
        "damaged_that_decoded": either_in,
        "damaged_skipped": len(paths["either"]) - either_in,
        "skipped": report["skipped"],
        "special_counted": len(report["special_files"]),
        "excluded": report["excluded"],
        "failures": failures,
    }
