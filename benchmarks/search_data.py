"""The search suite's data sets: real Caltech-101 embeddings grown to any size by seeded perturbed copies, and
seeded clustered Gaussians, each generated chunk by chunk with its own held-out queries."""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np

logger = logging.getLogger(__name__)

EMBEDDINGS = "caltech101_default_embeddings.npz"
CHUNK = 50_000  # vectors generated and added at a time: the data set is never held beside the index in full
SYNTHETIC_CLUSTERS = 1000
#: Points vary around their centre along a shared SYNTHETIC_LATENT-dimensional subspace (norm ~SYNTHETIC_SPREAD) plus
#: a little isotropic noise (norm ~SYNTHETIC_NOISE): isotropic noise alone in 1280 dims makes every point of a cluster
#: nearly equidistant from the others (exact top-10 a matter of ties), unlike real embeddings.
SYNTHETIC_LATENT = 32
SYNTHETIC_SPREAD = 0.6
SYNTHETIC_NOISE = 0.1
SYNTHETIC_DIM = 1280  # the default model's dimension, so both data sets cost the same per vector
#: Queries the tuner may measure with when it is given queries like the suite's (never those the suite scores).
TUNE_QUERIES = 200


class Dataset:
    """A seeded data set of any size, generated chunk by chunk, with its own held-out queries (unit vectors)."""

    name = ""
    describe: dict[str, Any]
    queries: np.ndarray
    tune_queries: np.ndarray

    def __init__(self, d: int, seed: int) -> None:
        self.d, self.seed = d, seed

    def chunk(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def chunks(self, n: int, size: int = CHUNK) -> Iterator[np.ndarray]:
        for start in range(0, n, size):
            yield self.chunk(start, min(n, start + size))

    def rows(self, n: int, count: int, seed: int) -> np.ndarray:
        """`count` distinct random rows of the first `n`, generated chunk by chunk."""
        pick = np.sort(np.random.default_rng(seed).choice(n, size=min(count, n), replace=False))
        parts = []
        for start in range(0, n, CHUNK):
            inside = pick[(pick >= start) & (pick < start + CHUNK)]
            if len(inside):
                parts.append(self.chunk(start, min(n, start + CHUNK))[inside - start])
        return np.concatenate(parts)


def _unit(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


class CaltechGrown(Dataset):
    """The default model's embeddings of the Caltech-101 train split, then perturbed copies of them.

    Row r < R is real vector r; row r >= R is normalise(parent + sigma * g / sqrt(d)), parent the real vector
    (r - R) mod R, g standard normal seeded by (seed, r): each copy is at cosine ~1/sqrt(1 + sigma^2) from its
    parent. Queries are real embeddings of the test split (photos absent from the base).
    """

    name = "caltech"

    def __init__(
        self, real: np.ndarray, queries: np.ndarray, tune_queries: np.ndarray, sigma: float, seed: int
    ) -> None:
        super().__init__(real.shape[1], seed)
        self.real, self.queries, self.tune_queries, self.sigma = real, queries, tune_queries, sigma

    def chunk(self, start: int, stop: int) -> np.ndarray:
        rows = np.arange(start, stop)
        out = np.empty((len(rows), self.d), dtype=np.float32)
        real = rows < len(self.real)
        out[real] = self.real[rows[real]]
        copies = rows[~real]
        if len(copies):
            rng = np.random.default_rng([self.seed, start])
            noise = rng.standard_normal((len(copies), self.d), dtype=np.float32) * (self.sigma / math.sqrt(self.d))
            out[~real] = _unit(self.real[(copies - len(self.real)) % len(self.real)] + noise)
        return out


class Clustered(Dataset):
    """Gaussian clusters around SYNTHETIC_CLUSTERS seeded unit centres: normalise(centre + spread * z B / sqrt(L) +
    noise * g / sqrt(d)), z ~ N(0, I_L), B a seeded (L, d) Gaussian matrix / sqrt(d), g ~ N(0, I_d)."""

    name = "synthetic"

    def __init__(self, d: int, seed: int, n_queries: int) -> None:
        super().__init__(d, seed)
        self.centres = _unit(np.random.default_rng([seed, 1]).standard_normal((SYNTHETIC_CLUSTERS, d)))
        basis = np.random.default_rng([seed, 4]).standard_normal((SYNTHETIC_LATENT, d), dtype=np.float32)
        self.basis = basis * (SYNTHETIC_SPREAD / math.sqrt(d * SYNTHETIC_LATENT))
        self.queries = self._draw(np.random.default_rng([seed, 2]), n_queries)
        self.tune_queries = self._draw(np.random.default_rng([seed, 5]), TUNE_QUERIES)

    def _draw(self, rng: np.random.Generator, count: int) -> np.ndarray:
        which = rng.integers(0, SYNTHETIC_CLUSTERS, count)
        latent = rng.standard_normal((count, SYNTHETIC_LATENT), dtype=np.float32) @ self.basis
        noise = rng.standard_normal((count, self.d), dtype=np.float32) * (SYNTHETIC_NOISE / math.sqrt(self.d))
        return _unit(self.centres[which] + latent + noise)

    def chunk(self, start: int, stop: int) -> np.ndarray:
        return self._draw(np.random.default_rng([self.seed, 3, start]), stop - start)


def load_caltech(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) embeddings from the cache; computed (and cached) through the library when absent."""
    from simsearch.data import default_cache_dir

    path = default_cache_dir() / "bench" / EMBEDDINGS
    if not path.exists():
        _compute_caltech(args, path)
    with np.load(path) as z:
        return np.ascontiguousarray(z["train_vectors"]), np.ascontiguousarray(z["test_vectors"])


def _compute_caltech(args: argparse.Namespace, path: Path) -> None:
    """Embed every Caltech-101 photo with the default model; every third photo of a class goes to the test split."""
    from simsearch.data import caltech101_classes, default_cache_dir
    from simsearch.embedding import embed_files
    from simsearch.models import load_embedder

    device = "cpu" if args.device == "auto" else args.device
    logger.info("search: embedding the Caltech-101 photos (cached in %s)", path)
    classes = caltech101_classes(root=args.data)
    folder = default_cache_dir() / "caltech101"
    paths, labels, test = [], [], []
    for label, cls in enumerate(classes):
        for i, photo in enumerate(sorted((folder / cls).glob("*.jpg"))):
            paths.append(photo)
            labels.append(label)
            test.append(i % 3 == 2)
    embedder = load_embedder(None, device=device)
    vectors = np.zeros((len(paths), embedder.embed_dim), dtype=np.float32)
    ok = np.zeros(len(paths), dtype=bool)
    for out in embed_files(embedder, paths, thumbnails=False):
        vectors[out.positions] = out.vectors
        ok[out.positions] = True
    is_test = np.asarray(test) & ok
    is_train = ~np.asarray(test) & ok
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        train_vectors=vectors[is_train],
        train_labels=np.asarray(labels)[is_train],
        test_vectors=vectors[is_test],
        test_labels=np.asarray(labels)[is_test],
    )


def auto_sigma(real: np.ndarray) -> tuple[float, float]:
    """Noise norm that puts a copy as far from its parent as a real vector's nearest real neighbour is.

    Returns:
        sigma and the median nearest-neighbour cosine among the real vectors.
    """
    flat = faiss.IndexFlatIP(real.shape[1])
    flat.add(real)
    scores, _ = flat.search(real, 2)
    cos = float(np.median(scores[:, 1]))
    return math.sqrt(max(1.0 / cos**2 - 1.0, 1e-6)), cos


def parent_recall(data: CaltechGrown, count: int) -> dict[str, float]:
    """How often a perturbed copy's nearest real vector is its parent (@1) or among its 10 nearest (@10)."""
    real = len(data.real)
    rows = np.arange(real, real + count)
    copies = data.chunk(real, real + count)
    flat = faiss.IndexFlatIP(data.d)
    flat.add(data.real)
    scores, ids = flat.search(copies, 10)
    parents = (rows - real) % real
    own = np.einsum("ij,ij->i", copies, data.real[parents])
    return {
        "copies_measured": count,
        "parent_recall_at_1": float((ids[:, 0] == parents).mean()),
        "parent_recall_at_10": float((ids == parents[:, None]).any(axis=1).mean()),
        "median_cosine_to_parent": float(np.median(own)),
    }


def make_dataset(name: str, args: argparse.Namespace, largest: int) -> Dataset:
    """The data set `name` ("synthetic" or "caltech") with its queries and a description for the record."""
    if name == "synthetic":
        d = SYNTHETIC_DIM
        data: Dataset = Clustered(d, args.seed, args.queries)
        data.describe = {
            "kind": "clustered Gaussians",
            "dim": d,
            "clusters": SYNTHETIC_CLUSTERS,
            "latent_dim": SYNTHETIC_LATENT,
            "latent_spread": SYNTHETIC_SPREAD,
            "noise_norm": SYNTHETIC_NOISE,
            "queries": "fresh draws from the same clusters",
        }
        return data
    real, test = load_caltech(args)
    sigma, nn_cos = (args.sigma, None) if args.sigma is not None else auto_sigma(real)
    order = np.random.default_rng(args.seed).permutation(len(test))
    queries = test[order[: args.queries]]
    tune_queries = test[order[args.queries : args.queries + TUNE_QUERIES]]
    grown = CaltechGrown(real, queries, tune_queries, float(sigma), args.seed)
    grown.describe = {
        "kind": "default-model embeddings of Caltech-101 photos, grown by perturbed copies",
        "dim": int(real.shape[1]),
        "real_vectors": int(len(real)),
        "queries": f"{len(queries)} embeddings of test-split photos (not in the base)",
        "perturbation": "row r >= R: normalise(real[(r - R) mod R] + sigma * N(0, I_d) / sqrt(d)), seeded per chunk",
        "sigma": round(float(sigma), 4),
        "sigma_rule": "auto: sqrt(1/c^2 - 1), c = median cosine of a real vector to its nearest real neighbour"
        if nn_cos is not None
        else "--sigma",
        "median_real_nn_cosine": None if nn_cos is None else round(nn_cos, 4),
        **(parent_recall(grown, min(2000, len(real))) if largest > len(real) else {}),
    }
    return grown
