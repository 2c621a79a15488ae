"""`Embedder.embed`: images in the forms a user holds them (paths, bytes, PIL images) to `(N, D) float32`, the same
vectors that scoring and a collection get for them, and a clear error for anything else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SAMPLE_PHOTOS
from PIL import Image
from training_helpers import TINY

from simsearch.data import ImageFolderDataset
from simsearch.errors import ImageError
from simsearch.evaluation import embed_dataset
from simsearch.models import Embedder, random_embedder


def test_paths_bytes_and_pil_images_give_the_vectors_that_scoring_gives(default_embedder: Embedder) -> None:
    paths = sorted((SAMPLE_PHOTOS / "pizza").iterdir())[:3]
    as_bytes = paths[1].read_bytes()
    with Image.open(paths[2]) as opened:
        as_pil = opened.copy()
    vectors = default_embedder.embed([str(paths[0]), as_bytes, as_pil], batch_size=2)  # two batches
    assert vectors.shape == (3, default_embedder.embed_dim) and vectors.dtype == np.float32
    assert vectors.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    dataset = ImageFolderDataset(SAMPLE_PHOTOS, classes=["pizza"])
    dataset.samples = dataset.samples[:3]
    dataset.labels = dataset.labels[:3]
    expected, _ = embed_dataset(default_embedder, dataset)
    # Scoring resizes with timm's transform, embedding resamples only the crop: a few pixels apart by a level or two.
    assert np.sum(vectors * expected, axis=1).min() >= 0.99999
    np.testing.assert_allclose(vectors, expected, atol=1e-3)

    one = default_embedder.embed(paths[0])  # a single image is a list of one
    np.testing.assert_allclose(one, vectors[:1], atol=1e-5)
    assert default_embedder.embed([]).shape == (0, default_embedder.embed_dim)


def test_an_int_or_an_array_is_a_clear_error_before_anything_is_read(
    default_embedder: Embedder, tmp_path: Path
) -> None:
    with pytest.raises(ImageError, match="^int is not a file path, encoded bytes or a PIL image"):
        default_embedder.embed(3)  # type: ignore[arg-type]
    path = str(next((SAMPLE_PHOTOS / "pizza").iterdir()))
    with pytest.raises(ImageError, match="^image 1 is int, not a file path, encoded bytes or a PIL image"):
        default_embedder.embed([path, 0])
    with pytest.raises(ImageError, match="^image 0 is ndarray"):
        default_embedder.embed([np.zeros((8, 8, 3), np.uint8)])
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(ImageError):
        default_embedder.embed([tmp_path / "broken.jpg"])


def test_a_model_in_training_mode_embeds_in_eval_mode_and_is_left_as_it_was() -> None:
    torch.manual_seed(0)
    model = random_embedder(TINY.removeprefix("random:"))
    model.train()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    first = model.embed([image, image])
    assert model.training
    np.testing.assert_allclose(first[0], first[1], atol=1e-6)  # no dropout, no batch statistics
    model.eval()
    np.testing.assert_allclose(model.embed([image]), first[:1], atol=1e-5)


def test_lanes_give_the_vectors_thumbnails_and_failures_of_decoding_here(default_embedder: Embedder, tmp_path) -> None:
    """Worker processes that decode and run the model (the default on 2 cores) against everything in this
    process: the same files embedded, the same vectors (threads change only the float summation order), the same
    thumbnails, and a broken file reported at its position."""
    from simsearch.embedding import embed_files

    photos = sorted(SAMPLE_PHOTOS.rglob("*.jpg"))[:9]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(photos[0].read_bytes()[:300])
    paths = [*photos[:4], broken, *photos[4:]]

    def run(**layout) -> tuple[dict[int, np.ndarray], dict[int, bytes | None], dict[int, str], int]:
        vectors, thumbs, failures, batches = {}, {}, {}, 0
        for batch in embed_files(default_embedder, paths, batch_size=3, **layout):
            batches += 1
            vectors.update(zip(batch.positions, batch.vectors, strict=True))
            thumbs.update(zip(batch.positions, batch.thumbnails, strict=True))
            failures.update(batch.failures)
        return vectors, thumbs, failures, batches

    here = run(workers=0)
    lanes = run(lanes=2)
    assert sorted(lanes[0]) == sorted(here[0]) == [i for i in range(len(paths)) if i != 4]
    for position, vector in here[0].items():
        np.testing.assert_allclose(lanes[0][position], vector, atol=1e-5)
    assert lanes[1] == here[1]
    assert list(lanes[2]) == list(here[2]) == [4] and "truncated" in lanes[2][4].lower()
    # each lane takes half the files: a pass of one image first (a quarter batch, at least 1), then passes of 3 and 1
    assert here[3] == 4 and lanes[3] == 6


@pytest.mark.parametrize("n, batch_size, lanes", [(1000, 32, 2), (10, 3, 2), (7, 32, 2), (1, 32, 2), (101, 4, 3)])
def test_lanes_get_equal_shares_in_order(n: int, batch_size: int, lanes: int) -> None:
    """Batches cover every position once, in order; dealt round-robin, they give each lane the same number of files
    (give or take one), each lane's first batch a quarter batch, none over `batch_size`."""
    from simsearch.embedding import _ramped

    batches = _ramped(n, batch_size, lanes)
    assert [p for batch in batches for p in batch] == list(range(n))
    shares = [sum(len(b) for b in batches[lane::lanes]) for lane in range(lanes)]
    assert max(shares) - min(shares) <= 1 and sum(shares) == n
    assert all(len(b) <= batch_size for b in batches) and all(batches)
    assert all(len(b) <= max(1, batch_size // 4) for b in batches[:lanes])
