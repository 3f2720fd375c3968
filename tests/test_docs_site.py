"""The documentation site: `mkdocs build --strict` from the repository root succeeds (every
tutorial in docs/tutorials/ executes, every link and docstring resolves), then a headless
Chromium checks the built site: every page loads without console errors and asks nothing of
any host but the site's, every tutorial page shows its figures, tutorial 2's formulas are
typeset offline by the MathJax served with the site, search finds a word, and the language menu
reaches the translations.

The build runs once per session (a few minutes on 2 CPU cores: it executes the tutorials) into
a temporary directory, with the notebook cache of mkdocs-jupyter in a fresh directory so that
every tutorial really runs here. The browser tests skip when Chromium is missing; the build
test does not."""

import functools
import http.server
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from browser import OFFLINE, browser_page

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ["01-first-vae", "02-elbo", "03-kl-term", "04-reparameterization",
             "05-estimating-px", "06-priors", "07-conditional-and-scaling"]
LANGUAGES = ["ru", "zh", "es"]
TRANSLATED = ["getting-started", "tutorials/01-first-vae", "tutorials/02-elbo"]
# What a formula left untypeset shows: a TeX delimiter or a TeX command (\log, \mathrm, ...).
RAW_TEX = re.compile(r"\$|\\[()\[\]]|\\[A-Za-z]+")
# Code in a tutorial page: the cells, and the hidden text that each cell's copy button copies.
CODE = "pre, code, .clipboard-copy-txt"


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
    """A browser page whose console errors are collected, with every request outside the site
    recorded and answered empty (the site serves everything it needs, MathJax included)."""
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


def untypeset_tex(page) -> list[str]:
    """Waits until MathJax has typeset the page, then returns what of the article is still TeX:
    each raw delimiter or command outside code with the text around it, and each formula that
    MathJax could not typeset (a TeX error)."""
    # MathJax's startup promise resolves once the page is typeset
    page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise",
                           timeout=30_000)
    page.evaluate("() => MathJax.startup.promise")
    text = page.evaluate("""selectors => {
        const article = document.querySelector("article").cloneNode(true);
        article.querySelectorAll(selectors).forEach(e => e.remove());
        return article.textContent;
    }""", f"{CODE}, script, style, mjx-container")
    raw = [" ".join(text[max(0, m.start() - 50):m.end() + 50].split()) for m in RAW_TEX.finditer(text)]
    errors = page.locator("article mjx-merror").all_inner_texts()
    # code is never typeset: neither the cells nor the text their copy buttons copy
    in_code = page.locator(f"article :is({CODE}) mjx-container").count()
    return raw[:5] + [f"TeX error: {e}" for e in errors] + [f"{in_code} formulas in code"] * bool(in_code)


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
    assert not page.outside_hosts, page.outside_hosts


@pytest.mark.browser
@pytest.mark.parametrize("language", ["", *[f"{language}/" for language in LANGUAGES]])
def test_tutorial_pages_show_their_figures(site_url, page, language):
    for tutorial in TUTORIALS:
        page.goto(f"{site_url}{language}tutorials/{tutorial}/", wait_until="load")
        widths = page.eval_on_selector_all(
            "article img", "images => images.map(i => i.complete ? i.naturalWidth : 0)")
        assert widths and all(w > 0 for w in widths), (language, tutorial, widths)
        assert not page.console_errors, (language, tutorial, page.console_errors)
        # the formulas are typeset by the MathJax the site serves (see the test below)
        assert page.locator("article script[src*=mathjax]").count() == 1, (language, tutorial)
        assert not (tex := untypeset_tex(page)), (language, tutorial, tex)
        download = page.get_attribute("a.tutorial-download", "href")
        assert download and download.endswith(".py"), (language, tutorial, download)
        assert page.request.get(page.url + download).ok


@pytest.mark.browser
@pytest.mark.parametrize("language", ["", *[f"{language}/" for language in LANGUAGES]])
def test_tutorial_formulas_render_offline(site_url, language):
    """Tutorial 2 in a browser that reaches nothing but the site (its host names do not resolve
    and any request off loopback is aborted): MathJax, its TeX extensions and its fonts come
    from the site, every formula is typeset, and no raw TeX is left in the text."""
    errors, outside, fonts = [], [], []
    with browser_page(errors, extra_args=(OFFLINE,)) as page:
        def loopback_only(route, request):
            if urlsplit(request.url).hostname == "127.0.0.1":
                route.continue_()
            else:
                outside.append(request.url)
                route.abort("internetdisconnected")

        page.route("**/*", loopback_only)
        page.on("response", lambda r: fonts.append((r.url, r.status)) if ".woff" in r.url else None)
        page.goto(f"{site_url}{language}tutorials/02-elbo/", wait_until="load")
        script = page.get_attribute("article script[src*=mathjax]", "src")
        assert script and "//" not in script, script  # a path in the site, not a CDN's URL
        assert not (tex := untypeset_tex(page)), tex
        formulas = page.locator("article mjx-container")
        displayed = page.locator('article mjx-container[display="true"]')
        assert formulas.count() >= 20 and displayed.count() >= 3, (formulas.count(), displayed.count())
        # the glyphs are drawn in MathJax's own web fonts (MJXTEX...), served by the site
        page.wait_for_function("""() => [...document.fonts].some(
            f => f.family.includes("MJXTEX") && f.status === "loaded")""", timeout=30_000)
        assert fonts and all(status == 200 for _, status in fonts), fonts
        assert all(url.startswith(site_url) for url, _ in fonts), fonts
        assert not outside, outside
        assert not errors, errors


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
