"""A real headless Chromium for the page tests (Debian's ``chromium`` + ``chromium-driver``, driven by Selenium).

Skips with the reason when any of the three is missing (``.ci/run`` installs them: ``apt-get install
chromium chromium-driver``, Selenium in the ``dev`` extra).  The driver is Debian's, never one Selenium
would download (this machine reaches no browser download site); the browser runs with a fresh
profile, no GPU, no background networking.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--no-first-run",
                  "--window-size=1400,1100")


def chromium(profile: Path):
    """A Selenium driver of headless Chromium with a fresh ``--user-data-dir`` under ``profile``."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the dev extra)")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    if browser is None or driver_bin is None:
        pytest.skip("Chromium or its driver is missing: apt-get install -y chromium chromium-driver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    return webdriver.Chrome(service=Service(executable_path=driver_bin), options=options)


def wait_for(predicate, timeout: float = 20.0, what: str = "condition", step: float = 0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:  # noqa: BLE001 - an element not there yet
            last = exc
        else:
            if last:
                return last
        time.sleep(step)
    raise AssertionError(f"{what} not reached within {timeout} s (last: {last!r})")
