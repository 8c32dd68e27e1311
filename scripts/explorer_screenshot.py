"""A screenshot of the attention explorer (the README's picture): serve RUN in-process, open the page
in headless Chromium, translate SENTENCE, pick a map, hover a token, save the PNG.

    .venv/bin/python scripts/explorer_screenshot.py RUN "Ein Hund rennt durch den Schnee." docs/explorer.png \
        [--kind cross] [--layer N] [--head mean] [--hover 2]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the packages first, then tests/service_helpers

from service_helpers import LiveServer  # noqa: E402
from transformer_cli import load_run  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run"), p.add_argument("sentence"), p.add_argument("png")
    p.add_argument("--kind", default="cross"), p.add_argument("--layer", default="")
    p.add_argument("--head", default="mean"), p.add_argument("--hover", type=int, default=1)
    p.add_argument("--beam", default="5")
    a = p.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    profile = tempfile.mkdtemp()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1500,900", "--hide-scrollbars", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=shutil.which("chromedriver")))
    translator = load_run(a.run)
    body = lambda d: d.find_element(By.TAG_NAME, "body")  # noqa: E731
    try:
        with LiveServer(lambda: translator) as server:
            driver.get(server.url + "/")
            WebDriverWait(driver, 60).until(lambda d: body(d).get_attribute("data-ready") == "true")
            driver.find_element(By.ID, "text").send_keys(a.sentence)
            Select(driver.find_element(By.ID, "beam")).select_by_value(a.beam)
            driver.find_element(By.ID, "translate").click()
            WebDriverWait(driver, 120).until(lambda d: body(d).get_attribute("data-rendered") == "1")
            Select(driver.find_element(By.ID, "kind")).select_by_value(a.kind)
            if a.layer:
                Select(driver.find_element(By.ID, "layer")).select_by_value(a.layer)
            Select(driver.find_element(By.ID, "head")).select_by_value(a.head)
            token = driver.find_elements(By.CSS_SELECTOR, "#lines text.query-token")[a.hover]
            ActionChains(driver).move_to_element(token).perform()
            Path(a.png).parent.mkdir(parents=True, exist_ok=True)
            Path(a.png).write_bytes(driver.get_screenshot_as_png())
            print(f"wrote {a.png}")
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
