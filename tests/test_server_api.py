"""The HTTP API on real photos, in-process (FastAPI's TestClient): every endpoint, every error code, tokens, size
limits, and that no request makes the server read a path it names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SAMPLE_PHOTOS, copy_collection
from PIL import Image
from serving import (
    ADMIN_TOKEN,
    QUERIES,
    READ_TOKEN,
    bearer,
    encoded,
    noise_image,
    png_claiming,
    serving,
)

pytest.importorskip("fastapi")

STAGES = ("decode", "transform", "queue", "forward", "search", "store")


@pytest.fixture(scope="module")
def copy(sample_collection: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_collection(sample_collection, tmp_path_factory.mktemp("api") / "col")


@pytest.fixture
def fresh(sample_collection: Path, tmp_path: Path) -> Path:
    """A private copy for a test that starts a server of its own (LMDB opens a folder once per process)."""
    return copy_collection(sample_collection, tmp_path / "col")


@pytest.fixture(scope="module")
def client(copy: Path) -> Iterator:
    """An open server (no tokens) over a copy of the 48 sample photos; tests here only read."""
    with serving(copy) as c:
        yield c


def upload(path: Path) -> dict:
    return {"image": (path.name, path.read_bytes(), "image/jpeg")}


def classes(hits: list[dict]) -> list[str]:
    return [Path(h["path"]).parent.name for h in hits]


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


# ------------------------------------------------------------------------------------------------------------ images


def test_image_metadata_and_thumbnail_by_id(client) -> None:
    info = client.get("/images/1")
    body = info.json()
    assert info.status_code == 200 and body["id"] == 1
    assert set(body) == {"id", "path", "width", "height", "format", "size", "sha256", "thumbnail_url"}
    assert body["format"] == "JPEG" and body["size"] == Path(body["path"]).stat().st_size

    thumb = client.get(body["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert thumb.content[:3] == b"\xff\xd8\xff" and "immutable" in thumb.headers["cache-control"]
    with Image.open(__import__("io").BytesIO(thumb.content)) as im:
        assert max(im.size) <= 256


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("/images/999999", 404),
        ("/images/999999/thumbnail", 404),
        ("/images/999999/vector", 404),
        ("/images/999999/similar", 404),
        ("/images/abc", 422),
        ("/images/-1", 422),
        ("/images/99999999999999999999999", 422),
        ("/images/..%2F..%2Fetc%2Fpasswd/thumbnail", 404),
        ("/no/such/endpoint", 404),
    ],
)
def test_unknown_or_malformed_ids_and_routes_are_json_errors(client, url: str, status: int) -> None:
    response = client.get(url)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json" and set(response.json()) == {"error"}
    assert "server-timing" in response.headers


def test_a_wrong_method_is_405_json(client) -> None:
    response = client.put("/search")
    assert response.status_code == 405 and set(response.json()) == {"error"}


# ------------------------------------------------------------------------------------------------------ bad uploads


def _truncated_jpeg() -> bytes:
    data = (QUERIES / "starfish_0042.jpg").read_bytes()
    return data[: len(data) // 3]


@pytest.mark.parametrize(
    ("data", "status", "needle"),
    [
        (b"hello, this is text", 415, "not an image"),
        (b"", 415, "empty"),
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj", 415, "not an image"),
        (png_claiming(20_000, 20_000), 413, "too large"),
        (_truncated_jpeg(), 422, "truncated"),
        (encoded(noise_image(), "PPM"), 415, "PPM"),
        (encoded(noise_image(), "ICO"), 415, "ICO"),
    ],
    ids=["text", "empty", "pdf", "pixel-bomb", "truncated", "ppm", "ico"],
)
def test_bad_uploads_get_the_right_4xx_in_json(client, data: bytes, status: int, needle: str) -> None:
    response = client.post("/search", files={"image": ("upload", data, "application/octet-stream")})
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"} and needle in response.json()["error"]
    assert "\n" not in response.json()["error"]


def test_other_image_formats_search_like_jpeg(client) -> None:
    photo = Image.open(QUERIES / "sunflower_0042.jpg")
    for fmt in ("PNG", "WEBP", "BMP", "GIF", "TIFF"):
        response = client.post("/search", files={"image": ("q", encoded(photo, fmt), "image/x")}, params={"k": 3})
        assert response.status_code == 200, (fmt, response.text)
        assert classes(response.json()["results"])[0] == "sunflower", fmt


# ------------------------------------------------------------------------------------------------- status and page


def test_health_info_and_metrics(client) -> None:
    assert client.get("/health/live").json() == {"status": "ok", "detail": None}
    assert client.get("/health/ready").status_code == 200
    info = client.get("/info").json()
    assert info["images"] == 48 and info["dim"] == 1280 and info["ready"] is True
    assert info["model"].startswith("default:") and info["index_factory"] == "Flat"
    assert (info["writes"], info["auth"], info["add_by_path"]) == (False, False, False)

    client.post("/search", files=upload(QUERIES / "pizza_0042.jpg"))
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    for stage in STAGES:
        assert f'simsearch_stage_seconds_count{{stage="{stage}"}}' in text
    assert 'simsearch_requests_total{method="POST",route="/search",status="200"}' in text
    assert "simsearch_forward_batch_images_count" in text and "simsearch_collection_images 48.0" in text


def test_the_page_and_its_files_are_served_with_a_strict_policy_and_nothing_external(client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("app.js", "style.css", "icon.svg"):
        asset = client.get(f"/static/{name}")
        assert asset.status_code == 200, name
        assert "//" not in asset.text.replace("http://www.w3.org/2000/svg", "").replace("// ", ""), name
    assert "http" not in page.text.lower().replace('href="/docs"', "")
    assert client.get("/static/../server/app.py").status_code == 404
    assert client.get("/docs").status_code == 200 and client.get("/openapi.json").json()["info"]["title"] == "simsearch"


def test_writes_are_refused_without_an_admin_token(client) -> None:
    response = client.post("/images", files=upload(QUERIES / "pizza_0042.jpg"))
    assert response.status_code == 403 and "admin token" in response.json()["error"]
    assert client.delete("/images/1").status_code == 403
    assert client.get("/images/1").status_code == 200


def test_no_request_makes_the_server_read_a_path_it_names(client, tmp_path: Path) -> None:
    secret = tmp_path / "secret.jpg"
    secret.write_bytes((QUERIES / "pizza_0042.jpg").read_bytes())
    attempts = [
        client.post("/search", data={"image": str(secret)}),
        client.post("/search", json={"image": str(secret)}),
        client.post("/search", params={"image": str(secret), "path": str(secret)}),
        client.post("/search/batch", data={"images": [str(secret), str(secret)]}),
        client.get(f"/images/{secret}/thumbnail"),
        client.post("/images/by-path", json={"path": str(secret)}),
    ]
    for response in attempts:
        assert 400 <= response.status_code < 500 and set(response.json()) == {"error"}, response.text
    assert client.get("/info").json()["images"] == 48


# -------------------------------------------------------------------------------------------------------- settings


def test_unsafe_settings_are_refused(copy: Path) -> None:
    from server import Settings, SettingsError, create_app

    with pytest.raises(SettingsError, match="without a read token"):
        create_app(Settings(collection=copy, host="0.0.0.0"))
    with pytest.raises(SettingsError, match="without a read token"):
        create_app(Settings(collection=copy, host="example.org", admin_token=ADMIN_TOKEN))
    with pytest.raises(SettingsError, match="too short"):
        create_app(Settings(collection=copy, token="abc"))
    with pytest.raises(SettingsError, match="must differ"):
        create_app(Settings(collection=copy, token=READ_TOKEN, admin_token=READ_TOKEN))
    for host in ("127.0.0.1", "127.8.9.10", "::1", "localhost"):
        create_app(Settings(collection=copy, host=host))
    create_app(Settings(collection=copy, host="0.0.0.0", token=READ_TOKEN))


# ---------------------------------------------------------------------------------------------- tokens and writes


@pytest.fixture
def writable(sample_collection: Path, tmp_path: Path) -> Iterator:
    """A server with both tokens over a private copy, its uploads kept under tmp_path."""
    col = copy_collection(sample_collection, tmp_path / "col")
    with serving(col, token=READ_TOKEN, admin_token=ADMIN_TOKEN, upload_dir=tmp_path / "uploads") as c:
        yield c


def test_tokens_guard_reads_and_writes(writable) -> None:
    c = writable
    photo = upload(QUERIES / "pizza_0042.jpg")
    for response in (c.post("/search", files=photo), c.get("/images/1"), c.get("/info"), c.get("/metrics")):
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        assert set(response.json()) == {"error"}
    assert c.get("/images/1", headers=bearer("wrong-token-000")).status_code == 401
    assert c.get("/images/1", headers={"Authorization": f"Basic {READ_TOKEN}"}).status_code == 401
    for token in (READ_TOKEN, ADMIN_TOKEN):
        assert c.post("/search", files=photo, headers=bearer(token)).status_code == 200
        assert c.get("/images/1/thumbnail", headers=bearer(token)).status_code == 200
    # health and the page are open: probes and browsers need no token
    assert c.get("/health/live").status_code == 200 and c.get("/health/ready").status_code == 200
    assert c.get("/").status_code == 200

    assert c.post("/images", files=photo).status_code == 401
    read_write = c.post("/images", files=photo, headers=bearer(READ_TOKEN))
    assert read_write.status_code == 403 and "admin" in read_write.json()["error"]
    assert c.delete("/images/1", headers=bearer(READ_TOKEN)).status_code == 403
    assert c.get("/images/1", headers=bearer(READ_TOKEN)).status_code == 200


def test_an_uploaded_photo_is_added_found_and_deleted(writable, tmp_path: Path) -> None:
    c, admin, read = writable, bearer(ADMIN_TOKEN), bearer(READ_TOKEN)
    data = encoded(noise_image((120, 90), seed=7), "PNG")
    added = c.post("/images", files={"image": ("noise.png", data, "image/png")}, headers=admin)
    assert added.status_code == 201, added.text
    image = added.json()["image"]
    assert added.json()["created"] is True and (image["width"], image["height"], image["format"]) == (120, 90, "PNG")
    stored = Path(image["path"])
    assert stored.parent == (tmp_path / "uploads").resolve() and stored.read_bytes() == data
    assert c.get("/info", headers=read).json()["images"] == 49

    again = c.post("/images", files={"image": ("copy.png", data, "image/png")}, headers=admin)
    assert again.status_code == 200 and again.json()["created"] is False and again.json()["image"]["id"] == image["id"]

    found = c.post("/search", files={"image": ("q.png", data, "image/png")}, headers=read, params={"k": 2})
    assert found.json()["results"][0]["id"] == image["id"] and found.json()["results"][0]["score"] > 0.999
    assert c.get(f"/images/{image['id']}/thumbnail", headers=read).status_code == 200

    gone = c.delete(f"/images/{image['id']}", headers=admin)
    assert gone.status_code == 200 and gone.json()["removed"]["id"] == image["id"]
    assert not stored.exists()
    assert c.get(f"/images/{image['id']}", headers=read).status_code == 404
    assert c.delete(f"/images/{image['id']}", headers=admin).status_code == 404
    after = c.post("/search", files={"image": ("q.png", data, "image/png")}, headers=read, params={"k": 48})
    assert image["id"] not in [h["id"] for h in after.json()["results"]] and len(after.json()["results"]) == 48


def test_a_bad_upload_to_add_is_refused_and_nothing_is_kept(writable, tmp_path: Path) -> None:
    admin = bearer(ADMIN_TOKEN)
    for data, status in ((b"not an image at all", 415), (png_claiming(30_000, 30_000), 413), (_truncated_jpeg(), 422)):
        response = writable.post("/images", files={"image": ("x", data, "image/jpeg")}, headers=admin)
        assert response.status_code == status, response.text
    assert not any((tmp_path / "uploads").glob("*")) if (tmp_path / "uploads").exists() else True
    assert writable.get("/info", headers=bearer(READ_TOKEN)).json()["images"] == 48


def test_deleting_a_photo_of_the_collection_keeps_the_users_file(writable) -> None:
    admin = bearer(ADMIN_TOKEN)
    record = writable.get("/images/3", headers=admin).json()
    assert writable.delete("/images/3", headers=admin).status_code == 200
    assert Path(record["path"]).exists()
    results = writable.get("/images/4/similar", headers=admin, params={"k": 100}).json()["results"]
    assert 3 not in [h["id"] for h in results] and len(results) == 46


def test_adding_by_path_is_confined_to_the_allowed_root(fresh: Path, tmp_path: Path) -> None:
    root = tmp_path / "allowed"
    (root / "sub").mkdir(parents=True)
    inside = root / "sub" / "photo.jpg"
    inside.write_bytes((QUERIES / "starfish_0042.jpg").read_bytes())
    outside = tmp_path / "outside.jpg"
    outside.write_bytes((QUERIES / "pizza_0042.jpg").read_bytes())
    (root / "link.jpg").symlink_to(outside)
    admin = bearer(ADMIN_TOKEN)
    with serving(fresh, admin_token=ADMIN_TOKEN, allow_root=root) as c:
        for given in (str(outside), "../outside.jpg", "link.jpg", "sub/../../outside.jpg", "/etc/passwd"):
            response = c.post("/images/by-path", json={"path": given}, headers=admin)
            assert response.status_code == 403, (given, response.text)
        assert c.post("/images/by-path", json={"path": "sub/missing.jpg"}, headers=admin).status_code == 404
        assert c.post("/images/by-path", json={"path": "sub"}, headers=admin).status_code == 404
        added = c.post("/images/by-path", json={"path": "sub/photo.jpg"}, headers=admin)
        assert added.status_code == 201 and added.json()["image"]["path"] == str(inside.resolve())
        assert c.post("/images/by-path", json={"path": str(inside)}, headers=admin).status_code == 200
        assert c.get("/info").json()["images"] == 49 and c.get("/info").json()["add_by_path"] is True


# ---------------------------------------------------------------------------------------------- limits and CORS


def test_a_body_over_the_limit_is_413_json_whether_announced_or_streamed(fresh: Path) -> None:
    big = encoded(noise_image((400, 400), seed=3), "PNG")  # ~480 KB
    with serving(fresh, max_request_mb=0.25) as c:
        announced = c.post("/search", files={"image": ("big.png", big, "image/png")})
        assert announced.status_code == 413 and "limit is 0.25 MB" in announced.json()["error"]

        def chunks() -> Iterator[bytes]:
            boundary = b"--b0undary"
            yield boundary + b'\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n\r\n'
            for start in range(0, len(big), 32_768):
                yield big[start : start + 32_768]
            yield b"\r\n" + boundary + b"--\r\n"

        streamed = c.post(
            "/search", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b0undary"}
        )
        assert streamed.status_code == 413 and set(streamed.json()) == {"error"}
        assert c.post("/search", files=upload(QUERIES / "pizza_0042.jpg")).status_code == 200


def test_a_pixel_limit_below_the_photo_refuses_it(fresh: Path) -> None:
    with serving(fresh, max_pixels=10_000) as c:
        response = c.post("/search", files=upload(QUERIES / "pizza_0042.jpg"))
        assert response.status_code == 413 and "pixels" in response.json()["error"]


def test_cors_is_off_unless_an_origin_is_allowed(fresh: Path, client) -> None:
    origin = {"Origin": "https://photos.example"}
    assert "access-control-allow-origin" not in client.get("/health/live", headers=origin).headers
    with serving(fresh, cors_origins=("https://photos.example",), ready=False) as c:
        allowed = c.get("/health/live", headers=origin)
        assert allowed.headers["access-control-allow-origin"] == "https://photos.example"
        other = c.get("/health/live", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


# ------------------------------------------------------------------------------------------------------- readiness


def test_until_the_model_is_warm_ready_is_503_and_only_photo_searches_wait(fresh: Path, monkeypatch) -> None:
    import threading

    from server.service import SearchService

    release = threading.Event()
    load = SearchService.load

    def held_load(self: SearchService) -> None:
        release.wait(120)
        load(self)

    monkeypatch.setattr(SearchService, "load", held_load)
    with serving(fresh, ready=False) as c:
        not_ready = c.get("/health/ready")
        assert not_ready.status_code == 503 and "loading" in not_ready.json()["error"]
        assert c.get("/health/live").status_code == 200 and c.get("/info").json()["ready"] is False
        photo = c.post("/search", files=upload(QUERIES / "pizza_0042.jpg"))
        assert photo.status_code == 503 and "loading" in photo.json()["error"]
        assert len(c.get("/images/1/similar", params={"k": 3}).json()["results"]) == 3  # no model needed
        release.set()
        from serving import wait_ready

        wait_ready(c)
        assert c.post("/search", files=upload(QUERIES / "pizza_0042.jpg")).status_code == 200
        assert c.get("/info").json()["ready"] is True


def test_a_model_that_cannot_load_keeps_the_server_up_and_says_why(fresh: Path, monkeypatch) -> None:
    from simsearch import Collection, ModelError

    def broken(*args: object, **kwargs: object) -> None:
        raise ModelError("weights file is damaged")

    monkeypatch.setattr(Collection, "warmup", broken)
    with serving(fresh, ready=False) as c:
        for _ in range(200):
            response = c.get("/health/ready")
            if "damaged" in response.text:
                break
            __import__("time").sleep(0.05)
        assert response.status_code == 503 and "weights file is damaged" in response.json()["error"]
        assert c.post("/search", files=upload(QUERIES / "pizza_0042.jpg")).status_code == 503
        assert c.get("/images/2").status_code == 200


# ----------------------------------------------------------------------------------------------- conflicts and 500


def test_a_write_while_another_process_writes_is_409(writable, tmp_path: Path) -> None:
    import subprocess
    import sys

    from conftest import REPO

    col = writable.app.state.service.collection.path
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, fcntl; f = open(sys.argv[1], 'wb'); fcntl.lockf(f, fcntl.LOCK_EX); print('held', flush=True); "
            "sys.stdin.read()",
            str(col / ".lock"),
        ],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        data = encoded(noise_image(seed=11), "PNG")
        response = writable.post("/images", files={"image": ("n.png", data, "image/png")}, headers=bearer(ADMIN_TOKEN))
        assert response.status_code == 409 and "another simsearch process is writing" in response.json()["error"]
        assert writable.delete("/images/2", headers=bearer(ADMIN_TOKEN)).status_code == 409
    finally:
        holder.communicate("", timeout=30)
    assert writable.delete("/images/2", headers=bearer(ADMIN_TOKEN)).status_code == 200


def test_an_unexpected_failure_is_a_json_500_with_timings(client, monkeypatch) -> None:
    service = client.app.state.service

    def broken(image_id: int) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(service, "record", broken)
    response = client.get("/images/1")
    assert response.status_code == 500 and set(response.json()) == {"error"}
    assert "disk on fire" not in response.json()["error"] and "server-timing" in response.headers
