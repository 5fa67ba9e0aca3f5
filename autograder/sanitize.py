"""Student HTML made inert in the autograded notebook that formgrader and the feedback render.

:class:`SanitizeStudentHTML` is nbconvert's ``SanitizeHTML`` (bleach on markdown and raw cells,
``text/html`` and ``text/markdown`` outputs cleaned, JavaScript, SVG and widget outputs removed;
what is not allowed stays visible as escaped text) plus the one thing bleach on markdown *source*
cannot see: a link written in markdown syntax (``[x](javascript:...)``, ``<javascript:...>``,
``[x]: javascript:...``) becomes an ``<a href>`` only when the markdown is rendered. A markdown
cell whose rendering holds a URL with any scheme but http, https or mailto is stored as its
rendering, cleaned by bleach (such links lose their target), so it reads the same and runs nothing.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

import bleach
from nbconvert.filters.markdown_mistune import markdown2html_mistune
from nbconvert.preprocessors.sanitize import SanitizeHTML
from traitlets import Bool

SAFE_SCHEMES = ("", "http", "https", "mailto")
MARKDOWN_TAGS = sorted(
    set(bleach.ALLOWED_TAGS)
    | {"p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "span", "div", "img", "del", "sup", "sub"}
    | {"table", "thead", "tbody", "tr", "th", "td"}
)
MARKDOWN_ATTRIBUTES = {"a": ["href", "title"], "img": ["src", "alt", "title"], "*": ["class"]}


class _Urls(HTMLParser):
    """Every URL-valued attribute of an HTML fragment."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is not None and name in ("href", "src", "action", "formaction", "xlink:href", "srcset"):
                self.urls.append(value)


def _scheme(url: str) -> str:
    """The scheme a browser would see: whitespace and control characters are ignored inside it."""
    return urlsplit(re.sub(r"[\x00-\x20\x7f]+", "", url)).scheme.lower()


def unsafe_urls(html: str) -> list[str]:
    """The URLs in ``html`` with a scheme other than http, https or mailto (javascript:, data:, ...)."""
    parser = _Urls()
    parser.feed(html)
    parser.close()
    return [url for url in parser.urls if _scheme(url) not in SAFE_SCHEMES]


class SanitizeStudentHTML(SanitizeHTML):
    """nbconvert's SanitizeHTML, on by default, which also defuses links written in markdown syntax."""

    enabled = Bool(True, help="Whether to sanitize (nbconvert's preprocessors are off by default)").tag(
        config=True
    )

    def preprocess_cell(self, cell, resources, cell_index):
        cell, resources = super().preprocess_cell(cell, resources, cell_index)
        if cell.cell_type == "markdown":
            rendered = markdown2html_mistune(cell.source)
            if unsafe_urls(rendered):
                cell.source = bleach.clean(
                    rendered,
                    tags=MARKDOWN_TAGS,
                    attributes=MARKDOWN_ATTRIBUTES,
                    protocols=["http", "https", "mailto"],
                )
        return cell, resources
