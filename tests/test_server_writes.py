"""Writing through the HTTP API, in-process (FastAPI's TestClient): tokens, adding and deleting photos, the allowed
root, unsafe settings, no path read on a request's word, and a write while another process writes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import copy_collection
from server_api_helpers import _truncated_jpeg, upload
from serving import ADMIN_TOKEN, QUERIES, READ_TOKEN, bearer, encoded, noise_image, png_claiming, serving

pytest_plugins = ["server_api_helpers"]  # the client, copy, fresh fixtures

pytest.importorskip("fastapi")


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
