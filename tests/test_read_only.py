"""A collection opened read-only writes nothing: the library, the command line and the server on a read-only open,
a read-only mount and a folder its user may not write, and a stale index searched around until a writer repairs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from collection_helpers import index_older_than_the_store
from conftest import REPO, SAMPLE_PHOTOS, copy_collection
from live_helpers import env, id_of, simsearch_cli

from simsearch import Collection, open_collection
from simsearch.errors import CollectionError

pytest_plugins = ["live_helpers"]  # the private fixture


# ------------------------------------------------------------------------------------------------- reading only


def snapshot(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under `folder` but LMDB's lock file (a reader's registration), with its size, mtime and bytes."""
    out = {}
    for f in sorted(folder.rglob("*")):
        if f.is_file() and f.name != "lock.mdb":
            st = f.stat()
            out[str(f.relative_to(folder))] = (st.st_size, st.st_mtime_ns, f.read_bytes())
    return out


def assert_reads(col: Collection) -> None:
    watch = id_of(col, SAMPLE_PHOTOS / "watch" / "image_0001.jpg")
    hits = col.search_id(watch, k=5)
    assert len(hits) == 5 and Path(hits[0].path).parent.name == "watch"
    assert col.info().images == len(col) == 48


def test_a_read_only_open_writes_nothing_and_refuses_writes(private: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = private / f".manifest.json.{int(dead.stdout)}.0123abcd.tmp"
    leftover.write_text('{"format": "simsearch-coll')
    before = snapshot(private)
    with open_collection(private, device="cpu", readonly=True) as col:
        assert col.readonly
        assert_reads(col)
        assert col.search(SAMPLE_PHOTOS / "pizza" / "image_0003.jpg", k=1)[0].score > 0.999
        for write in (
            lambda: col.add([SAMPLE_PHOTOS / "pizza"]),
            lambda: col.remove([1]),
            lambda: col.index_folder(SAMPLE_PHOTOS),
            lambda: col.save(),
            lambda: col.set_index_factory("HNSW32"),
        ):
            with pytest.raises(CollectionError, match="read-only"):
                write()
    assert snapshot(private) == before  # the dead writer's temporary file too: only a writer cleans up
    with pytest.raises(CollectionError, match="created"):
        open_collection(private / "new", readonly=True, create=True)


def test_a_reader_searches_around_a_stale_index_and_the_next_writer_repairs_it(private: Path, tmp_path: Path) -> None:
    """The state a crash leaves between a store commit and the index save (and an older format besides): a reader
    repairs it in memory only, a writer saves the repair and the upgrade."""
    new_id = index_older_than_the_store(private, tmp_path)
    manifest = json.loads((private / "manifest.json").read_text())
    manifest["version"] = 1
    del manifest["model"]["hub_name_unknown"]
    (private / "manifest.json").write_text(json.dumps(manifest))
    before = snapshot(private)

    with open_collection(private, readonly=True) as col:
        assert len(col) == 46 and sorted(col.index.ids().tolist()) == col.store.ids().tolist()
        hits = col.search_vectors(col.vector(new_id), k=46)
        assert len(hits) == 46 and new_id in {r.id for r in hits[:2]} and not {1, 2, 3} & {r.id for r in hits}
    assert snapshot(private) == before

    with open_collection(private) as writer:
        writer.save()  # a write: takes the lock, upgrades the format, saves the repaired index
    after = json.loads((private / "manifest.json").read_text())
    assert after["version"] == 2 and after["count"] == 46
    with open_collection(private, readonly=True) as col:
        assert col._policy.is_current()  # noqa: SLF001 - the saved index agrees with the store


def test_the_command_line_info_and_query_write_nothing(private: Path) -> None:
    before = snapshot(private)
    facts = json.loads(simsearch_cli("info", "-c", str(private), "--json"))
    assert facts["images"] == 48
    found = json.loads(
        simsearch_cli("query", str(SAMPLE_PHOTOS / "sunflower/image_0004.jpg"), "-c", str(private), "--json")
    )
    assert found["results"][0]["score"] > 0.999
    assert snapshot(private) == before


@pytest.fixture
def read_only_mount(private: Path, tmp_path: Path) -> Iterator[Path]:
    """The private collection behind a read-only bind mount (root only, where mounting is allowed)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a read-only mount needs root and the mount command")
    ro = tmp_path / "ro"
    ro.mkdir()
    done = subprocess.run(["mount", "--bind", "-o", "ro", str(private), str(ro)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount read-only here: {done.stderr.strip()}")
    try:
        probe = ro / "probe"
        try:
            probe.touch()
        except OSError:
            pass
        else:
            probe.unlink()
            pytest.skip("the bind mount came up writable (this kernel ignores ro on a bind mount)")
        yield ro
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_a_collection_on_a_read_only_mount_answers_the_command_line_the_library_and_the_server(
    read_only_mount: Path,
) -> None:
    col_path = read_only_mount
    assert json.loads(simsearch_cli("info", "-c", str(col_path), "--json"))["images"] == 48
    query = SAMPLE_PHOTOS / "starfish" / "image_0006.jpg"
    found = json.loads(simsearch_cli("query", str(query), "-c", str(col_path), "-k", "3", "--json"))
    assert found["results"][0]["path"] == str(query) and len(found["results"]) == 3
    with open_collection(col_path, readonly=True) as col:
        assert_reads(col)
    with pytest.raises(CollectionError):  # a writer cannot even open it: one clear error, no traceback
        open_collection(col_path)
    refused = subprocess.run(
        [sys.executable, "-m", "cli.main", "remove", str(query), "-c", str(col_path)],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0 and "Traceback" not in refused.stderr and "read-only" in refused.stderr.lower()

    pytest.importorskip("fastapi")
    from serving import serving

    with serving(col_path, ready=False) as client:
        info = client.get("/info")
        assert info.status_code == 200 and info.json()["images"] == 48
        similar = client.get("/images/1/similar", params={"k": 4})
        assert similar.status_code == 200 and len(similar.json()["results"]) == 4


def test_a_user_who_may_not_write_the_folder_can_search_it(sample_collection: Path) -> None:
    """LMDB's lock file cannot be written by a user other than its owner: the reader goes on without it."""
    import tempfile

    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("running as another user needs root and setpriv")
    code = (
        "import sys, simsearch\n"
        "with simsearch.open_collection(sys.argv[1], readonly=True) as c:\n"
        "    print(len(c), len(c.search_id(1, k=5)))\n"
    )
    with tempfile.TemporaryDirectory() as shared:  # under the system's temporary folder, which every user may enter
        folder = copy_collection(sample_collection, Path(shared) / "col")
        for f in [Path(shared), *folder.rglob("*")]:
            os.chmod(f, 0o755 if f.is_dir() else 0o644)
        before = snapshot(folder)

        def as_nobody(*args: str) -> subprocess.CompletedProcess:
            command = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, *args]
            return subprocess.run(command, cwd=shared, env=env(), capture_output=True, text=True, timeout=300)

        probe = as_nobody("-c", "import simsearch")
        if probe.returncode != 0:
            pytest.skip(f"another user cannot run this Python environment: {probe.stderr.strip().splitlines()[-1]}")
        done = as_nobody("-c", code, str(folder))
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["48", "5"]
        assert "without LMDB's reader lock" in done.stderr
        assert snapshot(folder) == before
