"""Summary of emulated-Pi `tlx bench BUNDLE` results against the x86 host (benchmarks/aarch64_check.sh).

    python benchmarks/aarch64_summary.py BUNDLE RESULT.json... > benchmarks/results/aarch64_bench.md

One row per emulated board, install, backend and model: accuracy, drop against the bundled Keras
reference, agreement with it, and how the ARM kernels' outputs compare with the host's for the
same file (photos identical, and the spread in output quantization steps). No latency: emulated
timings are not device figures.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

from tlx.bundle.archive import open_bundle
from tlx.bundle.result import read_result
from tlx.text import markdown_text as md


def _pct(p) -> str:
    return f"{100 * p.value:.1f} [{100 * p.low:.1f}, {100 * p.high:.1f}]"


def _steps(host) -> str:
    if host is None:
        return "-"
    if host.steps is None:
        return "-" if host.max_abs_diff is None else f"max abs diff {host.max_abs_diff:.2g}"
    return ", ".join(f"{k}: {v}" for k, v in sorted(host.steps.items()))


def main(bundle_path: str, result_paths: list[str]) -> None:
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
        f"- emulator: {qemu.splitlines()[0] if qemu else 'qemu-aarch64-static'}, user mode, Debian bookworm "
        f"arm64 sysroot, Python {md(results[0].machine.python) if results else '?'}; each board's /proc/cpuinfo "
        "inside the sysroot; `-cpu cortex-a72` (Pi 4) and `-cpu cortex-a76` (Pi 5)",
        "- dates: " + ", ".join(sorted({md(r.date) for r in results}))
        + "; host load average at each run's end: " + "; ".join(str(r.load_average) for r in results),
        "- The tlx wheel of this checkout with its [tflite] extra (tflite-runtime 2.14.0: XNNPACK for float, "
        "builtin kernels for int8) or its [runtime] extra (ai-edge-litert, XNNPACK), run by its `tlx` "
        "console script (`tlx bench BUNDLE --threads 1 --runs 2 --warmup 1 --no-cold-start --emulated ...`).",
        "- drop: Keras minus the model, points, paired 95% interval; outputs = host's: photos whose "
        "probabilities equal the x86 host's exactly for the same file and backend (tflite-runtime is "
        "compared with the host's litert-builtin: the same builtin kernels); steps: photos per largest "
        "difference in output quantization steps (1/256 for the uint8 output).",
        "- Emulated latency is not a device figure and is not reported.",
        "",
        "| board (emulated) | install | model | backend | top-1 % [95% CI] | drop pts [95% CI] | "
        "agree Keras % | outputs = host's | steps: photos |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for path, result in zip(result_paths, results):
        board = md(result.machine.cpu.split(" (emulated")[0])
        install = md(Path(path).stem.rsplit("-", 1)[-1])
        for m in result.models:
            drop = m.drop
            interval = (" (no photo changed correctness)" if math.isnan(drop.low)
                        else f" [{drop.low:+.1f}, {drop.high:+.1f}]")
            h = m.host
            same = "-" if h is None else (f"{h.identical}/{h.n}"
                                          + ("" if h.same_backend else f" (vs host {md(h.backend)})"))
            out.append(f"| {board} | [{install}] | {md(m.name)} | {md(m.backend)} | {_pct(m.accuracy)} | "
                       f"{drop.points:+.1f}{interval} | {100 * m.agreement_reference.value:.1f} | "
                       f"{same} | {_steps(h)} |")
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
