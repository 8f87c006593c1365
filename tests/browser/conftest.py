"""A headless browser for the tests in this folder (Debian chromium + chromedriver).

CI installs ``chromium chromium-driver`` (apt); Selenium is told the driver path so
Selenium Manager never downloads anything. The browser keeps its console log and its
network log (the Chrome DevTools ``performance`` log), so tests can assert that a page
logged no errors and requested nothing from outside the book.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def require_browser():
    """Skip without chromium, except on CI (``CI`` set), where the test fails."""
    if Path(CHROMIUM).exists():
        if not Path(CHROMEDRIVER).exists():
            pytest.fail(
                f"{CHROMIUM} exists but {CHROMEDRIVER} does not: "
                "apt-get install -y chromium-driver"
            )
        return
    if os.environ.get("CI"):
        pytest.fail(
            f"{CHROMIUM} is absent on CI: .ci/run must apt-get install chromium "
            "chromium-driver"
        )
    pytest.skip(
        f"{CHROMIUM} is absent: install Debian's chromium and chromium-driver "
        "(apt-get install -y chromium chromium-driver) to run the browser tests"
    )


FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1200,900",
)


@pytest.fixture()
def driver():
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="book-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    drv = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


def requested_urls(drv) -> list[str]:
    """Every URL the browser asked for since the last call (the log is drained)."""
    urls = []
    for entry in drv.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


@pytest.fixture()
def network_log():
    """``network_log(driver)``: the URLs requested since the last call."""
    return requested_urls


def _quick_build(dest: Path) -> Path:
    """This checkout's book built into ``dest`` with chapter execution off."""
    for name in ("_config.yml", "_toc.yml"):
        (dest / name).write_text((ROOT / name).read_text())
    for folder in ("book", "chapters", "tests/reference"):
        shutil.copytree(ROOT / folder, dest / folder)
    config = dest / "_config.yml"
    text, n = re.subn(
        r"(?m)^(\s*execute_notebooks:).*$", r'\1 "off"', config.read_text()
    )
    assert n == 1, "_config.yml has no execute_notebooks line to turn off"
    config.write_text(text)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    build = subprocess.run(  # noqa: PLW1510 - the return code is asserted below
        [str(Path(sys.executable).parent / "jupyter-book"), "build", str(dest)],
        env=env,
        capture_output=True,
        text=True,
    )
    html = dest / "_build" / "html"
    assert build.returncode == 0 and (html / "index.html").is_file(), (
        build.stdout[-3000:] + build.stderr[-3000:]
    )
    return html


@pytest.fixture(scope="session")
def book_url(tmp_path_factory, serve_folder_session):
    """URL of the book served on 127.0.0.1: ``$BOOK_HTML``, else a quick build of this
    checkout with chapter execution off (same pages, maths, buttons and tables; no
    chapter outputs)."""
    require_browser()
    html = os.environ.get("BOOK_HTML")
    html = Path(html) if html else _quick_build(tmp_path_factory.mktemp("book"))
    return serve_folder_session(html)
