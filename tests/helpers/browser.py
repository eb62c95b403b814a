"""Headless Chromium for the viewer tests: Debian's ``chromium`` + ``chromium-driver``, driven by Selenium.

``.ci/run`` installs both (and sets ``RADSPINE_REQUIRE_BROWSER=1``, so CI fails rather than skips when they are
missing); on a developer machine without them the browser tests skip with the install command.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

LAUNCH_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--force-device-scale-factor=1", "--hide-scrollbars",
)  # fmt: skip


def _binaries() -> tuple[str | None, str | None]:
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    return chrome, shutil.which("chromedriver")


def browser_missing() -> str:
    """Why no browser test can run here ('' when Selenium, chromium and chromedriver are all present)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    chrome, driver = _binaries()
    if not chrome or not driver:
        return "headless Chromium not installed (apt-get install chromium chromium-driver; .ci/run does)"
    return ""


def start_browser(download_dir: Path, size: tuple[int, int] = (1400, 900)):
    """A fresh headless Chromium (own profile) that saves downloads into ``download_dir``; skips or fails
    (under RADSPINE_REQUIRE_BROWSER) when it cannot run."""
    why = browser_missing()
    if why:
        if os.environ.get("RADSPINE_REQUIRE_BROWSER"):
            pytest.fail(f"browser tests required (RADSPINE_REQUIRE_BROWSER) but {why}")
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chrome, driver_path = _binaries()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for flag in LAUNCH_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='radspine-chromium-')}")
    opts.add_argument(f"--window-size={size[0]},{size[1]}")
    opts.add_experimental_option("prefs", {"download.default_directory": str(download_dir),
                                           "download.prompt_for_download": False})
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager (which would look for drivers on the network) never runs.
    drv = webdriver.Chrome(service=Service(driver_path), options=opts)
    drv.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)})
    return drv


def open_page(drv, page: Path, timeout: float = 10.0) -> None:
    """Load a page from the file system and wait until the viewer says it is ready and its images loaded."""
    drv.get(Path(page).resolve().as_uri())
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if drv.execute_script("return document.body && document.body.getAttribute('data-ready') === '1' && "
                              "Array.from(document.images).every(function (i) { return i.complete; })"):
            return
        time.sleep(0.05)
    raise AssertionError(f"{page}: the viewer did not get ready in {timeout} s; console: {drv.get_log('browser')}")


def wait_for_file(folder: Path, pattern: str, timeout: float = 10.0) -> Path:
    """The first finished download matching ``pattern`` in ``folder``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        hits = [p for p in Path(folder).glob(pattern) if not p.name.endswith(".crdownload")]
        if hits:
            return hits[0]
        time.sleep(0.05)
    raise AssertionError(f"no {pattern} downloaded into {folder} in {timeout} s: {sorted(Path(folder).iterdir())}")


def severe_console_errors(drv) -> list[str]:
    """Console messages at level SEVERE (script errors), less the image decode errors a test provoked."""
    return [e["message"] for e in drv.get_log("browser") if e.get("level") == "SEVERE"]
