"""The HTTP API on real photos, in-process (FastAPI's TestClient): metadata, thumbnails, error codes, health, the
page, size and pixel limits, CORS, the warm-up and failures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from server_api_helpers import STAGES, _truncated_jpeg, classes, upload
from serving import QUERIES, encoded, noise_image, png_claiming, serving

pytest_plugins = ["server_api_helpers"]  # the client, fresh fixtures

pytest.importorskip("fastapi")

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

    monkeypatch.setattr(Collection, "embedder", property(broken))
    with serving(fresh, ready=False) as c:
        for _ in range(200):
            response = c.get("/health/ready")
            if "damaged" in response.text:
                break
            __import__("time").sleep(0.05)
        assert response.status_code == 503 and "weights file is damaged" in response.json()["error"]
        assert c.post("/search", files=upload(QUERIES / "pizza_0042.jpg")).status_code == 503
        assert c.get("/images/2").status_code == 200


def test_an_unexpected_failure_is_a_json_500_with_timings(client, monkeypatch) -> None:
    service = client.app.state.service

    def broken(image_id: int) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(service, "record", broken)
    response = client.get("/images/1")
    assert response.status_code == 500 and set(response.json()) == {"error"}
    assert "disk on fire" not in response.json()["error"] and "server-timing" in response.headers
