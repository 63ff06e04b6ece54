"""What the pixel cache's per-row checksums cost, against decoding the same images.

    python benchmarks/pixel_cache_checksums.py [--images 2000]

Two synthetic folders, both cached at 160 px: 320x240 JPEG photos (the usual case) and 28x28
PNGs (Fashion-MNIST's size: the cheapest decode there is, so the worst case for the checks).
For each: the first `prepare` (decoding on every core, which also hashes each file's bytes
and each row), the second `prepare` (every row read back and its SHA-256 checked), and the
check alone. Writes benchmarks/results/pixel_cache_checksums.md.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tlx import machine  # noqa: E402
from tlx.pixels import cache as pixel_cache  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "pixel_cache_checksums.md"
FOLDERS = {"320x240 JPEG": ((240, 320), "jpg"), "28x28 PNG": ((28, 28), "png")}


def make_folder(root: Path, count: int, size, fmt: str) -> list[Path]:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    paths = []
    for i in range(count):
        noise = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        path = root / f"{i:06d}.{fmt}"
        Image.fromarray(noise // 4 + np.uint8(i % 190)).save(path)
        paths.append(path)
    return paths


def measure(paths: list[Path], cache: Path) -> dict:
    started = time.perf_counter()
    first = pixel_cache.prepare(paths, 160, cache_dir=cache)
    decode = time.perf_counter() - started
    started = time.perf_counter()
    second = pixel_cache.prepare(paths, 160, cache_dir=cache)
    read_back = time.perf_counter() - started
    assert first.decoded == len(paths) and second.decoded == 0
    index, pixels = pixel_cache._open(second.location, {"format": pixel_cache.CACHE_FORMAT,
                                                        "preprocessing": pixel_cache.PREPROCESSING_VERSION,
                                                        "image_size": [160, 160],
                                                        "max_pixels": pixel_cache.DEFAULT_MAX_PIXELS})
    started = time.perf_counter()
    assert not pixel_cache._damaged_rows(pixels, list(index.files.values()))
    check = time.perf_counter() - started
    return {"decode": decode, "read_back": read_back, "check": check}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="Images per folder (default 2000).")
    args = parser.parse_args()
    load_before = machine.load_average()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name, (size, fmt) in FOLDERS.items():
            paths = make_folder(Path(work) / fmt, args.images, size, fmt)
            result = measure(paths, Path(work) / f"cache-{fmt}")
            per = {key: 1000 * value / args.images for key, value in result.items()}
            rows.append(f"| {name} | {args.images} | {result['decode']:.2f} ({per['decode']:.3f}) | "
                        f"{result['read_back']:.2f} ({per['read_back']:.3f}) | "
                        f"{result['check']:.2f} ({per['check']:.3f}) | "
                        f"{100 * result['check'] / result['decode']:.1f}% |")
    here = machine.current()
    text = "\n".join([
        "# Pixel cache: cost of the per-row checksums",
        "",
        f"Recorded {datetime.datetime.now():%Y-%m-%d %H:%M} with `benchmarks/pixel_cache_checksums.py "
        f"--images {args.images}`.",
        "",
        f"- Machine: {here.summary()}; load average before {load_before}, after {machine.load_average()}.",
        "- Cached at 160 px (76,800 bytes a row). Decoding on every core; the check hashes every row",
        "  read back (SHA-256, hashlib, one thread per core).",
        "",
        "| images | count | decode s (ms each) | read back + check s (ms each) | check alone s (ms each) "
        "| check / decode |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
    ])
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
