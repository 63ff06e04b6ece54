"""Run an exported tlx model on a Raspberry Pi: numpy, pillow and one TFLite interpreter.

    from tlx.runtime import Classifier
    clf = Classifier.from_file("model_int8.tflite", num_threads=4)
    for p in clf.classify("photo.jpg", top_k=3):
        print(p.label, p.score)

The interpreter backend is the first installed of ai-edge-litert (``pip install
'tlx-edge[runtime]'``) and tflite-runtime (``'tlx-edge[tflite]'``), or the one named with
``backend=``. TensorFlow is used only when named (``backend="tensorflow"``).

This package must never import TensorFlow (tests check it): it is what runs on the device.
"""

from tlx.runtime.classifier import Classifier, FileResult, Prediction, probe_model
from tlx.runtime.validate import ModelError, validate_model

__all__ = ["Classifier", "FileResult", "ModelError", "Prediction", "probe_model", "validate_model"]
