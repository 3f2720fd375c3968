"""MkDocs hook: the executed tutorials (docs/tutorials/*.py) are pages in every language.

mkdocs-jupyter marks the tutorial scripts as pages by wrapping their File objects, but
mkdocs-static-i18n rebuilds every File (to give it a language and a fallback) and the copy is a
plain static file again: the script would be copied as text instead of being executed and
rendered. Here the tutorial scripts are pages whatever wraps them, so the i18n plugin gives
them per-language URLs and English fallbacks like Markdown pages, and mkdocs-jupyter renders
them. Loaded by ``hooks:`` in mkdocs.yml.

The tutorials' formulas are typeset by MathJax 3 served with the site (see "MathJax" below):
nothing is fetched from a CDN, so the pages read the same offline.
"""

import json
import re
import shutil
from fnmatch import fnmatch
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File
from mkdocs.utils import get_relative_url

TUTORIALS = "tutorials/*.py"

_markdown_or_not = File.is_documentation_page


def _is_documentation_page(self: File) -> bool:
    return _markdown_or_not(self) or fnmatch(self.src_uri, TUTORIALS)


def on_startup(command, dirty):
    File.is_documentation_page = _is_documentation_page


# mkdocs-static-i18n points each page's <link rel="alternate" hreflang=...> at the same page in
# the other languages. Material's script reads every such link as the root of a language and
# fetches sitemap.xml below it (/ru/getting-started/sitemap.xml, ...): a 404 and a console
# error per language on every page. The language menu links each page to its translations
# directly and the root sitemap.xml carries the hreflang alternates, so the head links go.
_ALTERNATE = re.compile(r'\s*<link rel="alternate" href="[^"]*" hreflang="[^"]*">')


def on_post_page(output, page, config):
    return _serve_mathjax(_ALTERNATE.sub("", output), page)


# MathJax. mkdocs-jupyter writes nbconvert's MathJax 2 block into every tutorial page: a
# <script src="custom_mathjax_url"> and a "text/x-mathjax-config" script. mkdocs.yml sets that
# URL to MATHJAX_ENTRY, a path in this site; here that script becomes a MathJax 3 configuration
# (the same delimiters as nbconvert's) plus the script at its path relative to the page, and
# the MathJax 2 configuration, which MathJax 3 never reads, goes. MathJax itself comes from the
# PyPI package django-static-mathjax (the `docs` extra; import name `mathjax`): its es5/ build is
# copied to assets/mathjax/ with every component the page or MathJax's menu can load later
# (TeX extensions, the CHTML and SVG fonts, accessibility, speech maps), so neither the script
# nor a font is requested from anywhere but the site.
MATHJAX_ENTRY = "assets/mathjax/tex-mml-chtml.js"
_MATHJAX_SKIP = {"adaptors"}  # server-side DOM adaptors: never loaded in a browser
_MATHJAX_CONFIG = """<script>
window.MathJax = {
  tex: {
    inlineMath: [["$", "$"], ["\\\\(", "\\\\)"]],
    displayMath: [["$$", "$$"], ["\\\\[", "\\\\]"]],
    processEscapes: true,
    processEnvironments: true,
    tags: "ams"
  },
  options: {
    // the copy buttons copy the text of a hidden div beside each code cell: never typeset it
    ignoreHtmlClass: "tex2jax_ignore|clipboard-copy-txt"
  }
};
</script>"""
_MATHJAX_V2_CONFIG = re.compile(
    r'\s*(<!-- MathJax configuration -->\s*)?<script type="text/x-mathjax-config">.*?</script>', re.S)
_mathjax_source: Path | None = None


def _mathjax_es5() -> Path:
    try:
        import mathjax  # django-static-mathjax: MathJax's own distribution, no Python code
    except ImportError:
        raise PluginError(
            "MathJax is not installed, so the tutorials' formulas cannot be served with the "
            "site: pip install -c constraints.txt -e '.[docs]' (it brings django-static-mathjax)"
        ) from None
    root = Path(mathjax.__file__).parent / "static" / "mathjax"
    try:
        version = json.loads((root / "package.json").read_text(encoding="utf-8"))["version"]
    except (OSError, ValueError, KeyError):
        version = "unknown"
    if not version.startswith("3.") or not (root / "es5" / Path(MATHJAX_ENTRY).name).is_file():
        raise PluginError(f"expected MathJax 3 (es5/{Path(MATHJAX_ENTRY).name}) in {root}, "
                          f"found version {version}")
    return root


def on_config(config):
    global _mathjax_source
    jupyter = config.plugins.get("mkdocs-jupyter")
    if jupyter is not None and jupyter.config["custom_mathjax_url"] != MATHJAX_ENTRY:
        raise PluginError(f"mkdocs.yml: mkdocs-jupyter's custom_mathjax_url must be "
                          f"{MATHJAX_ENTRY!r} (MathJax is served with the site, see mkdocs_hooks.py)")
    _mathjax_source = _mathjax_es5()  # before the tutorials run: a missing package fails at once


def _serve_mathjax(output, page):
    tag = f'<script src="{MATHJAX_ENTRY}"> </script>'
    if tag not in output:
        if fnmatch(page.file.src_uri, TUTORIALS):
            raise PluginError(f"{page.file.src_uri}: no {tag} in the rendered tutorial; "
                              "mkdocs-jupyter or nbconvert changed how they load MathJax")
        return output
    local = f'{_MATHJAX_CONFIG}\n<script src="{get_relative_url(MATHJAX_ENTRY, page.url)}"></script>'
    return _MATHJAX_V2_CONFIG.sub("", output.replace(tag, local))


def on_post_build(config):
    # once per language with mkdocs-static-i18n (the same site_dir): copying again is cheap
    es5 = _mathjax_source / "es5"
    target = Path(config.site_dir) / Path(MATHJAX_ENTRY).parent
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(es5 / Path(MATHJAX_ENTRY).name, target)
    shutil.copy2(_mathjax_source / "LICENSE", target)  # Apache-2.0: the licence goes with it
    for component in sorted(es5.iterdir()):
        if component.is_dir() and component.name not in _MATHJAX_SKIP:
            shutil.copytree(component, target / component.name, dirs_exist_ok=True)
