"""Scores of the runtime test models on a fixed set of images, as JSON; and a comparison.

Used by benchmarks/aarch64_check.sh to compare an emulated aarch64 run with x86:

    python benchmarks/runtime_scores.py --make-images DIR
    python benchmarks/runtime_scores.py MODELS_DIR IMAGES_DIR > scores.json
    python benchmarks/runtime_scores.py --compare x86.json aarch64.json

Needs only numpy, pillow and a backend (no TensorFlow). int8 models must give identical
scores on both machines; float models within 1e-5.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MODELS = ("int8", "int8_int8io", "int8_floatout", "float32", "int8_nometa")


def make_images(folder: Path) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, rgb in (("red", (220, 30, 30)), ("green", (30, 200, 30)), ("blue", (30, 30, 220))):
        pixels = np.clip(np.array(rgb) + rng.normal(0, 30, (120, 160, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{name}.jpg", quality=90)
    photo = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).resize(
        (640, 480), Image.Resampling.BICUBIC)
    photo.save(folder / "photo_640x480.jpg", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6
    photo.save(folder / "photo_exif_rotated.jpg", exif=exif, quality=90)
    photo.convert("CMYK").save(folder / "photo_cmyk.jpg")
    Image.fromarray(rng.integers(0, 65536, (50, 70), dtype=np.uint16)).save(folder / "gray16.png")


def scores(models: Path, images: Path) -> dict:
    from tlx.runtime import Classifier

    out = {"machine": platform.machine(), "models": {}}
    for name in MODELS:
        clf = Classifier.from_file(models / f"{name}.tflite", num_threads=1)
        out["backend"] = clf.backend
        out["models"][name] = {
            Path(r.path).name: [[p.index, p.score] for p in r.predictions]
            for r in clf.classify_files([images], top_k=None)}
    return out


def compare(a: dict, b: dict) -> bool:
    ok = True
    print(f"{a['machine']} ({a['backend']}) vs {b['machine']} ({b['backend']}):")
    for name, per_image in a["models"].items():
        other = b["models"][name]
        exact = name.startswith("int8") and name != "int8_floatout"
        worst, identical = 0.0, True
        for image, preds in per_image.items():
            for (ia, sa), (ib, sb) in zip(preds, other[image]):
                identical &= (ia == ib and sa == sb)
                worst = max(worst, abs(sa - sb))
            if [i for i, _ in preds][:1] != [i for i, _ in other[image]][:1]:
                identical = False
                worst = max(worst, 1.0)
        good = identical if exact else worst <= 1e-5
        ok &= good
        print(f"  {name:14s} {len(per_image)} images: "
              f"{'identical' if identical else f'max |diff| {worst:.2e}'}"
              f"  {'OK' if good else 'MISMATCH'}{' (must be identical)' if exact else ''}")
    return ok


if __name__ == "__main__":
    if sys.argv[1] == "--make-images":
        make_images(Path(sys.argv[2]))
    elif sys.argv[1] == "--compare":
        a, b = (json.loads(Path(p).read_text()) for p in sys.argv[2:4])
        sys.exit(0 if compare(a, b) else 1)
    else:
        print(json.dumps(scores(Path(sys.argv[1]), Path(sys.argv[2]))))
