"""The chat page in a real headless browser (Debian's chromium, driven by
selenium through Debian's chromedriver).

Skipped when no chromium binary is installed (CI installs it:
`apt-get install -y chromium chromium-driver`). Set
`ILM_SCREENSHOT=benchmarks/results/serve_page.png` to save a screenshot.
"""

import os
import shutil
import tempfile

import pytest

from tiny_chat_preset import ITEMS
from tiny_chat_preset import TITLES

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser",
                             shutil.which("chromium") or "")
                 if p and os.path.exists(p)), None)
CHROMEDRIVER = next((p for p in ("/usr/bin/chromedriver",
                                 shutil.which("chromedriver") or "")
                     if p and os.path.exists(p)), None)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver "
    "(apt-get install -y chromium chromium-driver)")


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="ilm_chromium_")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1200,820",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER),
                              options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def test_type_a_message_and_see_the_reply_and_the_items(browser, server_url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server_url + "/")
    assert browser.title == "ILM chat"
    wait = WebDriverWait(browser, 60)
    box = browser.find_element(By.ID, "message")
    box.send_keys("recommend something after Harbor Electric and Dragon Night")
    browser.find_element(By.ID, "send").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.ilm"))
    reply = browser.find_elements(By.CSS_SELECTOR, ".msg.ilm")[-1].text
    assert reply.startswith("After Harbor Electric (1950), Dragon Night (1953), try:")
    items = browser.find_elements(By.CSS_SELECTOR, "#items li")
    assert len(items) == 3
    for li in items:
        item = li.get_attribute("data-item")
        assert item in ITEMS and item not in ("1001", "1007")
        assert li.find_element(By.CSS_SELECTOR, ".title").text == TITLES[ITEMS.index(item)]
    history = [li.get_attribute("data-item")
               for li in browser.find_elements(By.CSS_SELECTOR, "#history li")]
    assert history == ["1001", "1007"]

    # Click the first recommendation: the page asks what it is about.
    first = items[0].get_attribute("data-item")
    items[0].click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".msg.ilm")) == 2)
    reply = browser.find_elements(By.CSS_SELECTOR, ".msg.ilm")[-1].text
    assert reply.startswith(f"{TITLES[ITEMS.index(first)]} [item_{first}]: ")
    screenshot = os.environ.get("ILM_SCREENSHOT")
    if screenshot:
        os.makedirs(os.path.dirname(os.path.abspath(screenshot)), exist_ok=True)
        browser.save_screenshot(screenshot)

    # Start over: an empty page and a new conversation.
    browser.find_element(By.ID, "reset").click()
    assert browser.find_elements(By.CSS_SELECTOR, ".msg.ilm") == []
    assert browser.find_elements(By.CSS_SELECTOR, "#items li") == []
    box = browser.find_element(By.ID, "message")
    box.send_keys("/history\n")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.ilm"))
    assert browser.find_elements(By.CSS_SELECTOR, ".msg.ilm")[-1].text == (
        "The history is empty.")
