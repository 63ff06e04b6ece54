"""sweep.json as a table for the terminal: every model, the Pareto front marked, the pick."""

from __future__ import annotations

from tlx.sweep.records import DONE, SweepRecord
from tlx.text import printable


def format_sweep(record: SweepRecord) -> str:
    front = set(record.pareto)
    lines = [f"{'run':28} {'model':8} {'accuracy':>9} {'p50 ms':>8} {'MB':>7}  pareto"]
    for candidate in record.candidates:
        if candidate.status != DONE:
            error = f": {printable(candidate.error.splitlines()[0])}" if candidate.error else ""
            lines.append(f"{printable(candidate.run):28} {candidate.status.upper()}{error}")
            continue
        for model in candidate.models:
            model_id = f"{candidate.run}/{model.format}"
            mark = "*" if model_id in front else ""
            lines.append(f"{printable(candidate.run):28} {printable(model.format):8} {model.accuracy:>9.1%} "
                         f"{model.latency_ms:>8.2f} {model.size_bytes / 1e6:>7.2f}  {mark}")
    pick = printable(record.recommended) if record.recommended else "none"
    lines += ["", f"Recommended: {pick} ({printable(record.reason)})"]
    return "\n".join(lines)
