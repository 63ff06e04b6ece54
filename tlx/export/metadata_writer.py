"""Standard TFLite Metadata plus tlx's own metadata, packed into every exported .tflite.

Two things go into the model, the way tflite-support's MetadataPopulator does it:

1. a "TFLITE_METADATA" entry in the model's `metadata` (pointing at a new entry of `buffers`)
   holding a ModelMetadata FlatBuffer: input image properties and normalization, output
   stats, and the labels file for the output axis. This is what off-the-shelf clients
   (MediaPipe Tasks ImageClassifier, the TFLite Task Library, Android codegen) read;
2. the associated files appended after the FlatBuffer as a zip archive, so the .tflite is
   also a valid zip: `labels.txt` (one label per line) and `tlx.json` (tlx's own metadata:
   labels, input size, backbone, preprocessing, run id, version) which tlx's runtime reads
   with zipfile alone (tlx.runtime.associated_files). No sidecar file is needed to classify.

TFLite interpreters ignore both: they read only the FlatBuffer, and the zip sits after it.
"""

from __future__ import annotations

import io
import json
import zipfile

from tlx.metadata_codec import (
    METADATA_FIELD_NAME,
    encode,
    read_model_metadata,
)
from tlx.runtime.associated_files import LABELS_FILE, TLX_FILE

#: The oldest metadata parser that understands every field we write. Everything used here
#: is in schema 1.0.0 (the later additions are tokenizers, tensor groups, audio, file versions).
MIN_PARSER_VERSION = "1.0.0"

# A fixed timestamp for the zip entries: exporting the same model twice gives the same bytes.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)

__all__ = ["with_metadata", "read_model_metadata", "classifier_metadata", "LABELS_FILE", "TLX_FILE"]


def classifier_metadata(*, labels: list[str], tlx_info: dict, name: str = "tlx image classifier",
                        description: str = "") -> dict:
    """The ModelMetadata (dict form, see tlx.metadata_codec) of an image classifier that
    takes raw 0..255 RGB pixels and outputs one probability per label."""
    if not description:
        backbone = tlx_info.get("backbone")
        description = (f"Classifies an RGB image into {len(labels)} categories"
                       + (f" ({backbone} backbone)" if backbone else "")
                       + ". Made with tlx.")
    version = tlx_info.get("run_id") or tlx_info.get("tlx_version") or "1"
    labels_file = {
        "name": LABELS_FILE,
        "description": "Labels for the categories the model recognizes, one per line, "
                       "in output order.",
        "type": "TENSOR_AXIS_LABELS",
    }
    image = {
        "name": "image",
        "description": "RGB image, raw pixel values 0..255 (the backbone's normalization "
                       "is inside the graph).",
        "content": {
            "content_properties_type": "ImageProperties",
            "content_properties": {"color_space": "RGB"},
        },
        # Identity normalization: clients feed raw pixels to float models too, because the
        # model rescales inside the graph. Quantized models take the same raw uint8 pixels.
        "process_units": [{
            "options_type": "NormalizationOptions",
            "options": {"mean": [0.0], "std": [1.0]},
        }],
        "stats": {"max": [255.0], "min": [0.0]},
    }
    probability = {
        "name": "probability",
        "description": "Probability of each category (softmax), in the order of labels.txt.",
        "content": {
            "content_properties_type": "FeatureProperties",
            "content_properties": {},
        },
        "stats": {"max": [1.0], "min": [0.0]},
        "associated_files": [labels_file],
    }
    return {
        "name": name,
        "description": description,
        "version": str(version),
        "author": "tlx",
        "subgraph_metadata": [{
            "input_tensor_metadata": [image],
            "output_tensor_metadata": [probability],
        }],
        "associated_files": [{
            "name": TLX_FILE,
            "description": "tlx metadata (JSON): labels, input size, backbone, "
                           "preprocessing, run id, tlx version.",
            "type": "UNKNOWN",
        }],
        "min_parser_version": MIN_PARSER_VERSION,
    }


def with_metadata(model: bytes, *, labels: list[str], tlx_info: dict,
                  name: str = "tlx image classifier", description: str = "") -> bytes:
    """`model` (TFLite FlatBuffer bytes) with standard TFLite Metadata and the associated
    files `labels.txt` and `tlx.json` (json of `tlx_info`) appended as a zip.

    A model that already carries metadata (exported twice) gets it replaced: one
    TFLITE_METADATA entry, and the old zip is dropped when the FlatBuffer is rebuilt.
    """
    import flatbuffers
    import numpy as np
    from tensorflow.lite.python import schema_py_generated as schema

    labels = _check_labels(labels)
    tlx_json = json.dumps(tlx_info, indent=2, ensure_ascii=False) + "\n"

    _check_model(model, len(labels))
    model_t = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytes(model), 0))

    metadata = encode("ModelMetadata", classifier_metadata(
        labels=labels, tlx_info=tlx_info, name=name, description=description))
    buffer_t = schema.BufferT()
    # An ndarray packs as one vector; a bytes object would be packed byte by byte.
    buffer_t.data = np.frombuffer(metadata, dtype=np.uint8)

    model_t.metadata = model_t.metadata or []
    model_t.buffers = model_t.buffers or []
    entries = [m for m in model_t.metadata if _name(m.name) == METADATA_FIELD_NAME]
    if entries:
        model_t.buffers[entries[0].buffer] = buffer_t
        # A second entry would be ambiguous to readers; keep the first slot only. Its old
        # buffer stays (now unreferenced) rather than renumbering every tensor's buffer.
        model_t.metadata = [m for m in model_t.metadata
                            if _name(m.name) != METADATA_FIELD_NAME or m is entries[0]]
    else:
        model_t.buffers.append(buffer_t)
        entry = schema.MetadataT()
        entry.name = METADATA_FIELD_NAME
        entry.buffer = len(model_t.buffers) - 1
        model_t.metadata.append(entry)

    builder = flatbuffers.Builder(len(model) + len(metadata) + 1024)
    builder.Finish(model_t.Pack(builder), file_identifier=b"TFL3")
    packed = bytes(builder.Output())
    return _append_zip(packed, {LABELS_FILE: "\n".join(labels) + "\n", TLX_FILE: tlx_json})


def _name(value) -> str:
    return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else str(value)


def _check_labels(labels) -> list[str]:
    labels = [str(label) for label in labels]
    if not labels:
        raise ValueError("labels is empty: a classifier needs at least one label")
    bad = [label for label in labels if not label or "\n" in label or "\r" in label]
    if bad:
        raise ValueError(f"labels must be non-empty single-line strings (labels.txt has one "
                         f"per line); bad: {bad!r}")
    return labels


def _check_model(model: bytes, num_labels: int) -> None:
    """The metadata describes one image input and one probability output: refuse a model
    it would misdescribe, since clients index labels by output position. Read with
    tlx.runtime.validate (the one FlatBuffer reader); the object API only rewrites."""
    from tlx.runtime.validate import ModelError, validate_model

    try:
        info = validate_model(model)
    except ModelError as exc:
        raise ValueError(exc.reason) from None
    if len(info.inputs) != 1 or len(info.outputs) != 1:
        raise ValueError(f"expected a classifier with one input and one output, "
                         f"got {len(info.inputs)} inputs and {len(info.outputs)} outputs")
    in_shape = list(info.inputs[0].shape)
    if len(in_shape) != 4 or in_shape[-1] != 3:
        raise ValueError(f"expected an RGB image input of shape (1, H, W, 3), got {in_shape}")
    out_shape = list(info.outputs[0].shape)
    if not out_shape or out_shape[-1] != num_labels:
        raise ValueError(f"the model outputs {out_shape[-1] if out_shape else 0} scores "
                         f"but {num_labels} labels were given")


def _append_zip(model: bytes, files: dict[str, str]) -> bytes:
    """`model` followed by a zip of `files` whose offsets count from the start of the
    model, as tflite-support writes it (zip readers and MediaPipe both find the files)."""
    out = io.BytesIO()
    out.write(model)
    # Mode "w" on a stream positioned after the model starts the archive there and records
    # absolute offsets. Stored, not deflated: MediaPipe reads associated files in place.
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for filename, text in files.items():
            info = zipfile.ZipInfo(filename, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_STORED
            archive.writestr(info, text.encode("utf-8"))
    return out.getvalue()
