"""MkDocs hook: the executed tutorials (docs/tutorials/*.py) are pages in every language.

mkdocs-jupyter marks the tutorial scripts as pages by wrapping their File objects, but
mkdocs-static-i18n rebuilds every File (to give it a language and a fallback) and the copy is a
plain static file again: the script would be copied as text instead of being executed and
rendered. Here the tutorial scripts are pages whatever wraps them, so the i18n plugin gives
them per-language URLs and English fallbacks like Markdown pages, and mkdocs-jupyter renders
them. Loaded by ``hooks:`` in mkdocs.yml.
"""

import re
from fnmatch import fnmatch

from mkdocs.structure.files import File

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
    return _ALTERNATE.sub("", output)
