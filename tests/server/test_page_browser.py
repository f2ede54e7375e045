"""The live page in a real headless Chromium (issue 28 item 4), against a real ``syngrpo serve`` on 127.0.0.1 with
a token: it loads, shows the counts the API reports, updates after a job finishes without reloading, shows an
original beside its synthesized image with the boxes drawn, writes descriptions as text, and shows nothing
without the token.  The screenshot is kept under the test's tmp dir (``page.png``); with
``SYNGRPO_PAGE_SCREENSHOT=PATH`` it is also copied there (docs/data-server/page.png is made so)."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path

import pytest

from syngrpo.synthesis.server.spawn import start_server_subprocess

from .browser import chromium, wait_for
from .support import job_body

TOKEN = "browser-token-0123"
PLUGIN = Path(__file__).with_name("probe_plugin.py")
DESCRIPTIONS = ["a busy red striped kitchen", "a calm blue beach at night", "a green checker floor, cluttered"]


def _api(url: str, path: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, headers={"Authorization": f"Bearer {TOKEN}",
                                                                 **({"Content-Type": "application/json"} if data else {})})
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
        raw = resp.read()
        return json.loads(raw) if resp.headers.get_content_type() == "application/json" else raw.decode()


def _metric(url: str, name: str) -> float:
    for line in _api(url, "/metrics").splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


@pytest.fixture
def server(tmp_path):
    log_dir = tmp_path / "probe-log"
    log_dir.mkdir()
    handle = start_server_subprocess(data_dir=tmp_path / "store", token=TOKEN, wait_ready=True,
                                     overrides=[f"plugins=[{PLUGIN}]", "workers=2", "synthesizer=rng_probe",
                                                f"synthesizer_options={{log_dir: {log_dir}}}"],
                                     log_path=tmp_path / "server.log")
    yield handle
    handle.stop()


@pytest.fixture
def browser(tmp_path):
    driver = chromium(tmp_path / "profile")
    yield driver
    driver.quit()


def _text(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def _until_done(url: str, n: int) -> dict:
    return wait_for(lambda: (o := _api(url, "/v1/overview"))["jobs"]["done_total"] + o["jobs"]["failed_total"] >= n
                    and o, what=f"{n} jobs finished")


def test_the_page_shows_the_api_counts_updates_live_and_shows_image_pairs(server, browser, tmp_path):
    url = server.url
    for i, description in enumerate(DESCRIPTIONS):
        _api(url, "/v1/jobs", job_body(f"page-{i}", description=description, seed=i))
    _api(url, "/v1/jobs", job_body("page-fail", description="a wall that fails", options={"fail": True}))
    overview = _until_done(url, 4)

    browser.get(f"{url}/#token={TOKEN}")
    wait_for(lambda: int(browser.find_element("tag name", "body").get_attribute("data-updates") or 0) >= 1,
             what="the page's first update")
    assert "token" not in browser.current_url  # the fragment is taken out of the address bar
    browser.execute_script("window.__loaded_once = 'yes'")  # gone if the page reloaded
    # the counts the API reports (the overview and /metrics agree)
    wait_for(lambda: _text(browser, "done-total") == str(overview["jobs"]["done_total"]) == "3", what="done count")
    assert _text(browser, "failed-total") == "1" == str(int(_metric(url, "syngrpo_jobs_failed_total")))
    assert _text(browser, "queue-depth") == "0" == str(int(_metric(url, "syngrpo_queue_depth")))
    assert _text(browser, "done-total") == str(int(_metric(url, "syngrpo_jobs_done_total")))
    rows = browser.find_elements("css selector", "#workers tbody tr")
    assert len(rows) == 2 and all("process" in r.text for r in rows)
    failures = browser.find_element("id", "failures").text
    assert "synthesis failed: RuntimeError" in failures and "asked to fail" in failures

    # a job that finishes now shows up without a reload
    _api(url, "/v1/jobs", job_body("page-late", description='<img src=x onerror="window.__xss=1"> on a beach', seed=9))
    wait_for(lambda: _text(browser, "done-total") == "4", what="the page counting the new job")
    assert browser.execute_script("return window.__loaded_once") == "yes"
    assert browser.execute_script("return performance.getEntriesByType('navigation').length") == 1

    # the newest pair: both images loaded, the two labelled boxes drawn on each, the description as text
    pair = wait_for(lambda: browser.find_elements("css selector", "#pairs .pair")[0], what="a pair")
    assert browser.find_elements("css selector", "#pairs .pair")[0].find_element(
        "css selector", ".description").text == '<img src=x onerror="window.__xss=1"> on a beach'
    wait_for(lambda: browser.execute_script(
        "return Array.from(document.querySelectorAll('#pairs .pair img')).every(i => i.complete && i.naturalWidth > 0)"
        " && document.querySelectorAll('#pairs .pair img').length === 8"), what="every pair's images loaded")
    assert browser.execute_script("return window.__xss") is None
    assert len(pair.find_elements("css selector", "svg rect")) == 4  # two boxes on the original, two on the result
    labels = [t.get_attribute("textContent") for t in pair.find_elements("css selector", "svg text")]
    assert labels == ["red circle", "blue square"] * 2
    shown = [p.find_element("css selector", ".description").text
             for p in browser.find_elements("css selector", "#pairs .pair")]
    assert sorted(shown[1:]) == sorted(DESCRIPTIONS)  # two workers: finished in either order

    shot = tmp_path / "page.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("SYNGRPO_PAGE_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["SYNGRPO_PAGE_SCREENSHOT"])


def test_without_the_token_the_page_shows_no_data_and_asks_for_it(server, browser):
    _api(server.url, "/v1/jobs", job_body("secret", description="a private scene"))
    _until_done(server.url, 1)
    browser.get(server.url + "/")
    form = wait_for(lambda: browser.find_element("id", "token-form").is_displayed()
                    and browser.find_element("id", "token-form"), what="the token form")
    assert not browser.find_element("id", "main").is_displayed()
    assert _text(browser, "done-total") == "" and "private scene" not in browser.page_source
    box = form.find_element("id", "token-input")
    box.send_keys("wrong-token-123")
    form.find_element("css selector", "button").click()
    wait_for(lambda: "refused" in _text(browser, "token-error"), what="the refusal")
    assert "private scene" not in browser.page_source
    browser.find_element("id", "token-input").send_keys(TOKEN)
    browser.find_element("css selector", "#token-form button").click()
    wait_for(lambda: browser.find_element("id", "main").is_displayed() and _text(browser, "done-total") == "1",
             what="the page with the right token")
    wait_for(lambda: "private scene" in browser.page_source, what="the pair")
