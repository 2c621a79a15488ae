"""Reading queries (files, standard input, URLs under a size and a time limit) and searching with several images
combined, stored ids, exclusions and a score floor (`simsearch.querying`)."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE_PHOTOS, SAMPLES
from photo_server import closed_port_url, photo_server

from simsearch.errors import ImageError, QueryError
from simsearch.querying import combine, embed_queries, fetch_url, own_ids, read_query, search

SUNFLOWER = SAMPLE_PHOTOS / "sunflower" / "image_0001.jpg"


def test_a_file_query_is_read_and_checked_and_knows_its_entry_paths(tmp_path: Path) -> None:
    q = read_query(str(SUNFLOWER))
    assert q.label == str(SUNFLOWER) and q.data == SUNFLOWER.read_bytes()
    assert str(SUNFLOWER.resolve()) in q.paths

    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    with pytest.raises(ImageError, match=f"cannot search with {text}: not an image"):
        read_query(str(text))
    with pytest.raises(ImageError, match="cannot read file"):
        read_query(str(tmp_path / "missing.jpg"))


def test_a_named_pipe_as_a_query_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "x.jpg"
    try:
        os.mkfifo(fifo)
    except (OSError, AttributeError) as exc:
        pytest.skip(f"no FIFOs here: {exc}")
    outcome: list[BaseException] = []

    def attempt() -> None:
        try:
            read_query(str(fifo))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "reading a named pipe blocked"
    assert isinstance(outcome[0], ImageError) and "named pipe" in str(outcome[0])


def test_standard_input_is_read_up_to_a_limit() -> None:
    data = SUNFLOWER.read_bytes()
    assert read_query("-", stdin=io.BytesIO(data)).data == data
    with pytest.raises(QueryError, match="standard input holds more than 100 bytes"):
        read_query("-", stdin=io.BytesIO(data), max_bytes=100)
    with pytest.raises(ImageError, match="cannot search with -: empty input"):
        read_query("-", stdin=io.BytesIO(b""))


def test_a_url_is_fetched_from_a_local_server() -> None:
    with photo_server() as base:
        q = read_query(f"{base}/queries/sunflower_0042.jpg")
        assert q.data == (SAMPLES / "queries" / "sunflower_0042.jpg").read_bytes() and q.paths == ()
        with pytest.raises(QueryError, match="HTTP 404"):
            fetch_url(f"{base}/queries/none.jpg")
        with pytest.raises(ImageError, match="not an image"):
            read_query(f"{base}/LICENSE.md")


def test_a_url_past_the_size_limit_is_refused_with_or_without_a_length() -> None:
    with photo_server() as base:
        with pytest.raises(QueryError, match="more than the 1,000 allowed"):
            fetch_url(f"{base}/queries/sunflower_0042.jpg", max_bytes=1000)  # Content-Length says so
        with pytest.raises(QueryError, match="more than the 100,000 bytes allowed"):
            fetch_url(f"{base}/endless", max_bytes=100_000)  # counted while reading


def test_a_url_past_the_time_limit_is_refused() -> None:
    with photo_server() as base:
        with pytest.raises(QueryError, match="took longer than 0.5 s"):
            fetch_url(f"{base}/slow", timeout=0.5)
        with pytest.raises(QueryError, match="no answer within 0.5 s"):
            fetch_url(f"{base}/hang", timeout=0.5)


def test_an_unreachable_url_is_one_clear_error() -> None:
    with pytest.raises(QueryError, match=r"cannot fetch .*: Connection refused \(offline\?\)"):
        fetch_url(closed_port_url())


def test_combine_is_the_normalised_mean_minus_the_negatives() -> None:
    a, b, c = np.eye(3, dtype=np.float32)
    assert np.allclose(combine(np.stack([a, b])), (a + b) / np.sqrt(2))
    assert np.allclose(combine(np.stack([a, b]), c[None]), np.array([0.5, 0.5, -1]) / np.sqrt(1.5))
    assert np.allclose(combine(a[None]), a)
    with pytest.raises(QueryError, match="cancel out"):
        combine(a[None], a[None])


def test_search_by_images_and_ids_with_exclusions_and_a_floor(sample_collection: Path) -> None:
    from simsearch import open_collection

    with open_collection(sample_collection, device="cpu") as col:
        photo = read_query(str(SUNFLOWER))
        own = own_ids(col, [photo])
        assert len(own) == 1
        (self_id,) = own
        assert col.get(self_id).path == str(SUNFLOWER.resolve())

        vectors = embed_queries(col, [photo], [self_id])
        assert vectors.shape == (2, col.dim) and np.allclose(vectors[0], vectors[1], atol=1e-5)

        hits = search(col, combine(vectors[:1]), k=5)
        assert hits[0].id == self_id and hits[0].score > 0.999
        without = search(col, combine(vectors[:1]), k=5, exclude_ids=own)
        assert self_id not in [h.id for h in without] and len(without) == 5
        assert [h.rank for h in without] == [1, 2, 3, 4, 5]
        floor = without[2].score
        assert [h.id for h in search(col, combine(vectors[:1]), k=5, exclude_ids=own, min_score=floor)] == [
            h.id for h in without[:3]
        ]


def test_an_image_whose_header_reads_but_pixels_do_not_is_named(sample_collection: Path, tmp_path: Path) -> None:
    """A truncated photo passes the header check when read, then fails to decode: the error names it."""
    from simsearch import open_collection

    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(SUNFLOWER.read_bytes()[:2000])
    queries = [read_query(str(SUNFLOWER)), read_query(str(truncated))]  # the header alone is checked here
    with open_collection(sample_collection, device="cpu") as col:
        with pytest.raises(ImageError, match=f"cannot search with {truncated}: .*truncated"):
            embed_queries(col, queries)
