"""Searching through the HTTP API on real photos, in-process (FastAPI's TestClient): by upload, by id, in batches,
by vector, concurrently, and the 422s of bad queries."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SAMPLE_PHOTOS
from PIL import Image
from server_api_helpers import STAGES, classes, upload
from serving import QUERIES

pytest_plugins = ["server_api_helpers"]  # the client fixture

pytest.importorskip("fastapi")


def timing_names(response) -> list[str]:
    return [part.split(";")[0].strip() for part in response.headers["server-timing"].split(",")]


# ---------------------------------------------------------------------------------------------------------- searches


@pytest.mark.parametrize("name", ["sunflower", "pizza", "starfish"])
def test_an_uploaded_photo_finds_its_class_with_every_field_and_stage_timings(client, name: str) -> None:
    response = client.post("/search", files=upload(QUERIES / f"{name}_0042.jpg"), params={"k": 5})

    assert response.status_code == 200
    body = response.json()
    hits = body["results"]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5] and body["k"] == 5
    assert classes(hits)[:3] == [name] * 3
    assert all(a["score"] >= b["score"] for a, b in zip(hits, hits[1:], strict=False))
    first = hits[0]
    assert set(first) == {"rank", "id", "score", "path", "width", "height", "thumbnail_url"}
    assert first["thumbnail_url"] == f"/images/{first['id']}/thumbnail"
    with Image.open(first["path"]) as im:
        assert (first["width"], first["height"]) == im.size
    assert set(body["timings_ms"]) == set(STAGES)
    assert set(STAGES) | {"total"} == set(timing_names(response))


def test_a_photo_of_the_collection_finds_itself_first_and_exclude_ids_keeps_k(client) -> None:
    photo = SAMPLE_PHOTOS / "watch" / "image_0003.jpg"
    first = client.post("/search", files=upload(photo), params={"k": 4}).json()["results"]
    assert first[0]["path"] == str(photo) and first[0]["score"] > 0.999

    again = client.post("/search", files=upload(photo), params={"k": 4, "exclude_ids": [first[0]["id"]]})
    hits = again.json()["results"]
    assert [h["id"] for h in hits] == [h["id"] for h in first[1:]] + [hits[3]["id"]]
    assert first[0]["id"] not in [h["id"] for h in hits] and [h["rank"] for h in hits] == [1, 2, 3, 4]


def test_search_by_id_leaves_the_image_out_unless_asked_and_returns_k(client) -> None:
    photo = SAMPLE_PHOTOS / "ketch" / "image_0002.jpg"
    image_id = client.post("/search", files=upload(photo), params={"k": 1}).json()["results"][0]["id"]

    response = client.get(f"/images/{image_id}/similar", params={"k": 6})
    hits = response.json()["results"]
    assert response.status_code == 200 and len(hits) == 6
    assert image_id not in [h["id"] for h in hits]
    assert classes(hits)[:3] == ["ketch"] * 3
    assert {"search", "store"} <= set(timing_names(response))

    with_self = client.get(f"/images/{image_id}/similar", params={"k": 6, "exclude_self": "false"}).json()["results"]
    assert with_self[0]["id"] == image_id and with_self[0]["score"] > 0.999
    assert [h["id"] for h in with_self[1:]] == [h["id"] for h in hits[:5]]

    everything = client.get(f"/images/{image_id}/similar", params={"k": 1000}).json()["results"]
    assert len(everything) == 47  # the whole collection but the image itself


def test_batch_searches_answer_each_query_in_order(client) -> None:
    files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in sorted(QUERIES.glob("*.jpg"))]
    response = client.post("/search/batch", files=files, params={"k": 3})
    rows = response.json()["results"]
    assert response.status_code == 200
    assert [classes(row)[0] for row in rows] == ["pizza", "starfish", "sunflower"]

    ids = [rows[0][0]["id"], rows[2][0]["id"]]
    by_id = client.post("/search/ids", json={"ids": ids, "k": 3}).json()["results"]
    assert [classes(row)[0] for row in by_id] == ["pizza", "sunflower"]
    assert all(row_id not in [h["id"] for h in row] for row_id, row in zip(ids, by_id, strict=True))


def test_concurrent_uploads_with_different_k_and_exclusions_each_get_their_own_answer(client) -> None:
    """Uploads that share a forward pass are searched together, grouped by k and exclusions: each answer must be
    the one the same request gets alone."""
    from concurrent.futures import ThreadPoolExecutor

    photos = sorted(QUERIES.glob("*.jpg"))
    asks = [(photo, k, exclude) for photo in photos for k in (2, 5) for exclude in ([], [1, 2, 3])] * 2

    def ask(case: tuple[Path, int, list[int]]) -> list[int]:
        photo, k, exclude = case
        response = client.post("/search", files=upload(photo), params={"k": k, "exclude_ids": exclude})
        assert response.status_code == 200, response.text
        return [h["id"] for h in response.json()["results"]]

    alone = [ask(case) for case in asks]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask, asks))
    assert together == alone
    assert all(len(ids) == k and not set(ids) & set(exclude) for ids, (_, k, exclude) in zip(alone, asks, strict=True))


def test_a_stored_vector_searched_as_json_finds_its_image(client) -> None:
    vector = client.get("/images/5/vector").json()["vector"]
    assert len(vector) == 1280 and abs(sum(v * v for v in vector) - 1) < 1e-4

    response = client.post("/search/vectors", json={"vectors": [vector], "k": 3})
    hits = response.json()["results"][0]
    assert response.status_code == 200 and hits[0]["id"] == 5 and hits[0]["score"] > 0.999
    excluded = client.post("/search/vectors", json={"vectors": [vector], "k": 3, "exclude_ids": [5]}).json()
    assert [h["id"] for h in excluded["results"][0]] == [h["id"] for h in hits[1:]] + [excluded["results"][0][2]["id"]]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"vectors": [[0.1] * 3], "k": 3}, "1280"),
        ({"vectors": [[0.0] * 1280, [0.0] * 7], "k": 3}, "1280"),
        ({"vectors": [], "k": 3}, "vectors"),
        ({"vectors": [[0.0] * 1280], "k": 0}, "k"),
        ({"vectors": [["a"] * 1280]}, "vectors"),
        ({"vectors": [[0.0] * 1280], "path": "/etc/passwd"}, "path"),
    ],
)
def test_bad_vector_queries_are_422_with_a_one_line_reason(client, body: dict, needle: str) -> None:
    response = client.post("/search/vectors", json=body)
    assert response.status_code == 422
    assert set(response.json()) == {"error"} and needle in response.json()["error"]


def test_a_non_finite_vector_is_refused(client) -> None:
    body = '{"vectors": [[NaN' + ", 0.0" * 1279 + "]]}"
    response = client.post("/search/vectors", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422 and "finite" in response.json()["error"]


@pytest.mark.parametrize("params", [{"k": 0}, {"k": -1}, {"k": 1001}, {"k": "ten"}, {"exclude_ids": "x"}])
def test_bad_k_and_exclusions_are_422(client, params: dict) -> None:
    response = client.post("/search", files=upload(QUERIES / "pizza_0042.jpg"), params=params)
    assert response.status_code == 422 and list(response.json()) == ["error"]


def test_too_many_queries_in_one_batch_are_refused(client) -> None:
    response = client.post("/search/ids", json={"ids": [1] * 65, "k": 3})
    assert response.status_code == 422 and "at most 64" in response.json()["error"]
