"""The attention explorer in a real browser: headless Chromium (Debian's chromium and chromium-driver)
driven by Selenium loads the page, translates, switches kind / layer / head / values, and every drawn
cell equals the /v1/attention number. Skipped where Chromium is not installed, unless
TRANSFORMER_CLI_BROWSER=required (.ci/run sets it after installing Chromium)."""

import os
import shutil

import pytest

from service_helpers import LiveServer
from transformer_cli import load_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SENTENCE = "I am a student from Müller's school."


def browser(tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("TRANSFORMER_CLI_BROWSER") == "required":
            pytest.fail("Chromium and chromedriver are required here (apt-get install chromium chromium-driver)")
        pytest.skip("Chromium or chromedriver not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-quic", "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


@pytest.fixture
def page(model_dir, tmp_path):
    driver = browser(tmp_path)
    translator = load_run(model_dir)
    try:
        with LiveServer(lambda: translator) as server:
            driver.get(server.url + "/")
            yield driver, server
    finally:
        driver.quit()


def wait(driver, condition, timeout=60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: condition(d))


def drawn_cells(driver) -> list[list[str]]:
    rows = driver.execute_script(
        "return [...document.querySelectorAll('#heatmap tbody tr')].map(tr => "
        "[...tr.querySelectorAll('td.cell')].map(td => td.dataset.value))")
    return rows


def choose(driver, element_id: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, element_id)).select_by_value(value)


def test_the_explorer_translates_and_draws_the_apis_numbers(page, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver, server = page
    wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
    driver.find_element(By.ID, "text").send_keys(SENTENCE)
    choose(driver, "beam", "2")
    driver.find_element(By.ID, "translate").click()
    wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-rendered") == "1")

    doc = server.post("/v1/attention", {"text": SENTENCE, "beam_size": 2}).json()
    assert driver.find_element(By.ID, "translation").text == doc["translation"]
    assert any("\uac00" <= ch <= "\ud7a3" for ch in doc["translation"])  # Korean, drawn as text
    maps = {(m["kind"], m["layer"], str(m["head"])): m for m in doc["maps"]}
    for kind, layer, head, values in [("cross", "1", "mean", "weights"), ("encoder", "1", "2", "weights"),
                                      ("decoder", "1", "1", "scores"), ("decoder", "1", "mean", "weights"),
                                      ("cross", "1", "2", "scores")]:
        for element, value in (("kind", kind), ("layer", layer), ("head", head), ("values", values)):
            choose(driver, element, value)
        m = maps[(kind, int(layer), head)]
        assert _close(drawn_cells(driver), m[values]), (kind, layer, head, values)
        headers = driver.execute_script("return [...document.querySelectorAll('#heatmap tbody th')].map(t => t.textContent)")
        columns = driver.execute_script("return [...document.querySelectorAll('#heatmap thead th')].map(t => t.textContent)")
        assert headers == m["rows"] and columns[1:] == m["columns"]
    assert "Müller" in "".join(doc["source_tokens"]) or "<unk>" in doc["source_tokens"]

    # the masked decoder's future cells are drawn as -inf in the scores view
    choose(driver, "kind", "decoder"), choose(driver, "values", "scores")
    masked = driver.find_elements(By.CSS_SELECTOR, "#heatmap td.masked")
    assert masked and all(td.text == "−∞" for td in masked)

    # hovering a query token leaves only its own lines visible
    choose(driver, "kind", "cross"), choose(driver, "values", "weights")
    token = driver.find_elements(By.CSS_SELECTOR, "#lines text.query-token")[0]
    ActionChains(driver).move_to_element(token).perform()
    opacities = driver.execute_script(
        "return [...document.querySelectorAll('#lines line.attn-line')].map(l => [l.dataset.row, l.getAttribute('stroke-opacity')])")
    assert opacities and all(float(o) == 0 for r, o in opacities if r != "0")
    assert any(float(o) > 0 for r, o in opacities if r == "0")
    assert driver.get_screenshot_as_png()[:8] == b"\x89PNG\r\n\x1a\n"

    # Korean, German and English are drawn with real glyphs in the page's font, not as empty boxes
    no_glyph = drawn(driver, "\U0010fffd")
    for ch in ("학", "ü", "ß", "a"):
        assert drawn(driver, ch) != no_glyph, f"{ch!r} is drawn as a missing glyph (install fonts-nanum)"


def drawn(driver, ch: str) -> str:
    """The pixels of one character drawn in the page's font (a missing glyph draws the same box for all)."""
    return driver.execute_script(
        "const c = document.createElement('canvas'); c.width = 48; c.height = 48;"
        "const g = c.getContext('2d'); g.font = '32px ' + getComputedStyle(document.body).fontFamily;"
        "g.fillText(arguments[0], 4, 36); return c.toDataURL();", ch)


def _close(drawn, values) -> bool:
    """Drawn data-value strings against the API's numbers (JS prints floats with its own digits)."""
    for drow, vrow in zip(drawn, values, strict=True):
        for d, v in zip(drow, vrow, strict=True):
            if (v is None) != (d == "masked") or (v is not None and abs(float(d) - v) > 1e-9):
                return False
    return True


def test_an_error_is_shown_on_the_page(page):
    from selenium.webdriver.common.by import By

    driver, server = page
    wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
    driver.find_element(By.ID, "translate").click()
    assert "type a sentence" in driver.find_element(By.ID, "status").text
    driver.find_element(By.ID, "text").send_keys("x" * 2100)
    driver.find_element(By.ID, "translate").click()
    wait(driver, lambda d: "max_chars" in d.find_element(By.ID, "status").text)
