"""Which templates are HTML: autoescape each of them, whatever suffix the template engine adds."""

from __future__ import annotations

HTML_SUFFIXES = (".html", ".htm", ".xml")  # output that a browser or mail client parses as markup
ENGINE_SUFFIXES = (
    ".j2",
    ".jinja",
    ".jinja2",
)  # the template engine's own, stripped before the check


def is_html_template(name: str | None) -> bool:
    """True for `x.html`, `x.html.j2`, `x.xml.jinja` ... and for a template without a name.

    Jinja2's `select_autoescape()` (and Starlette's `Jinja2Templates`) look at the last suffix
    only, so `dashboard.html.j2` rendered unescaped; this looks beneath the engine's suffix.
    """
    if name is None:
        return True  # a template made from a string: escaping is the safe side
    lowered = name.lower()
    for suffix in ENGINE_SUFFIXES:
        if lowered.endswith(suffix):
            lowered = lowered[: -len(suffix)]
            break
    return lowered.endswith(HTML_SUFFIXES)
