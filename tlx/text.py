"""Showing text that came from files a user may have downloaded (labels, model metadata).

Class names travel inside .tflite files; a name holding terminal control sequences (an OSC
title, a cursor move, a bidirectional override) would act on the user's terminal when
printed. Printing goes through `printable`, which shows every such character escaped.
"""

from __future__ import annotations

import unicodedata


def printable(text: object) -> str:
    """`text` with control and format characters (Unicode categories C*) shown as Python
    escapes (\\x1b, \\n, \\u202e); everything else unchanged."""
    text = str(text)
    if all(unicodedata.category(c)[0] != "C" for c in text):
        return text
    return "".join(repr(c)[1:-1] if unicodedata.category(c)[0] == "C" else c for c in text)
