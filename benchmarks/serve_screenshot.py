"""A screenshot of the `ilm-serve` chat page over a trained preset, for the
README.

    python benchmarks/serve_screenshot.py --preset runs/quickstart/preset

Starts `python -m ilm_keras.serve PRESET` on a free loopback port, opens the
page in Debian's headless chromium (selenium, `/usr/bin/chromedriver`),
asks for recommendations after two items, clicks the first one (the page
asks what it is about) and saves `benchmarks/results/serve_page.png`.
"""

import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import REPO  # noqa: E402
from serve_latency import free_port  # noqa: E402
from serve_latency import start_server  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="runs/quickstart/preset")
    parser.add_argument("--output", default=os.path.join(
        REPO, "benchmarks", "results", "serve_page.png"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = parser.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from ilm_keras.chat.options import load_model

    from ilm_keras.chat.catalogue import Catalogue

    catalogue = Catalogue(load_model(args.preset).preprocessor)
    # The first item whose title alone names it, and another by its id.
    first = next((i for i in catalogue.item_ids
                  if catalogue.resolve(catalogue.title(i).split(" (")[0]) == i),
                 catalogue.item_ids[0])
    second = next(i for i in catalogue.item_ids if i != first)
    title = catalogue.title(first).split(" (")[0]
    port = free_port()
    server = start_server(args.preset, port, f"/tmp/ilm_serve_shot_{port}.log")
    profile = tempfile.mkdtemp(prefix="ilm_chromium_")
    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1200,760",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=args.chromedriver),
                              options=options)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 120)
        driver.find_element(By.ID, "message").send_keys(
            f"recommend something after {title} and item_{second}\n")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#items li"))
        driver.find_elements(By.CSS_SELECTOR, "#items li")[0].click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".msg.ilm")) == 2)
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        driver.save_screenshot(args.output)
        print(f"wrote {args.output}")
    finally:
        driver.quit()
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
