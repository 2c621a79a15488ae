"""Searching a collection of real photos: search quality, query kinds, vector search and its errors, info."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from collection_helpers import QUERIES, SAMPLE_CLASSES
from conftest import SAMPLE_PHOTOS, unpack_caltech
from PIL import Image

from simsearch import Collection, CollectionError, SearchResult, open_collection
from simsearch.images import file_sha256


@pytest.fixture(scope="module")
def col(sample_collection: Path) -> Iterator[Collection]:
    """The shared sample collection, open for reading (the model loads once, on the first image query)."""
    with open_collection(sample_collection, device="cpu") as c:
        yield c


# ---------------------------------------------------------------------------------------------------- search quality


@pytest.mark.parametrize("name", ["airplanes/image_0003.jpg", "pizza/image_0005.jpg", "watch/image_0008.jpg"])
def test_a_photo_of_the_collection_comes_first_with_score_one(col: Collection, name: str) -> None:
    photo = SAMPLE_PHOTOS / name
    results = col.search(photo, k=5)

    assert [r.rank for r in results] == [1, 2, 3, 4, 5]
    assert results[0].path == str(photo)
    assert results[0].score >= 0.999
    assert all(a.score >= b.score for a, b in zip(results, results[1:], strict=False))
    record = col.get(results[0].id)
    assert record is not None and (results[0].width, results[0].height) == (record.width, record.height)


def test_bytes_and_pil_images_are_queries_like_a_path(col: Collection) -> None:
    photo = SAMPLE_PHOTOS / "starfish" / "image_0002.jpg"
    by_path = col.search(photo, k=3)
    by_bytes = col.search(photo.read_bytes(), k=3)
    with Image.open(photo) as im:
        by_pil = col.search(im, k=3)
    assert [r.id for r in by_bytes] == [r.id for r in by_path] == [r.id for r in by_pil]


def test_unseen_photos_of_the_collections_classes_find_their_class(col: Collection, tmp_path: Path) -> None:
    """precision@5 over two photos per class that are not in the collection; chance is 1/6."""
    unpacked = unpack_caltech(tmp_path, {name: 10 for name in SAMPLE_CLASSES})
    queries = [(name, path) for name, paths in unpacked.items() for path in paths[8:]]
    for _, path in queries:
        assert col.store.ids_for_sha256(file_sha256(path)) == [], f"{path} is in the collection already"

    hits = col.search_vectors(col.embed([path for _, path in queries]), k=5)
    precision = [
        np.mean([Path(r.path).parent.name == name for r in row]) for (name, _), row in zip(queries, hits, strict=True)
    ]

    assert len(precision) == 2 * len(SAMPLE_CLASSES)
    assert float(np.mean(precision)) >= 0.8, dict(zip([str(p) for _, p in queries], precision, strict=True))


@pytest.mark.parametrize("name", ["pizza", "starfish", "sunflower"])
def test_a_bundled_query_photo_finds_its_own_class_first(col: Collection, name: str) -> None:
    results = col.search(QUERIES / f"{name}_0042.jpg", k=3)
    assert [Path(r.path).parent.name for r in results] == [name] * 3


def test_search_vectors_takes_one_vector_or_a_batch(col: Collection) -> None:
    ids = col.store.ids()[[0, 17, 40]].tolist()
    vectors = col.store.vectors(ids, col.dim)

    one = col.search_vectors(vectors[1], k=4)
    assert all(isinstance(r, SearchResult) for r in one)
    assert one[0].id == ids[1] and one[0].score >= 0.999

    many = col.search_vectors(vectors, k=4)
    assert len(many) == 3 and all(len(row) == 4 for row in many)
    assert [row[0].id for row in many] == ids
    assert [r.id for r in many[1]] == [r.id for r in one]


def test_k_beyond_the_collection_size_returns_every_image_once(col: Collection) -> None:
    results = col.search_vectors(col.store.vectors([1], col.dim)[0], k=500)
    assert [r.rank for r in results] == list(range(1, 49))
    assert sorted(r.id for r in results) == col.store.ids().tolist()


def test_bad_query_vectors_and_k_are_collection_errors(col: Collection) -> None:
    with pytest.raises(CollectionError, match="shape"):
        col.search_vectors(np.zeros(col.dim + 1, dtype=np.float32))
    with pytest.raises(CollectionError, match="shape"):
        col.search_vectors(np.zeros((2, 3, col.dim), dtype=np.float32))
    with pytest.raises(CollectionError, match="k must be"):
        col.search_vectors(np.zeros(col.dim, dtype=np.float32), k=0)


def test_embed_gives_l2_normalised_float32_rows(col: Collection) -> None:
    vectors = col.embed([SAMPLE_PHOTOS / "ketch" / "image_0001.jpg", QUERIES / "pizza_0042.jpg"])
    assert vectors.dtype == np.float32 and vectors.shape == (2, col.dim)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_info_describes_the_collection(col: Collection, sample_collection: Path) -> None:
    facts = col.info()
    assert facts.images == 48 == len(col)
    assert facts.path == str(sample_collection)
    assert facts.model.startswith("default:")
    assert facts.dim == col.dim == 1280
    assert facts.index_factory == "Flat" and facts.index_auto is True
    assert facts.disk_bytes > 0
