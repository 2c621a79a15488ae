"""Searches from a stored image, with ids left out, timed, and the warm-up (Collection.search_id, search_vectors,
vector, warmup), on the sample photos."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE_PHOTOS

from simsearch import Collection, CollectionError, ImageError, open_collection
from simsearch.errors import UnknownImageError


@pytest.fixture(scope="module")
def col(sample_collection: Path) -> Iterator[Collection]:
    with open_collection(sample_collection, device="cpu") as c:
        yield c


def id_of(c: Collection, relative: str) -> int:
    image_id = c.store.id_for_path(str(SAMPLE_PHOTOS / relative))
    assert image_id is not None
    return image_id


def test_the_stored_vector_is_the_images_own_embedding(col: Collection) -> None:
    image_id = id_of(col, "pizza/image_0004.jpg")
    vector = col.vector(image_id)
    assert vector.shape == (1280,) and vector.dtype == np.float32
    np.testing.assert_allclose(vector, col.embed([SAMPLE_PHOTOS / "pizza/image_0004.jpg"])[0], atol=1e-5)


def test_search_id_leaves_the_image_out_and_still_returns_k(col: Collection) -> None:
    image_id = id_of(col, "starfish/image_0002.jpg")
    with_self = col.search_id(image_id, k=6, exclude_self=False)
    without = col.search_id(image_id, k=5)

    assert with_self[0].id == image_id and with_self[0].score > 0.999
    assert [r.id for r in without] == [r.id for r in with_self[1:]]
    assert [r.rank for r in without] == [1, 2, 3, 4, 5]
    assert Path(without[0].path).parent.name == "starfish"
    assert len(col.search_id(image_id, k=100)) == len(col) - 1


def test_excluded_ids_are_left_out_and_the_list_stays_k_long(col: Collection) -> None:
    query = col.vector(id_of(col, "watch/image_0001.jpg"))
    full = col.search_vectors(query, k=8)
    dropped = {full[0].id, full[2].id, full[5].id}
    kept = col.search_vectors(query, k=5, exclude_ids=dropped)

    assert [r.id for r in kept] == [r.id for r in full if r.id not in dropped][:5]
    assert [r.rank for r in kept] == [1, 2, 3, 4, 5]
    assert len(col.search_vectors(query, k=100, exclude_ids=dropped)) == len(col) - 3
    # a batch of queries: one list each, each without the excluded ids
    rows = col.search_vectors(np.stack([query, query]), k=3, exclude_ids=dropped)
    assert [[r.id for r in row] for row in rows] == [[r.id for r in kept[:3]]] * 2


def test_a_timed_search_agrees_with_an_exact_one_and_reports_its_stages(col: Collection) -> None:
    query = col.embed([SAMPLE_PHOTOS / "ketch/image_0008.jpg"])[0]
    timings: dict[str, float] = {}
    ours = col.search_vectors(query, k=10, timings=timings)
    assert ours == col.search_vectors(query, k=10)
    ids = col.store.ids()
    exact = ids[np.argsort(-(col.store.vectors(ids.tolist(), col.dim) @ query), kind="stable")[:10]]
    assert [r.id for r in ours] == exact.tolist()
    assert set(timings) == {"search", "store"} and all(v >= 0 for v in timings.values())


def test_unknown_ids_and_bad_arguments_are_collection_errors(col: Collection) -> None:
    with pytest.raises(UnknownImageError, match="no image with id 987654"):
        col.search_id(987654)
    with pytest.raises(UnknownImageError):
        col.vector(-3)
    for bad_id in (True, 1.0, "1"):
        with pytest.raises(CollectionError, match="integer"):
            col.search_id(bad_id)  # type: ignore[arg-type]
    query = col.vector(1)
    with pytest.raises(CollectionError, match="at least 1"):
        col.search_vectors(query, k=0)
    with pytest.raises(CollectionError, match="shape"):
        col.search_vectors(query[:10], k=3)
    assert isinstance(UnknownImageError("x"), CollectionError)


def test_warmup_loads_the_model_and_times_each_batch_size(sample_collection: Path, tmp_path: Path) -> None:
    from conftest import copy_collection

    with open_collection(copy_collection(sample_collection, tmp_path / "col"), device="cpu") as c:
        assert c._embedder is None  # opening does not load the model
        timings = c.warmup(batch_sizes=(4, 1))
        assert c._embedder is not None
        assert list(timings) == ["load", "forward_1", "forward_4", "search"]
        assert all(v >= 0 for v in timings.values())


def test_an_int_is_never_read_as_a_file_descriptor(col: Collection) -> None:
    fd = os.open(SAMPLE_PHOTOS / "sunflower/image_0001.jpg", os.O_RDONLY)
    try:
        for query in (fd, 0):
            with pytest.raises(ImageError, match="not a file path"):
                col.search(query, k=3)  # type: ignore[arg-type]
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0  # nothing was read from it
    finally:
        os.close(fd)
