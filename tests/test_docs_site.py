"""The documentation site: `mkdocs build --strict` from the repository root succeeds (every
tutorial in docs/tutorials/ executes, every link and docstring resolves), then a headless
Chromium checks the built site: every page loads without console errors, every tutorial page
shows its figures, search finds a word, and the language menu reaches the translations.

The build runs once per session (a few minutes on 2 CPU cores: it executes the tutorials) into
a temporary directory, with the notebook cache of mkdocs-jupyter in a fresh directory so that
every tutorial really runs here. The browser tests skip when Chromium is missing; the build
test does not."""

import functools
import http.server
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from browser import browser_page

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ["01-first-vae", "02-elbo", "03-kl-term", "04-reparameterization",
             "05-estimating-px", "06-priors", "07-conditional-and-scaling"]
LANGUAGES = ["ru", "zh", "es"]
TRANSLATED = ["getting-started", "tutorials/01-first-vae", "tutorials/02-elbo"]
# Scripts the notebook pages load from CDNs (MathJax; mermaid where a notebook has diagrams).
# This machine is offline: the test answers them with an empty script and checks that nothing
# else outside the site is requested.
CDN_HOSTS = {"cdnjs.cloudflare.com", "cdn.jsdelivr.net", "unpkg.com"}


@pytest.fixture(scope="session")
def built_site(tmp_path_factory):
    """The site built strictly into a temporary directory: (directory, build seconds)."""
    base = tmp_path_factory.mktemp("docs-site")
    out = base / "site"
    env = dict(os.environ, VAEKIT_DOCS_NOTEBOOK_CACHE=str(base / "notebook-cache"),
               NO_MKDOCS_2_WARNING="1")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    seconds = time.monotonic() - started
    print(f"\nmkdocs build --strict: {seconds:.0f} s", file=sys.stderr)
    assert result.returncode == 0, (
        f"mkdocs build --strict failed after {seconds:.0f} s:\n{result.stderr[-6000:]}")
    return out, seconds


@pytest.fixture(scope="session")
def site_url(built_site):
    """The built site served on 127.0.0.1 for the session."""
    handler = functools.partial(QuietHandler, directory=str(built_site[0]))
    server = QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # the browser drops connections when it moves on to the next page


def pages(site: Path) -> list[str]:
    """Every page of the built site as a path under its root ("", "ru/tutorials/02-elbo/", ...)."""
    paths = []
    for index in sorted(site.rglob("index.html")):
        relative = index.parent.relative_to(site).as_posix()
        paths.append("" if relative == "." else relative + "/")
    return paths


@pytest.fixture
def page(site_url):
    """A browser page whose console errors are collected, with outside requests answered
    (empty) only for the CDN hosts and recorded."""
    errors, outside = [], set()
    with browser_page(errors) as page:
        def answer(route, request):
            host = urlsplit(request.url).hostname
            if host == "127.0.0.1":
                route.continue_()
            else:
                outside.add(host)
                route.fulfill(status=200, body="", content_type="application/javascript")

        page.context.route("**/*", answer)
        page.console_errors, page.outside_hosts = errors, outside
        yield page


def test_site_builds_strictly_with_every_page(built_site):
    site, seconds = built_site
    paths = set(pages(site))
    for tutorial in TUTORIALS:
        assert f"tutorials/{tutorial}/" in paths
        # the script itself is published next to its page (the download button)
        assert (site / "tutorials" / tutorial / f"{tutorial}.py").is_file()
    for language in LANGUAGES:
        for translated in TRANSLATED:
            assert f"{language}/{translated}/" in paths
        for tutorial in TUTORIALS:  # untranslated tutorials fall back to English
            assert f"{language}/tutorials/{tutorial}/" in paths
    # one API reference page per public module of src/vaekit
    modules = [p for p in (ROOT / "src" / "vaekit").rglob("*.py")
               if not p.name.startswith("_") and "static" not in p.parts]
    for module in modules:
        relative = module.relative_to(ROOT / "src" / "vaekit").with_suffix("").as_posix()
        assert f"reference/{relative}/" in paths, f"no API reference page for {relative}"
    # no source script leaks into the site as a page of raw text
    assert not [p for p in paths if p.endswith(".py/")]
    assert seconds < 900, f"the site took {seconds:.0f} s to build"


@pytest.mark.browser
def test_every_page_loads_without_console_errors(built_site, site_url, page):
    failures = {}
    for path in pages(built_site[0]):
        page.console_errors.clear()
        response = page.goto(site_url + path, wait_until="load")
        if response is None or response.status != 200:
            failures[path] = f"HTTP {response and response.status}"
        elif page.console_errors:
            failures[path] = list(page.console_errors)
    assert not failures, failures
    assert page.outside_hosts <= CDN_HOSTS, page.outside_hosts


@pytest.mark.browser
@pytest.mark.parametrize("language", ["", *[f"{language}/" for language in LANGUAGES]])
def test_tutorial_pages_show_their_figures(site_url, page, language):
    for tutorial in TUTORIALS:
        page.goto(f"{site_url}{language}tutorials/{tutorial}/", wait_until="load")
        widths = page.eval_on_selector_all(
            "article img", "images => images.map(i => i.complete ? i.naturalWidth : 0)")
        assert widths and all(w > 0 for w in widths), (language, tutorial, widths)
        assert not page.console_errors, (language, tutorial, page.console_errors)
        # the formulas are typeset by MathJax (from its CDN; answered empty here, offline)
        assert page.locator("script[src*=mathjax]").count() == 1, (language, tutorial)
        download = page.get_attribute("a.tutorial-download", "href")
        assert download and download.endswith(".py"), (language, tutorial, download)
        assert page.request.get(page.url + download).ok


@pytest.mark.browser
def test_search_finds_reparameterization(site_url, page):
    page.goto(site_url, wait_until="load")
    page.fill("input.md-search__input", "reparameterization")
    results = page.locator(".md-search-result__item")
    results.first.wait_for(state="visible", timeout=30_000)
    assert results.count() > 0
    assert "reparameterization" in results.first.inner_text().lower()
    assert not page.console_errors, page.console_errors


@pytest.mark.browser
@pytest.mark.parametrize("path", TRANSLATED)
def test_language_menu_reaches_the_translations(site_url, page, path):
    english = page.goto(f"{site_url}{path}/", wait_until="load")
    assert english.ok
    english_title = page.locator("article h1").first.inner_text()
    for language in LANGUAGES:
        page.goto(f"{site_url}{path}/", wait_until="load")
        page.hover(".md-header__option .md-select")  # opens the language menu
        page.click(f".md-header__option .md-select__link[hreflang={language}]")
        page.wait_for_load_state("load")
        assert page.url == f"{site_url}{language}/{path}/"
        assert page.get_attribute("html", "lang") == language
        title = page.locator("article h1").first.inner_text()
        # a translated page, not the English fallback
        assert title and title != english_title, (language, path, title)
    assert not page.console_errors, page.console_errors
