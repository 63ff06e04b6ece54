"""Results files that keep what people wrote in them.

A script rewrites its measured part of a file in benchmarks/results/ and keeps the
hand-written notes below its marker line, `<!-- manual notes below: kept by SCRIPT -->`.
Scripts that record one dataset or board at a time also keep the other sections
(`<!-- section NAME: ... -->` ... `<!-- end section NAME -->`) of the earlier file.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tlx import files  # noqa: E402

SECTION = re.compile(r"<!-- section (\S+): .*? -->.*?<!-- end section \1 -->\n?", re.S)


def marker(script: str) -> str:
    return f"<!-- manual notes below: kept by {script} -->"


def split_notes(path: Path, script: str) -> tuple[str, str]:
    """(the earlier file's text above the marker, the marker line and the notes below it);
    empty strings where there is no file or no marker."""
    if not Path(path).is_file():
        return "", ""
    old = Path(path).read_text(encoding="utf-8")
    if marker(script) not in old:
        return old, ""
    above, notes = old.split(marker(script), 1)
    return above, marker(script) + notes


def write_with_notes(path: Path, text: str, script: str) -> str:
    """Write `text`, then the earlier file's marker and notes (if it had them); returns what
    was written."""
    notes = split_notes(path, script)[1]
    text = text + ("\n" + notes if notes else "")
    files.write_text(path, text)
    return text


def write_sections(path: Path, header: str, order: list[str], new_sections: dict[str, str], script: str,
                   always_marker: bool = False) -> str:
    """`header`, then the earlier file's sections with `new_sections` replacing or adding
    theirs (in `order`, others after it by name), then its notes (the bare marker if it had
    none and `always_marker`); returns what was written."""
    above, notes = split_notes(path, script)
    kept = {match.group(1): match.group(0).rstrip("\n") + "\n" for match in SECTION.finditer(above)}
    kept.update(new_sections)
    names = [n for n in order if n in kept] + sorted(n for n in kept if n not in order)
    if not notes and always_marker:
        notes = marker(script) + "\n"
    text = header + "\n".join(kept[n] for n in names) + ("\n" + notes if notes else "")
    files.write_text(path, text)
    return text
