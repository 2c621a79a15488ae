"""The HTML results page of `simsearch query --html` in a real browser (headless chromium): the query card is as
large as the result cards, even with a long path, and no path overflows its card."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import SAMPLE_PHOTOS
from test_server_browser import browser  # noqa: F401 - the fixture

from cli.main import main


def test_query_and_result_cards_have_one_size_and_paths_stay_inside(
    sample_collection: Path,
    tmp_path: Path,
    browser,  # noqa: ANN001, F811 - the fixture
) -> None:
    from selenium.webdriver.common.by import By

    folder = tmp_path / ("a_folder_name_much_longer_than_any_card_is_wide_" * 2) / "holiday photos"
    folder.mkdir(parents=True)
    query = folder / "sunflower.jpg"
    shutil.copy(SAMPLE_PHOTOS / "sunflower" / "image_0005.jpg", query)
    page = tmp_path / "page.html"
    result = CliRunner().invoke(
        main, ["query", str(query), "-c", str(sample_collection), "-k", "6", "--html", str(page)]
    )
    assert result.exit_code == 0, result.output

    browser.get(page.as_uri())
    figures = browser.find_elements(By.TAG_NAME, "figure")
    assert len(figures) == 7
    sizes = {(f.size["width"], f.size["height"]) for f in figures}
    assert len({w for w, _ in sizes}) == 1, sizes
    assert figures[0].size["width"] >= 180 and "query" in figures[0].get_attribute("class")
    overflowing = browser.execute_script(
        "return [...document.querySelectorAll('figcaption')].filter(c => c.scrollWidth > c.clientWidth).length"
    )
    assert overflowing == 0
    links = [a.get_attribute("href") for a in figures[1].find_elements(By.TAG_NAME, "a")]
    assert links and all(link.startswith("file:///") for link in links)
    with pytest.raises(Exception):  # noqa: B017, PT011 - any failure: the page loads nothing from elsewhere
        browser.find_element(By.CSS_SELECTOR, "link, script[src]")
