"""File sizes of `tlx export`'s formats, per backbone, and the int8 / float32 ratio.

    .venv/bin/python benchmarks/export_size.py            # mobilenet_v2 and efficientnet_lite0
    .venv/bin/python benchmarks/export_size.py --backbone mobilenet_v2

Builds each classifier at the backbone's default image size with random weights (sizes do not
depend on the weight values), writes a run dir like `tlx train` does (synthetic images,
labels.txt, split.json, config.json), runs the real export (all formats, metadata included)
and writes benchmarks/results/export_size.md. Fails (exit 1) when int8 is above 0.32x float32.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tlx import machine as tlx_machine  # noqa: E402

import results_file  # noqa: E402  (benchmarks/, beside this script)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: The issue's limit: int8 at most this fraction of the float32 file.
MAX_RATIO = 0.32
NUM_CLASSES = 5
DEFAULT_BACKBONES = ("mobilenet_v2", "efficientnet_lite0")


def make_run(root: Path, backbone: str, size: int, per_class: int = 8) -> Path:
    from tlx import files
    from tlx.run_dir import RunDir, Split
    from tlx.trainer.backbones import get_backbone
    from tlx.trainer.model import build_classifier

    rng = np.random.default_rng(0)
    classes = tuple(f"class{i}" for i in range(NUM_CLASSES))
    items = []
    for label, name in enumerate(classes):
        folder = root / "data" / name
        folder.mkdir(parents=True)
        colour = rng.uniform(30, 220, 3)
        for i in range(per_class):
            pixels = np.clip(colour + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
            path = folder / f"{i}.png"
            Image.fromarray(pixels).save(path)
            items.append((str(path), label))
    model = build_classifier(get_backbone(backbone), NUM_CLASSES, (size, size), weights=None)
    run = root / "run"
    run.mkdir()
    model.save(run / "model.keras")
    rd = RunDir(run)
    rd.write_labels(classes)
    train = tuple(items[i] for i in range(len(items)) if i % 4)
    test = tuple(items[i] for i in range(len(items)) if i % 4 == 0)
    files.write_json(rd.split, Split(classes, train, (), test, image_size=(size, size)).to_json())
    files.write_json(rd.config, {"backbone": backbone, "image_size": size, "run_id": f"bench-{backbone}"})
    return run


def measure(backbone: str) -> dict:
    from tlx.export.export import ExportConfig, export_run
    from tlx.export.formats import FORMATS
    from tlx.trainer.backbones import get_backbone

    size = get_backbone(backbone).default_image_size
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp), backbone, size)
        start = time.perf_counter()
        result = export_run(ExportConfig(run, formats=tuple(FORMATS), calibration_samples=32, parity=False))
        seconds = time.perf_counter() - start
        sizes = {name: info["bytes"] for name, info in result.summary["files"].items()}
    return {"backbone": backbone, "image_size": size, "sizes": sizes, "seconds": seconds,
            "ratio": sizes["int8"] / sizes["float32"]}


def machine() -> str:
    return tlx_machine.current().summary()


def report(rows: list[dict]) -> str:
    import keras
    import tensorflow as tf

    import tlx

    lines = [
        "# Export file sizes",
        "",
        f"- Date: {datetime.date.today().isoformat()}",
        f"- Machine: {machine()}",
        f"- Versions: Python {platform.python_version()}, TensorFlow {tf.__version__}, "
        f"Keras {keras.__version__}, tlx {tlx.__version__}",
        f"- Command: `.venv/bin/python benchmarks/export_size.py`",
        f"- Model: the `tlx train` classifier ({NUM_CLASSES} classes) at the backbone's default size, "
        "random weights (file sizes do not depend on weight values); files include the TFLite "
        "Metadata and tlx.json.",
        f"- Limit: int8 at most {MAX_RATIO}x the float32 file.",
        "",
        "| backbone | input | float32 | float16 | dynamic | int8 | int8 / float32 | export time |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        s = row["sizes"]
        mb = lambda n: f"{n / 1e6:.2f} MB"  # noqa: E731
        verdict = "ok" if row["ratio"] <= MAX_RATIO else "OVER"
        lines.append(f"| {row['backbone']} | {row['image_size']}x{row['image_size']} | {mb(s['float32'])} | "
                     f"{mb(s['float16'])} | {mb(s['dynamic'])} | {mb(s['int8'])} | "
                     f"{row['ratio']:.3f} ({verdict}) | {row['seconds']:.0f} s |")
    lines += ["", "int8 is full-integer (per-channel weights), uint8 input with scale 1.0 / zero point 0, "
              "uint8 output. Export time is all four formats on this machine, shared with other jobs.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", action="append", help="registry key (repeatable)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "export_size.md"))
    args = parser.parse_args()
    from tlx.trainer.backbones import BACKBONES

    names = args.backbone or [b for b in DEFAULT_BACKBONES if b in BACKBONES]
    rows = []
    for name in names:
        print(f"{name} ...", flush=True)
        row = measure(name)
        print(f"  {row['sizes']}  int8/float32 = {row['ratio']:.3f}", flush=True)
        rows.append(row)
    text = report(rows)
    print(results_file.write_with_notes(Path(args.out), text, "export_size.py"))
    return 0 if all(row["ratio"] <= MAX_RATIO for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
