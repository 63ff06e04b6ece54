"""Summary of emulated-Pi `tlx bench BUNDLE` results against the x86 host (benchmarks/aarch64_check.sh).

    python benchmarks/aarch64_summary.py BUNDLE [--keep-notes OLD.md] [--tflite-cp313 FILE] \
        WORK/results/BOARD--INSTALL.json... > NEW.md

One row per emulated board, install, backend and model: accuracy, drop against the bundled Keras
reference, agreement with it, how the ARM kernels' outputs compare with the host's for the
same file (photos identical, and the spread in output quantization steps), and whether
`tlx predict` ran (WORK/predict/BOARD--INSTALL.rc). No latency: emulated timings are not device
figures. --keep-notes: the text below the notes marker of the old file is appended, as
preprocess_speed.py keeps its notes; --tflite-cp313: the recorded pip error of [tflite] on
Python 3.13 (Trixie).
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

from tlx.bundle.archive import open_bundle
from tlx.bundle.result import read_result
from tlx.text import markdown_text as md

MANUAL_MARKER = "<!-- manual notes below: kept by aarch64_check.sh -->"
#: Raspberry Pi OS release and Python per board name (aarch64_check.sh's boards).
OS_OF = {"trixie": "Trixie (Debian 13)", "bookworm": "Bookworm (Debian 12)"}


def _pct(p) -> str:
    return f"{100 * p.value:.1f} [{100 * p.low:.1f}, {100 * p.high:.1f}]"


def _steps(host) -> str:
    if host is None:
        return "-"
    if host.steps is None:
        return "-" if host.max_abs_diff is None else f"max abs diff {host.max_abs_diff:.2g}"
    return ", ".join(f"{k}: {v}" for k, v in sorted(host.steps.items()))


def _predict(result_path: str) -> str:
    """'ok' or 'exit N' for `tlx predict` on the same board and install."""
    rc_file = Path(result_path).parent.parent / "predict" / (Path(result_path).stem + ".rc")
    if not rc_file.is_file():
        return "-"
    rc = rc_file.read_text().strip()
    return "ok" if rc == "0" else f"exit {rc}"


def main(bundle_path: str, result_paths: list[str], notes_from: str | None = None,
         tflite_cp313: str | None = None) -> None:
    with open_bundle(bundle_path) as bundle:
        manifest = bundle.manifest
    host = manifest.host_machine
    qemu = subprocess.run(["qemu-aarch64-static", "--version"], capture_output=True, text=True).stdout
    # Each file through the result schema: a damaged one stops here with the reason.
    results = [read_result(p) for p in result_paths]
    out = [
        "# Emulated Raspberry Pi: tlx bench BUNDLE through the ARM kernels",
        "",
        "Reproduce: `tlx demo`, then `tlx bundle RUN_DIR -o demo.zip` on the x86 host, then "
        "`bash benchmarks/aarch64_check.sh demo.zip`.",
        "",
        f"- bundle: {md(Path(bundle_path).name)}, run {md(manifest.run_name)} (model sha256 "
        f"{md((manifest.model_sha256 or '?')[:12])}), {len(manifest.images)} test photos, models "
        f"{md(', '.join(m.name for m in manifest.models))}; made {md(manifest.created)} by tlx "
        f"{md(manifest.tlx)}",
        f"- host (reference outputs): {md(host['cpu'])} ({md(host.get('architecture', '?'))}; "
        f"{md(', '.join(host.get('cpu_features', [])) or 'no int8 features')}); "
        + ", ".join(f"{md(k)} {md(v)}" for k, v in (host.get("versions") or {}).items()),
        f"- emulator: {qemu.splitlines()[0] if qemu else 'qemu-aarch64-static'}, user mode; Debian arm64 "
        "sysroots: trixie (Python 3.13, Debian's numpy and Pillow installed) for Raspberry Pi OS Trixie, "
        "bookworm (Python 3.11) for Bookworm; each board's /proc/cpuinfo inside its sysroot; "
        "`-cpu cortex-a72` (Pi 4) and `-cpu cortex-a76` (Pi 5)",
        "- dates: " + ", ".join(sorted({md(r.date) for r in results}))
        + "; host load average at each run's end: " + "; ".join(str(r.load_average) for r in results),
        "- The tlx wheel of this checkout with its [tflite] extra (tflite-runtime 2.14.0: XNNPACK for float, "
        "builtin kernels for int8) or its [runtime] extra (ai-edge-litert, XNNPACK), run by its `tlx` "
        "console script (`tlx bench BUNDLE --threads 1 --runs 2 --warmup 1 --no-cold-start --emulated ...`; "
        "then `tlx predict` of the int8 model on two of the bundle's photos). cp313 [runtime] on Debian: "
        "the same install with pip's numpy and Pillow removed, so Debian's numpy and Pillow are imported "
        "(what a `--system-site-packages` venv keeps, both satisfying the requirements).",
        "- drop: Keras minus the model, points, paired 95% interval; outputs = host's: photos whose "
        "probabilities equal the x86 host's exactly for the same file and backend (tflite-runtime is "
        "compared with the host's litert-builtin: the same builtin kernels); steps: photos per largest "
        "difference in output quantization steps (1/256 for the uint8 output).",
        "- Emulated latency is not a device figure and is not reported.",
        "",
    ]
    if tflite_cp313:
        out.append(f"- [tflite] for Python 3.13 (Trixie), host pip with the aarch64 tags: "
                   f"{Path(tflite_cp313).read_text().strip()}")
    out += [
        "",
        "| board (emulated) | OS, versions | install | model | backend | top-1 % [95% CI] | drop pts [95% CI] | "
        "agree Keras % | outputs = host's | steps: photos | tlx predict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for path, result in zip(result_paths, results):
        board = md(result.machine.cpu.split(" (emulated")[0])
        board_name, _, install = Path(path).stem.partition("--")
        abi, _, extra = install.partition("-")
        os_name = md(OS_OF.get(board_name.rpartition("-")[2], board_name))
        install = md(f"[{extra.replace('-debian', '')}]" + (" on Debian numpy, Pillow" if extra.endswith("-debian") else ""))
        versions = result.machine.versions or {}
        for m in result.models:
            drop = m.drop
            interval = (" (no photo changed correctness)" if math.isnan(drop.low)
                        else f" [{drop.low:+.1f}, {drop.high:+.1f}]")
            h = m.host
            same = "-" if h is None else (f"{h.identical}/{h.n}"
                                          + ("" if h.same_backend else f" (vs host {md(h.backend)})"))
            out.append(f"| {board} | {os_name}, Python {md(result.machine.python)}, numpy "
                       f"{md(versions.get('numpy', '?'))}, Pillow {md(versions.get('pillow', '?'))} | {install} | "
                       f"{md(m.name)} | {md(m.backend)} | {_pct(m.accuracy)} | "
                       f"{drop.points:+.1f}{interval} | {100 * m.agreement.value:.1f} | "
                       f"{same} | {_steps(h)} | {_predict(path)} |")
    notes = ""
    if notes_from and Path(notes_from).is_file():
        old = Path(notes_from).read_text(encoding="utf-8")
        if MANUAL_MARKER in old:
            notes = old.split(MANUAL_MARKER, 1)[1]
    sys.stdout.write("\n".join(out) + "\n\n" + MANUAL_MARKER + (notes or "\n"))


def _parse(argv: list[str]) -> dict:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--keep-notes", dest="notes_from", help="the old results file, whose notes are kept")
    parser.add_argument("--tflite-cp313", help="file with the pip error of [tflite] on Python 3.13")
    parser.add_argument("results", nargs="+")
    args = parser.parse_args(argv)
    return {"bundle_path": args.bundle, "result_paths": args.results, "notes_from": args.notes_from,
            "tflite_cp313": args.tflite_cp313}


if __name__ == "__main__":
    main(**_parse(sys.argv[1:]))
