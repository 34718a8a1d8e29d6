"""The labelling page in a real browser: Debian's chromium and chromedriver, driven by Selenium."""

from __future__ import annotations

import json
import shutil
import threading
import urllib.request

import numpy as np
import pytest

from edge.tools import synthetic
from tests.capture_helpers import store_windows
from trainer.captures import LABELS
from trainer.label.server import LabelApp, make_server

CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1100,900")


def browser(profile):
    """Headless chromium (Debian's, offline: no updates, sync or first-run network calls)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        raise RuntimeError("chromium and chromedriver are not installed; run: sudo apt-get "
                           "install -y chromium chromium-driver (make test does)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROME_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(driver))


@pytest.fixture
def page(tmp_path):
    """A capture directory of three windows and the page serving it on a free port."""
    rng = np.random.default_rng(0)
    X = np.stack([synthetic.signal(lb, 64, rng) for lb in ("normal", "imbalance", "normal")])
    probs = np.array([[0.5, 0.3, 0.2], [0.4, 0.35, 0.25], [0.9, 0.05, 0.05]])
    ids = store_windows(tmp_path / "caps", X, probs, ("normal", "imbalance", "misalignment"),
                        synthetic.CHANNELS, reasons=["uncertain", "uncertain", "sample"])
    app = LabelApp(tmp_path / "caps", labels=["normal", "imbalance"])
    server = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", tmp_path / "caps", ids
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_label_with_keys_saves_at_once_and_a_reload_keeps_it(page, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, root, ids = page
    # Least confident first: 0.40 (ids[1]), then 0.50 (ids[0]), then the random sample.
    order = [ids[1], ids[0], ids[2]]
    driver = browser(tmp_path / "profile")
    wait = WebDriverWait(driver, 20)

    def shown() -> str:  # the capture whose plot is on screen, once the image has loaded
        img = driver.find_element(By.ID, "plot")
        loaded = driver.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", img)
        return img.get_attribute("data-id") if loaded else ""

    def progress() -> str:
        return driver.find_element(By.ID, "progress").text

    def saved() -> dict:
        path = root / LABELS
        return json.loads(path.read_text())["labels"] if path.exists() else {}

    def press(key: str) -> None:
        driver.find_element(By.TAG_NAME, "body").send_keys(key)

    try:
        driver.get(url)
        wait.until(lambda d: shown() == order[0])
        assert progress() == "labelled 0 / 3"
        size = driver.execute_script("return [arguments[0].naturalWidth, "
                                     "arguments[0].naturalHeight]",
                                     driver.find_element(By.ID, "plot"))
        assert size[0] > 400 and size[1] > 200  # a rendered plot, not a broken image
        with urllib.request.urlopen(f"{url}plot/{order[0]}.png") as r:
            assert r.headers["Content-Type"] == "image/png" and r.read(8) == b"\x89PNG\r\n\x1a\n"
        meta = driver.find_element(By.ID, "meta").text
        assert "model says normal (40%)" in meta and "dev1" in meta
        buttons = driver.find_elements(By.CSS_SELECTOR, "button.label")
        assert [b.get_attribute("data-label") for b in buttons] == [
            "normal", "imbalance", "misalignment"]  # --labels first, then the model's
        assert buttons[1].find_element(By.TAG_NAME, "kbd").text == "2"

        press("2")  # imbalance: saved at once, next window shown
        wait.until(lambda d: progress() == "labelled 1 / 3" and shown() == order[1])
        assert saved() == {order[0]: "imbalance"}

        driver.refresh()  # nothing lost, and the labelled window does not come back
        wait.until(lambda d: shown() == order[1])
        assert progress() == "labelled 1 / 3"

        press("s")
        wait.until(lambda d: shown() == order[2])
        assert saved()[order[1]] is None and "skipped 1" in progress()

        press("n")  # a label the model does not know yet
        driver.switch_to.active_element.send_keys("loose_bolt\n")
        wait.until(lambda d: d.find_element(By.ID, "done").is_displayed())
        assert saved()[order[2]] == "loose_bolt"
        assert progress() == "labelled 2 / 3 (skipped 1)"
    finally:
        driver.quit()
    assert "loose_bolt" in json.loads((root / LABELS).read_text())["label_set"]


def test_bad_labels_are_refused_with_a_message(page):
    url, root, ids = page

    def post(body, ctype="application/json"):
        req = urllib.request.Request(f"{url}api/label", data=json.dumps(body).encode(),
                                     headers={"Content-Type": ctype}, method="POST")
        try:
            with urllib.request.urlopen(req) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    assert post({"id": "0" * 24, "label": "x"})[0] == 400
    status, body = post({"id": ids[0], "label": "a\nb"})
    assert status == 400 and "printable" in body["error"]
    assert post({"id": ids[0], "label": "x"}, ctype="text/plain")[0] == 415
    status, body = post({"id": ids[0], "label": " normal "})
    assert status == 200 and body["progress"]["labelled"] == 1
    assert not (root / "windows" / "labels.json").exists()
