"""What each preprocessing version's array route does to predictions: a pretrained ImageNet
classifier (EfficientNet-Lite0, 1000 classes, 224 px, the `lite0` extra's real weights) on real
photos shown as camera frames, top-1 against the exact path (version 1).

    python benchmarks/array_route_accuracy.py [--out FILE]

Every photo of the Tux Paint stamps (about 210 real photo cut-outs, composited on white as
training sees them) and scikit-image's chelsea, coffee and astronaut is scaled to each camera
size (640x480, 1280x720, 1920x1080; Lanczos, plus sensor-like noise, sigma 3) and that array
goes through `tlx.imaging.load_image` with each version. A classifier with 1000 classes turns
the smallest change of its input into another top-1 far more often than a model with a few
classes, so agreement with the exact path here is a sensitive measure of how far a cheaper
route strays. Also recorded: the mean and largest pixel difference to the exact path.
Writes benchmarks/results/array_route_accuracy.md (text below the notes marker is kept).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tlx import datasets, imaging, machine  # noqa: E402
from tlx.versions import installed  # noqa: E402

import results_file  # noqa: E402  (benchmarks/, beside this script)

SIZES = ((640, 480), (1280, 720), (1920, 1080))
INPUT = 224
RESULTS = REPO / "benchmarks" / "results" / "array_route_accuracy.md"


def photos() -> list[tuple[str, np.ndarray]]:
    """(name, RGB pixels at full size) of every photo used."""
    from skimage import data

    out = [(name, getattr(data, name)()[..., :3]) for name in ("chelsea", "coffee", "astronaut")]
    for label, paths in sorted(datasets.tuxpaint_files().items()):
        out += [(f"{label}/{path.name}", imaging.load_image(path, None)) for path in paths]
    return out


def camera_frame(photo: np.ndarray, width: int, height: int, seed: int) -> np.ndarray:
    scaled = np.asarray(Image.fromarray(photo).resize((width, height), Image.Resampling.LANCZOS), np.float64)
    noise = np.random.default_rng(seed).normal(0, 3.0, scaled.shape)
    return np.ascontiguousarray(np.clip(scaled + noise, 0, 255).astype(np.uint8))


def imagenet_classifier():
    from tlx.trainer import efficientnet_lite
    from tlx.trainer.backbones import get_backbone

    model = efficientnet_lite.build_efficientnet_lite("efficientnet_lite0", (INPUT, INPUT, 3),
                                                      include_top=True, weights="imagenet")
    norm = get_backbone("efficientnet_lite0").normalization

    def top1(batch: np.ndarray) -> np.ndarray:
        probs = model.predict(batch.astype(np.float32) * norm.scale + norm.offset, verbose=0, batch_size=32)
        return probs.argmax(axis=1)
    return top1


def measure() -> dict:
    top1 = imagenet_classifier()
    versions = sorted(imaging.PREPROCESSING_VERSIONS)
    pictures = photos()
    result = {"photos": len(pictures), "rows": []}
    for width, height in SIZES:
        print(f"{width}x{height} ...", flush=True)
        inputs = {v: [] for v in versions}
        for seed, (_, photo) in enumerate(pictures):
            frame = camera_frame(photo, width, height, seed)
            for v in versions:
                inputs[v].append(imaging.load_image(frame, INPUT, version=v))
        inputs = {v: np.stack(batch) for v, batch in inputs.items()}
        predicted = {v: top1(batch) for v, batch in inputs.items()}
        for v in versions[1:]:
            diff = np.abs(inputs[v].astype(np.int16) - inputs[1])
            result["rows"].append({"size": f"{width}x{height}", "version": v,
                                   "agree": int((predicted[v] == predicted[1]).sum()),
                                   "mean": float(diff.mean()), "max": int(diff.max())})
    return result


def report(result: dict, here: machine.Machine) -> str:
    n = result["photos"]
    versions = installed("numpy", "pillow", "tensorflow")
    lines = [
        "# Preprocessing versions on camera frames: agreement with the exact path",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}; command: "
        "`python benchmarks/array_route_accuracy.py`",
        f"- Machine: {here.summary()}",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in versions.items())}",
        f"- Model: EfficientNet-Lite0 with its ImageNet head (1000 classes, {INPUT} px, float32, Keras), "
        "the `lite0` extra's pretrained weights",
        f"- Photos: {n} (the Tux Paint stamps composited on white, and scikit-image's chelsea, coffee, "
        "astronaut), each scaled to the frame size with Lanczos plus noise (sigma 3), as an RGB array",
        "",
        "| frame | version | top-1 same as version 1 (exact) | mean abs pixel difference | max |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(f"| {row['size']} | {row['version']} | {row['agree']}/{n} ({100 * row['agree'] / n:.1f}%) "
                     f"| {row['mean']:.2f} | {row['max']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    text = report(measure(), machine.current())
    print(results_file.write_with_notes(args.out, text, "array_route_accuracy.py"))


if __name__ == "__main__":
    main()
