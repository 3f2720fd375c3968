"""Headless Chromium for browser tests (Debian's chromium driven by Playwright, see
/work/shared/BROWSER_TESTS.md). Tests skip with a reason when either is missing."""

import contextlib
import shutil
from pathlib import Path

import pytest

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
# an offline reader: every host name but loopback's fails to resolve, so nothing outside the
# machine can be reached whatever the page asks for (pass to browser_page)
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"


def chromium_path() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@contextlib.contextmanager
def browser_page(console_errors: list, extra_args: tuple[str, ...] = ()):
    """A fresh page whose console errors (and uncaught exceptions) go to ``console_errors``;
    ``extra_args`` are further Chromium flags (such as ``OFFLINE``)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    executable = chromium_path()
    if executable is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=[*ARGS, *extra_args])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda err: console_errors.append(str(err)))
            yield page
        finally:
            browser.close()
