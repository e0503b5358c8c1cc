"""The explorer page in a real browser: Debian's headless Chromium driven by selenium through chromium-driver.

``make test`` installs chromium and chromium-driver with apt where they are missing; without a package manager to
install them this test skips, saying so.
"""
from __future__ import annotations

import shutil

import pytest

from diffscm.scm.core import SCM
from diffscm.service.explorer import Explorer
from diffscm.service.server import running

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("no chromium/chromedriver: `make test` installs Debian's chromium and chromium-driver with apt, "
                    "which this machine lacks")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)


def test_pick_an_image_move_a_slider_and_the_counterfactual_changes():
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    ex = Explorer(SCM.from_pretrained("morphomnist"), n_images=8)
    driver = browser()
    try:
        with running(ex) as url:
            driver.get(url + "/")
            wait = WebDriverWait(driver, 120)
            wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
            thumbs = driver.find_elements(By.CSS_SELECTOR, "#thumbs img")
            assert len(thumbs) == 8
            thumbs[2].click()
            cf = driver.find_element(By.ID, "cf")
            wait.until(lambda d: cf.get_attribute("data-seq"))
            first, seq = cf.get_attribute("src"), cf.get_attribute("data-seq")
            factual = driver.find_element(By.ID, "factual").get_attribute("src")
            assert first == factual                          # no do() yet: the null intervention returns the image
            assert driver.find_element(By.ID, "true-view").get_attribute("class") == "view"   # shown for Morpho
            slider = driver.find_element(By.ID, "do-thickness")
            before = float(slider.get_attribute("value"))
            slider.click()
            slider.send_keys(*([Keys.ARROW_RIGHT] * 60))    # a user dragging the thickness slider by keyboard
            assert float(slider.get_attribute("value")) > before
            assert driver.find_element(By.ID, "on-thickness").is_selected()
            wait.until(lambda d: cf.get_attribute("data-seq") != seq and "computing" not in
                       d.find_element(By.ID, "status").text)
            assert cf.get_attribute("src") != first
            status = driver.find_element(By.ID, "status")
            assert "class" not in status.get_attribute("outerHTML") or "err" not in status.get_attribute("class")
            rows = driver.find_element(By.ID, "values").text
            assert "thickness" in rows and "(do)" in rows
    finally:
        driver.quit()
        ex.close()
