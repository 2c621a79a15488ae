"""The two-view benchmark's data (`benchmarks.twoview`): disjoint train and test words, drawn in two font families as
class folders of one image per view, which `open_views` reads. Needs Debian's DejaVu and Liberation fonts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.twoview import GALLERY_VIEW, QUERY_VIEW, _without_work, draw_words, find_fonts, write_views
from simsearch.data import open_views


@pytest.fixture(scope="module")
def fonts() -> dict[str, Path]:
    try:
        return find_fonts()
    except SystemExit as exc:
        pytest.skip(str(exc))


def test_the_words_are_distinct_drawn_once_and_split_disjoint() -> None:
    words = draw_words(60, 3, seed=0)
    assert len(set(words)) == 60 and all(len(w) == 3 and w.isalpha() and w.islower() for w in words)
    assert draw_words(60, 3, seed=0) == words and draw_words(60, 3, seed=1) != words
    assert draw_words(70, 3, seed=0)[:60] == words  # more words extend the draw: a test set never moves into training
    assert _without_work(["--work", "somewhere", "--seed", "2"]) == ["--work WORK", "--seed", "2"]


def test_each_word_is_drawn_in_both_views_as_two_view_data(fonts: dict[str, Path], tmp_path: Path) -> None:
    words = draw_words(5, 3, seed=0)
    root = write_views(tmp_path / "test", words, fonts, 64, seed=3)
    viewed = open_views(root, (QUERY_VIEW, GALLERY_VIEW))
    assert viewed.classes == sorted(words) and len(viewed) == 10
    for word in words:
        pixels = {view: np.asarray(viewed.dataset[i][0].convert("L")) for i, view in _images_of(viewed, word)}
        assert set(pixels) == {QUERY_VIEW, GALLERY_VIEW}
        for image in pixels.values():
            assert image.shape == (64, 64) and image.min() < 64 and image.max() == 255  # ink on white
        assert not np.array_equal(pixels[QUERY_VIEW], pixels[GALLERY_VIEW])


def _images_of(viewed, word: str) -> list[tuple[int, str]]:  # type: ignore[no-untyped-def]
    label = viewed.classes.index(word)
    return [(i, viewed.view_names[viewed.views[i]]) for i in np.flatnonzero(viewed.labels == label)]
