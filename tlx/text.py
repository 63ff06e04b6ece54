"""Showing text that came from files a user may have downloaded (labels, model metadata, a
bundle's manifest, a device's result file, run names, CPU strings): one function per target.

Class names travel inside .tflite files and bundles, CPU names and run names inside result
files; a name holding terminal control sequences (an OSC title, a cursor move, a
bidirectional override) would act on the user's terminal when printed, and one holding
`<script>` would run in a browser showing the report. So:

- terminal: `printable` shows every control and format character escaped;
- HTML (report.html): `html_text`, the printable text HTML-escaped;
- Markdown (bench.md, a device's .md): `markdown_text`, the same plus the characters that
  would end a table cell or start a link.
"""

from __future__ import annotations

import html
import unicodedata


def printable(text: object) -> str:
    """`text` with control and format characters (Unicode categories C*) shown as Python
    escapes (\\x1b, \\n, \\u202e); everything else unchanged."""
    text = str(text)
    if all(unicodedata.category(c)[0] != "C" for c in text):
        return text
    return "".join(repr(c)[1:-1] if unicodedata.category(c)[0] == "C" else c for c in text)


def html_text(text: object) -> str:
    """`text` for HTML element content or a quoted attribute: printable, then &, <, >, " and '
    escaped."""
    return html.escape(printable(text))


def markdown_text(text: object) -> str:
    """`text` for a Markdown file: Markdown renders as HTML in many viewers, so it is
    `html_text`; a "|" would end a table cell and "](" make a link or an image that loads
    an address from the file: both become HTML character references (shown as themselves)."""
    return html_text(text).replace("|", "&#124;").replace("](", "&#93;(")
