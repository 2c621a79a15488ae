"""The near-duplicate benchmark's data and its comparison: Caltech-101 photo folders with seeded variants planted
among unrelated originals (ground truth: one item per original), pairwise precision/recall/F1, and imagededup's
hashing methods run on the same folders.

Faces_easy is left out: its photos are crops of the Faces photos, so a pair across the two classes is a true near
duplicate that the ground truth would call different.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.record import PeakRSS
from simsearch.dedup.calibration import PairCounts, pair_counts
from simsearch.dedup.variants import make_variants

logger = logging.getLogger(__name__)

EXCLUDED_CLASSES = ("Faces_easy",)
HASH_METHODS = ("PHash", "DHash", "WHash", "AHash")
#: imagededup's default `max_distance_threshold` of its hashing methods.
HASH_DEFAULT_DISTANCE = 10


@dataclass
class VariantSet:
    """One folder of photos: `items[i]` is the item (original photo) of file `files[i]`."""

    folder: Path
    files: list[Path]
    items: np.ndarray
    transforms: list[str]
    classes: list[str]

    def true_pairs(self) -> set[tuple[int, int]]:
        return pairs_within(self.items)

    def describe(self) -> dict[str, Any]:
        counts = np.bincount(self.items)
        return {
            "images": len(self.files),
            "classes": len(self.classes),
            "originals_with_variants": int((counts > 1).sum()),
            "unrelated_originals": int((counts == 1).sum()),
            "same_item_pairs": len(self.true_pairs()),
            "transforms": {t: self.transforms.count(t) for t in sorted(set(self.transforms))},
        }


def pairs_within(labels: np.ndarray) -> set[tuple[int, int]]:
    """Every (i, j), i < j, of positions sharing a label."""
    out: set[tuple[int, int]] = set()
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    for members in np.split(order, bounds):
        m = sorted(members.tolist())
        out.update((m[a], m[b]) for a in range(len(m)) for b in range(a + 1, len(m)))
    return out


def groups_to_pairs(groups: list[list[int]]) -> set[tuple[int, int]]:
    return {(g[a], g[b]) for g in (sorted(x) for x in groups) for a in range(len(g)) for b in range(a + 1, len(g))}


def build_set(
    photo_root: Path, classes: list[str], originals: int, variants: int, unrelated: int, out: Path, seed: int
) -> VariantSet:
    """Draw photos class by class in turn (so that big classes do not dominate), plant `variants` seeded variants of
    the first `originals`, and copy the rest as unrelated originals, into one flat folder `out`."""
    rng = np.random.default_rng(seed)
    classes = [c for c in classes if c not in EXCLUDED_CLASSES]
    chosen = draw_photos(photo_root, classes, originals + unrelated, rng)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    items: list[int] = []
    transforms: list[str] = []
    for item, photo in enumerate(chosen):
        data = photo.read_bytes()
        saved = out / f"{item:04d}_original.jpg"
        saved.write_bytes(data)
        files.append(saved)
        items.append(item)
        transforms.append("original")
        if item >= originals:
            continue
        with Image.open(io.BytesIO(data)) as im:
            made = make_variants(im, variants, rng)
        for n, (blob, what) in enumerate(made):
            name = what.split()[0]
            saved = out / f"{item:04d}_variant{n}_{name}.jpg"
            saved.write_bytes(blob)
            files.append(saved)
            items.append(item)
            transforms.append(name)
    return VariantSet(out, files, np.asarray(items), transforms, classes)


def draw_photos(photo_root: Path, classes: list[str], count: int, rng: np.random.Generator) -> list[Path]:
    """`count` photos drawn class by class in turn (so that big classes do not dominate), in a seeded order."""
    classes = [c for c in classes if c not in EXCLUDED_CLASSES]
    pools = []
    for cls in classes:
        files = sorted((photo_root / cls).glob("*.jpg"))
        pools.append([files[i] for i in rng.permutation(len(files))])
    drawn: list[Path] = []
    depth = 0
    while len(drawn) < count:
        layer = [pool[depth] for pool in pools if depth < len(pool)]
        if not layer:
            raise ValueError(f"{len(classes)} classes hold fewer than {count} photos")
        drawn.extend(layer[i] for i in rng.permutation(len(layer)))
        depth += 1
    drawn = drawn[:count]
    return [drawn[i] for i in rng.permutation(len(drawn))]


# -------------------------------------------------------------------------------------------------------- imagededup


def hash_bits(hashes: list[str]) -> np.ndarray:
    """imagededup's 64-bit hex hashes as a (N, 64) bit matrix."""
    raw = np.array([bytes.fromhex(h) for h in hashes], dtype="S8").view(np.uint8).reshape(len(hashes), 8)
    return np.unpackbits(raw, axis=1)


def hamming_matrix(bits: np.ndarray) -> np.ndarray:
    b = bits.astype(np.int32)
    return (b[:, None, :] != b[None, :, :]).sum(-1) if len(b) <= 512 else _hamming_blocks(b)


def _hamming_blocks(b: np.ndarray) -> np.ndarray:
    # popcount(x xor y) = |x| + |y| - 2 x.y for bit vectors
    ones = b.sum(1)
    return (ones[:, None] + ones[None, :] - 2 * (b @ b.T)).astype(np.int32)


def encode(method: str, folder: Path) -> tuple[dict[str, str], float]:
    """imagededup's hashes of every file of `folder` (one encoding process) and the seconds it took."""
    from imagededup import methods

    hasher = getattr(methods, method)(verbose=False)
    started = time.perf_counter()
    found = hasher.encode_images(image_dir=str(folder), num_enc_workers=0)
    return found, time.perf_counter() - started


def hash_distances(method: str, vs: VariantSet) -> np.ndarray:
    hashes, _ = encode(method, vs.folder)
    return hamming_matrix(hash_bits([hashes[f.name] for f in vs.files]))


def best_distance(distances: np.ndarray, items: np.ndarray) -> tuple[int, float]:
    """The Hamming distance (at most) that gives the best pairwise F1 on a labelled set, and that F1."""
    truth = pairs_within(items)
    best = (0, -1.0)
    for t in range(0, 33):
        f1 = distance_counts(distances, t, truth).f1
        if f1 > best[1]:
            best = (t, f1)
    return best


def distance_counts(distances: np.ndarray, t: int, truth: set[tuple[int, int]]) -> PairCounts:
    i, j = np.nonzero(np.triu(distances <= t, k=1))
    return pair_counts(set(zip(i.tolist(), j.tolist(), strict=True)), truth)


def timed_hash_run(method: str, folder: Path, distance: int) -> dict[str, float]:
    """imagededup's own end-to-end call (encode every file, then its duplicate search) with time and peak memory."""
    from imagededup import methods

    hasher = getattr(methods, method)(verbose=False)
    with PeakRSS() as peak:
        started = time.perf_counter()
        hasher.find_duplicates(
            image_dir=str(folder), max_distance_threshold=distance, num_enc_workers=0, num_dist_workers=1
        )
        seconds = time.perf_counter() - started
    memory = peak.as_dict()
    return {"seconds": seconds, "peak_rss_mib": memory["peak_rss_mib"], "start_rss_mib": memory["start_rss_mib"]}
