"""Classify images with MediaPipe Tasks' ImageClassifier, an off-the-shelf client that knows
nothing about tlx: it finds the labels and the input normalization in the standard TFLite
Metadata alone.

Run in its own process (tests/test_metadata.py does that), because MediaPipe and TensorFlow
each bring their own native libraries:

    python tests/support/mediapipe_check.py IMAGES.npy MODEL.tflite [MODEL.tflite ...]

IMAGES.npy holds uint8 RGB images (N, H, W, 3). Prints JSON: for each model path a list, per
image, of the top categories as {"index", "category_name", "score"}, best first.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GLOG_minloglevel", "2")


def classify(model_path: str, images) -> list[list[dict]]:
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=model_path), max_results=3)
    classifier = vision.ImageClassifier.create_from_options(options)
    try:
        results = []
        for pixels in images:
            image = mp.Image(image_format=mp.ImageFormat.SRGB, data=pixels.copy(order="C"))
            result = classifier.classify(image)
            results.append([
                {"index": c.index, "category_name": c.category_name, "score": float(c.score)}
                for c in result.classifications[0].categories
            ])
        return results
    finally:
        # Without close(), the classifier's __del__ at interpreter exit prints a TypeError.
        classifier.close()


def main(argv: list[str]) -> int:
    import numpy as np

    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    images = np.load(argv[0])
    out = {path: classify(path, images) for path in argv[1:]}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
