"""Shared fixtures: the real data folder, Caltech-101 photos unpacked on demand, the sample collection and the default
model.

The library has no default data folder: the tests read the shared data sets beside the checkout (`../shared/data`)
unless $SIMSEARCH_DATA names another folder, and set the variable so that the library and the commands that the
tests run (in this process or in a child) find the same folder."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if not os.environ.get("SIMSEARCH_DATA"):
    os.environ["SIMSEARCH_DATA"] = str(REPO.parent / "shared" / "data")
DATA = Path(os.environ["SIMSEARCH_DATA"])
CALTECH_TAR = DATA / "caltech101" / "101_ObjectCategories.tar"
SAMPLES = REPO / "samples"


def require_caltech() -> Path:
    if not CALTECH_TAR.exists():
        pytest.skip(f"Caltech-101 not found at {CALTECH_TAR} (set SIMSEARCH_DATA to the shared data folder)")
    return CALTECH_TAR


def unpack_caltech(dest: Path, classes: dict[str, int]) -> dict[str, list[Path]]:
    """Unpack the first ``n`` photos of each named class into ``dest/<class>/``; returns the paths per class."""
    tar_path = require_caltech()
    wanted: dict[str, list[str]] = {}
    with tarfile.open(tar_path) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".jpg")]
        for cls, n in classes.items():
            names = sorted(m.name for m in members if m.name.split("/")[-2] == cls)[:n]
            if len(names) < n:
                raise RuntimeError(f"class {cls} has only {len(names)} photos")
            wanted[cls] = names
        by_name = {m.name: m for m in members}
        out: dict[str, list[Path]] = {}
        for cls, names in wanted.items():
            (dest / cls).mkdir(parents=True, exist_ok=True)
            out[cls] = []
            for name in names:
                target = dest / cls / Path(name).name
                f = tar.extractfile(by_name[name])
                assert f is not None
                target.write_bytes(f.read())
                out[cls].append(target)
    return out


@pytest.fixture(scope="session")
def default_embedder():
    """The offline default model, loaded once per test run (about a second)."""
    from simsearch.models import load_embedder

    return load_embedder(None, device="cpu")


SAMPLE_PHOTOS = SAMPLES / "caltech101"


def copy_collection(src: Path, dest: Path) -> Path:
    """A private copy of a collection folder, for a test that writes to it (the store keeps absolute image paths,
    so the copy still points at the same photos)."""
    import shutil

    shutil.copytree(src, dest)
    return dest


@pytest.fixture(scope="session")
def sample_collection(tmp_path_factory) -> Path:
    """A collection of the 48 bundled sample photos (default model, exact index), built once per test run.

    Tests only read it, and close what they open (LMDB refuses a second open in one process); a test that writes
    works on `copy_collection(sample_collection, tmp_path / "col")`.
    """
    from simsearch import Collection

    path = tmp_path_factory.mktemp("sample-collection") / "col"
    with Collection.open(path, create=True, device="cpu") as col:
        report = col.index_folder(SAMPLE_PHOTOS, workers=0)
    if report.added != 48 or report.skipped:
        raise RuntimeError(f"the sample collection did not build cleanly: {report}")
    return path


#: How long a test may wait for the single-node Ray cluster to start (a loaded 2-core machine takes 10-30 s).
RAY_START_TIMEOUT_S = 180


@pytest.fixture(scope="session")
def ray_cluster():
    """A real single-node Ray cluster of 2 CPUs, started once for the whole test run and shut down at its end;
    skipped when the `ray` extra is not installed, failed when it does not start within RAY_START_TIMEOUT_S.

    Started from the main thread: Ray's processes die with the thread that started them (PR_SET_PDEATHSIG)."""
    import signal

    ray = pytest.importorskip("ray", reason="the Ray engine tests need the `ray` extra: pip install 'simsearch[ray]'")
    pytest.importorskip("ray.data", reason="the Ray engine tests need Ray Data: pip install 'simsearch[ray]'")

    def too_slow(signum, frame):
        raise TimeoutError(f"the Ray cluster did not start within {RAY_START_TIMEOUT_S} s")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(RAY_START_TIMEOUT_S)
    try:
        ray.init(num_cpus=2, object_store_memory=512 * 2**20, include_dashboard=False, logging_level="WARNING")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    yield ray
    ray.shutdown()
