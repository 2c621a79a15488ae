"""The web page in a real browser (Debian's chromium, driven by Selenium through chromedriver) against a real
`simsearch serve`: upload a photo, see the grid, click a result, see the grid of that image; and at phone width."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SAMPLE_PHOTOS, copy_collection
from serving import QUERIES, server_process

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _browser() -> tuple[str, str]:
    browser = next((p for p in map(shutil.which, BROWSERS) if p), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("no chromium and chromedriver on PATH (apt-get install chromium chromium-driver)")
    return browser, driver


@pytest.fixture(scope="module")
def server(sample_collection: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    _browser()
    col = copy_collection(sample_collection, tmp_path_factory.mktemp("browser") / "col")
    with server_process(col, "--log-level", "warning") as (base, _):
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = _browser()
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium fetch a browser or a driver
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--lang=en-US"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_window_size(1280, 1000)
    try:
        yield driver
    finally:
        driver.quit()


def cards(driver) -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, "#grid .card button")


def grid_ids(driver) -> list[int]:
    return [int(b.get_attribute("data-id")) for b in cards(driver)]


def wait(driver, condition, timeout: float = 120):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def thumbnails_loaded(driver, first: int = 1000) -> bool:
    """The first `first` thumbnails of the grid are decoded (they load lazily, so only those on screen)."""
    return bool(
        driver.execute_script(
            "const imgs = [...document.querySelectorAll('#grid img')].slice(0, arguments[0]);"
            "return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);",
            first,
        )
    )


def test_upload_a_photo_then_click_a_result_to_search_from_it(server: str, browser) -> None:
    from selenium.webdriver.common.by import By

    browser.get(server + "/")
    wait(browser, lambda d: "48 images" in d.find_element(By.ID, "facts-text").text)
    browser.find_element(By.ID, "k").send_keys("12")
    browser.find_element(By.ID, "file").send_keys(str(QUERIES / "sunflower_0042.jpg"))
    wait(browser, lambda d: len(cards(d)) == 12)
    wait(browser, thumbnails_loaded)

    first = cards(browser)[0]
    assert "sunflower" in first.text and first.find_element(By.CLASS_NAME, "score").text.startswith("0.")
    legend = browser.find_element(By.ID, "timing-legend").text
    assert all(stage in legend for stage in ("decode", "transform", "forward", "search", "store", "total"))
    assert browser.find_element(By.ID, "query-title").text == "Similar to sunflower_0042.jpg"

    before = grid_ids(browser)
    chosen = cards(browser)[2]
    chosen_id = int(chosen.get_attribute("data-id"))
    chosen.click()
    wait(browser, lambda d: f"#{chosen_id}" in d.find_element(By.ID, "results-title").text)
    wait(browser, lambda d: len(cards(d)) == 12 and grid_ids(d) != before)
    wait(browser, thumbnails_loaded)

    after = grid_ids(browser)
    assert chosen_id not in after  # the image itself is left out of its own results
    assert browser.current_url.endswith(f"#image={chosen_id}")
    assert "sunflower" in cards(browser)[0].text
    assert browser.find_element(By.ID, "query-title").text.startswith("Similar to sunflower/")
    assert browser.find_element(By.ID, "error").get_attribute("hidden") is not None

    browser.back()  # the previous image search is one step back in the history
    wait(browser, lambda d: not d.current_url.endswith(f"#image={chosen_id}"))


def test_a_non_image_shows_the_servers_reason(server: str, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    text = tmp_path / "notes.jpg"
    text.write_text("this is not a photo")
    browser.get(server + "/")
    browser.find_element(By.ID, "file").send_keys(str(text))
    wait(browser, lambda d: d.find_element(By.ID, "error").is_displayed())
    assert "not an image" in browser.find_element(By.ID, "error").text


def test_the_page_fits_a_phone_screen(server: str, browser) -> None:
    from selenium.webdriver.common.by import By

    browser.set_window_size(390, 900)
    try:
        browser.get(server + "/#image=1")
        wait(browser, lambda d: len(cards(d)) > 0)
        wait(browser, lambda d: thumbnails_loaded(d, first=3))
        overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0
        widths = [c.size["width"] for c in cards(browser)[:3]]
        assert all(90 <= w <= 200 for w in widths), widths  # at least three tiles across
        drop = browser.find_element(By.ID, "drop")
        assert drop.size["width"] <= 390
    finally:
        browser.set_window_size(1280, 1000)


def test_a_stored_sample_photo_is_found_from_its_own_thumbnail_page(server: str, browser) -> None:
    from selenium.webdriver.common.by import By

    browser.get(server + "/")
    browser.find_element(By.ID, "file").send_keys(str(SAMPLE_PHOTOS / "pizza" / "image_0003.jpg"))
    wait(browser, lambda d: len(cards(d)) > 0)
    top = cards(browser)[0]
    assert "pizza" in top.text and top.find_element(By.CLASS_NAME, "score").text == "1.000"
