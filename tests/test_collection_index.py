"""Index types and the engine's choice of index: pinned types, training thresholds, the measured choice and its
full-size check, and the memory budget."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from collection_helpers import QUERIES, assert_consistent
from conftest import SAMPLE_PHOTOS, copy_collection

import simsearch
import simsearch.collection.index_tuning
from indexes import IndexChoice
from simsearch import Collection, CollectionError, open_collection
from simsearch.collection.manifest import Manifest


@pytest.fixture(scope="module")
def col(sample_collection: Path) -> Iterator[Collection]:
    """The shared sample collection, open for reading (the model loads once, on the first image query)."""
    with open_collection(sample_collection, device="cpu") as c:
        yield c


# ---------------------------------------------------------------------------------------------------- index types


def test_an_hnsw_index_gives_the_same_nearest_images_as_flat(
    col: Collection, sample_collection: Path, tmp_path: Path
) -> None:
    queries = col.embed(sorted(QUERIES.glob("*.jpg")))
    flat = [[r.id for r in row] for row in col.search_vectors(queries, k=5)]
    path = copy_collection(sample_collection, tmp_path / "col")
    with open_collection(path) as c:
        c.set_index_factory("HNSW32")
        assert c.index.factory == "HNSW32"
        assert [[r.id for r in row][:1] for row in c.search_vectors(queries, k=5)] == [row[:1] for row in flat]
    with open_collection(path) as c:  # the chosen type is remembered
        facts = c.info()
        assert (facts.index_factory, facts.index_auto) == ("HNSW32", False)
        assert facts.search_params.startswith("efSearch=")
        assert [row[0].id for row in c.search_vectors(queries, k=5)] == [row[0] for row in flat]


def test_an_ivf_index_says_it_trains_at_256_images_until_then(
    col: Collection, sample_collection: Path, tmp_path: Path
) -> None:
    query = col.store.vectors([5], col.dim)[0]
    path = copy_collection(sample_collection, tmp_path / "col")
    with open_collection(path) as c:
        c.set_index_factory("IVF256,Flat")
        with pytest.raises(CollectionError, match=r"IVF256,Flat index trains once the collection holds 256 images"):
            c.search_vectors(query)
    with open_collection(path) as c:
        with pytest.raises(CollectionError, match="256"):
            c.search_vectors(query)
        c.set_index_factory(None)  # back to the size rule: exact search works again
        assert c.info().index_factory == "Flat"
        assert c.search_vectors(query, k=1)[0].id == 5
        assert_consistent(c)


def test_a_bad_index_factory_is_a_collection_error(sample_collection: Path, tmp_path: Path) -> None:
    path = copy_collection(sample_collection, tmp_path / "col")
    with open_collection(path) as c:
        with pytest.raises(CollectionError, match="bad index factory"):
            c.set_index_factory("NoSuchIndex42")
        assert c.index.factory == "Flat" and len(c.index) == 48


# ---------------------------------------------------------------------------------------------------- measured choice


@pytest.fixture
def small_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exact search up to 10 images and a tuning sample of any size, so 48 photos are 'beyond Flat'."""
    import indexes.factory
    import indexes.tuning

    monkeypatch.setattr(indexes.factory, "EXACT_MAX_VECTORS", 10)
    monkeypatch.setattr(indexes.tuning, "MIN_SAMPLE", 20)
    monkeypatch.setattr(simsearch.collection.index_tuning, "TUNE_QUERIES", 8)


def test_beyond_exact_search_the_index_is_chosen_by_measurement_and_recorded(
    small_thresholds: None, sample_collection: Path, tmp_path: Path
) -> None:
    path = copy_collection(sample_collection, tmp_path / "col")
    with open_collection(path) as c:
        c.set_index_factory(None)  # let the engine choose now: 48 images are beyond the patched exact limit
        tuning = c.manifest.index.tuning
        assert tuning is not None and tuning["measured"] and tuning["n"] == 48
        assert tuning["sample_size"] + tuning["queries"] == 48 and tuning["candidates_measured"]
        assert c.index.factory == tuning["factory"] and c.index.search_params == tuning["search_params"]
        assert tuning["recall_at_10"] >= 0.95
        assert tuning["full_size_recall_at_10"] >= 0.95 and tuning["full_size_checks"][-1]["reached"]
        query = c.store.vectors([7], c.dim)[0]
        assert c.search_vectors(query, k=1)[0].id == 7
        assert_consistent(c)
    saved = json.loads((path / "manifest.json").read_text())["index"]
    assert saved["auto"] and saved["factory"] == tuning["factory"] and saved["tuning"]["qps"] == tuning["qps"]
    with open_collection(path) as c:  # reopened: the same choice, not measured again
        assert c.manifest.index.tuning == tuning and c.index.factory == tuning["factory"]


def _choice(factory: str, params: str, alternatives: list[tuple[str, str]]) -> IndexChoice:
    """A tuner answer as optimistic as one extrapolated from a sample can be."""
    return IndexChoice(
        factory,
        params,
        1.0,
        1000.0,
        0,
        n=48,
        dim=1280,
        measured=True,
        alternatives=[{"factory": f, "search_params": p, "recall_at_10": 1.0, "qps": 1.0} for f, p in alternatives],
    )


def test_an_optimistic_choice_is_raised_until_the_whole_collection_reaches_the_target(
    small_thresholds: None, sample_collection: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        simsearch.collection.index_tuning, "choose_index", lambda *a, **k: _choice("IVF4,Flat", "nprobe=1", [])
    )
    path = copy_collection(sample_collection, tmp_path / "col")
    with open_collection(path) as c:
        c.set_index_factory(None)
        tuning = c.manifest.index.tuning
        assert tuning is not None and tuning["chosen_on_sample"] == {
            "factory": "IVF4,Flat",
            "search_params": "nprobe=1",
        }
        (check,) = tuning["full_size_checks"]
        assert check["tried"][0] == {"search_params": "nprobe=1", "recall_at_10": check["tried"][0]["recall_at_10"]}
        assert check["tried"][0]["recall_at_10"] < 0.95 <= check["recall_at_10"] and check["reached"]
        assert c.index.factory == "IVF4,Flat" and c.index.search_params == check["search_params"] != "nprobe=1"
        assert tuning["search_params"] == c.index.search_params
        assert_consistent(c)


def test_a_choice_that_misses_the_target_at_full_size_falls_back_to_the_next_candidate(
    small_thresholds: None, sample_collection: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    choice = _choice("IVF1,PQ2x4", "nprobe=1", [("IVF4,Flat", "nprobe=2")])  # 1 byte a vector: hopeless
    monkeypatch.setattr(simsearch.collection.index_tuning, "choose_index", lambda *a, **k: choice)
    path = copy_collection(sample_collection, tmp_path / "col")
    with open_collection(path) as c:
        c.set_index_factory(None)
        tuning = c.manifest.index.tuning
        assert tuning is not None
        first, second = tuning["full_size_checks"]
        assert (first["factory"], first["reached"]) == ("IVF1,PQ2x4", False)
        assert (second["factory"], second["reached"]) == ("IVF4,Flat", True)
        assert c.index.factory == tuning["factory"] == "IVF4,Flat" and tuning["full_size_recall_at_10"] >= 0.95
        assert_consistent(c)
    with open_collection(path) as c:  # the final choice is what was saved
        assert c.index.factory == "IVF4,Flat" and c.index.search_params == tuning["search_params"]


def test_a_memory_budget_is_kept_and_one_nothing_fits_in_is_a_collection_error(
    small_thresholds: None, sample_collection: Path, tmp_path: Path
) -> None:
    path = copy_collection(sample_collection, tmp_path / "col")
    with open_collection(path) as c:
        c.set_max_memory(10**9)
        assert c.manifest.index.tuning is not None and c.manifest.index.tuning["max_memory"] == 10**9
        with pytest.raises(CollectionError, match="cannot choose an index: no index for 48 vectors .* fits in"):
            c.set_max_memory(1000)
    with open_collection(path) as c:
        assert c.manifest.index.max_memory == 10**9 and c.info().index_max_memory == 10**9


def test_below_the_exact_limit_flat_stays_unmeasured(sample_collection: Path, tmp_path: Path) -> None:
    path = copy_collection(sample_collection, tmp_path / "col")
    with open_collection(path) as c:
        c.set_max_memory(10**9)
        assert c.index.factory == "Flat" and c.manifest.index.tuning is None


def test_a_budget_too_small_for_any_index_is_refused_and_not_kept(tmp_path: Path) -> None:
    """A 1 KiB budget on a new collection once fitted its empty index, was kept, and then no index of its first photos
    fitted: every later command failed, opening included."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("pizza", "watch"):
        shutil.copy(SAMPLE_PHOTOS / name / "image_0001.jpg", photos / f"{name}.jpg")
    with Collection.open(tmp_path / "col", create=True, device="cpu") as c:
        with pytest.raises(CollectionError, match="memory budget of 1024 bytes is too small"):
            c.set_max_memory(1024)
        assert c.manifest.index.max_memory is None
        assert c.index_folder(photos, workers=0).added == 2
    with open_collection(tmp_path / "col") as c:
        assert c.info().index_max_memory is None and len(c) == 2


def test_configure_index_checks_settings_first_and_the_next_write_saves_them_once(
    sample_collection: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = copy_collection(sample_collection, tmp_path / "col")
    with open_collection(path, device="cpu") as c:
        with pytest.raises(CollectionError, match="bad index factory 'garbage'"):
            c.configure_index(factory="garbage")
        with pytest.raises(CollectionError, match="budget"):
            c.configure_index(max_memory=1024)
        assert (c.manifest.index.max_memory, c.manifest.index.auto, c.index.factory) == (None, True, "Flat")
        assert len(c.index) == 48

        before = (path / "manifest.json").read_bytes()
        c.configure_index(factory="HNSW32", max_memory=10**9)
        assert c.index.factory == "HNSW32" and len(c.index) == 48
        assert (path / "manifest.json").read_bytes() == before, "nothing is written by configure_index"
        saves: list[Path] = []
        real_save = Manifest.save
        monkeypatch.setattr(Manifest, "save", lambda self, p: (saves.append(p), real_save(self, p)))
        assert c.add([QUERIES / "pizza_0042.jpg"], workers=0).added == 1
        assert len(saves) == 1, "the run saves once, at its end"
    saved = json.loads((path / "manifest.json").read_text())["index"]
    assert (saved["factory"], saved["auto"], saved["max_memory"]) == ("HNSW32", False, 10**9)
    with open_collection(path) as c:
        assert c.index.factory == "HNSW32" and len(c.index) == 49
