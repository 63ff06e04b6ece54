"""What an export records: tlx.json inside every .tflite (tlx's own metadata, read by the
runtime and `tlx inspect`) and export.json beside the files (what was made, from what,
how it measured)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import platform
from pathlib import Path

import tlx
from tlx import versions
from tlx.export import calibration as calib
from tlx.export import parity as par
from tlx.export.fallback import FallbackResult
from tlx.drop import DropGate, drop_exceeded, gated_value
from tlx.export.formats import FormatSpec, OutputType, Quantization, is_int8_model
from tlx.imaging import ARRAY_REDUCE_GAP, PREPROCESSING_VERSIONS, REDUCE_GAP, RESAMPLE


def common_tlx_info(run_id, model_sha, backbone_name, labels, image_size, normalization,
                     preprocessing: int) -> dict:
    """tlx's own metadata, the part shared by every file (tlx.json inside the .tflite)."""
    return {
        "schema": 1,
        "tlx_version": tlx.__version__,
        "run_id": run_id,
        "model_sha256": model_sha,
        "backbone": backbone_name,
        "labels": list(labels),
        "input": {"height": image_size[0], "width": image_size[1], "channels": 3,
                  "color": "RGB", "range": [0, 255]},
        "preprocessing": {
            "function": "tlx.imaging.load_image",
            # The runtime preprocesses with this version (absent: 1, the exact path).
            "version": preprocessing,
            "description": PREPROCESSING_VERSIONS[preprocessing],
            **({"reduce_gap": REDUCE_GAP} if preprocessing >= 2 else {}),
            **({"array_reduce_gap": ARRAY_REDUCE_GAP} if preprocessing >= 3 else {}),
            "exif_transpose": True,
            "alpha": "composited on white",
            "resize": RESAMPLE.name.lower(),
            "in_graph": {"normalization": normalization,
                         "description": "pixels * scale + offset, inside the model"},
        },
        "output": {"kind": "probabilities", "activation": "softmax", "num_labels": len(labels)},
    }


def file_tlx_info(common: dict, spec: FormatSpec, output_type: OutputType) -> dict:
    info = dict(common)
    info["format"] = spec.name
    info["quantization"] = spec.quantization.value
    if spec.quantization is Quantization.INT8:
        info["input_tensor"] = {"dtype": "uint8", "scale": 1.0, "zero_point": 0}
        out = OutputType(output_type).value
        info["output_tensor"] = {"dtype": out}
    else:
        info["input_tensor"] = {"dtype": "float32"}
        info["output_tensor"] = {"dtype": "float32"}
    return info


def file_record(spec: FormatSpec, content: bytes) -> dict:
    """export.json's entry for one written file."""
    return {"file": spec.filename, "bytes": len(content), "sha256": hashlib.sha256(content).hexdigest(),
            "quantization": spec.quantization.value, **_tensors(content)}


def max_drop_gate(max_drop: float | None, report: par.ParityReport | None,
                  on: DropGate = DropGate.POINT) -> dict | None:
    """The --max-drop verdict for export.json, or None without a limit (tlx.drop's gate)."""
    if max_drop is None:
        return None
    if report is None:  # every test image unreadable: the drop is unknown, so not within limits
        return {"limit_points": max_drop, "max_drop_on": on.value, "int8_drop_points": None, "passed": False}
    # The worse of the two kernel paths: the device may run either (ai-edge-litert's XNNPACK
    # or tflite-runtime's builtin kernels). Rows named by format, "/builtin" for the second.
    rows = [(row.format.removesuffix(par.BUILTIN_SUFFIX), row) for row in report.formats]
    rows = [(name, row) for name, row in rows if is_int8_model(name)]
    name, worst = max(rows, key=lambda item: gated_value(item[1].drop, on))
    return {"limit_points": max_drop, "max_drop_on": on.value, "int8_drop_points": worst.accuracy_drop_points,
            "int8_drop": worst.drop.to_json(), "measured_on": worst.format,
            "passed": not drop_exceeded([(name, worst.drop)], max_drop, on)}


def export_summary(*, passed: bool, run_root: Path, run_id: str, backbone: str, labels,
                   model_sha: str, image_size, int8_output_type: str | None,
                   calibration: calib.CalibrationSet | None, calibration_requested: int,
                   calibration_seed: int, file_info: dict[str, dict],
                   report: par.ParityReport | None, gate: dict | None,
                   fallback: FallbackResult | None, removed: list[str], warnings: list[str]) -> dict:
    """The content of export.json."""
    return {
        "status": "ok" if passed else "max_drop_exceeded",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "tlx_version": tlx.__version__,
        "run_dir": str(Path(run_root).resolve()),
        "run_id": run_id,
        "model_sha256": model_sha,
        "backbone": backbone,
        "labels": list(labels),
        "image_size": list(image_size),
        "int8_output_type": int8_output_type,
        "calibration": None if calibration is None else {
            "source": "train",
            "requested": calibration_requested,
            "used": len(calibration),
            "seed": calibration_seed,
            "per_class": _per_class(calibration.items, labels),
            "skipped": [list(item) for item in calibration.skipped],
        },
        "files": file_info,
        "size_ratio_int8_to_float32": (round(file_info["int8"]["bytes"] / file_info["float32"]["bytes"], 4)
                                       if {"int8", "float32"} <= set(file_info) else None),
        "parity": report.to_json() if report is not None else None,
        "max_drop": gate,
        "int8_fallback": fallback.to_json() if fallback is not None else None,
        "removed_stale_files": removed,
        "warnings": warnings,
        "environment": {"python": platform.python_version(), "tensorflow": versions.tensorflow(),
                        "keras": versions.installed("keras").get("keras")},
    }


def _tensors(content: bytes) -> dict:
    """The input and output tensors as written (read back from the flatbuffer)."""
    from tlx.runtime.validate import validate_model

    model_info = validate_model(content)

    def describe(tensor) -> dict:
        described = {"name": tensor.name, "shape": list(tensor.shape), "dtype": tensor.dtype}
        if tensor.quantization is not None:
            described["scale"], described["zero_point"] = tensor.quantization
        return described

    return {"input": describe(model_info.inputs[0]), "output": describe(model_info.outputs[0])}


def _per_class(items, labels) -> dict[str, int]:
    counts = {label: 0 for label in labels}
    for _, index in items:
        if 0 <= index < len(labels):
            counts[labels[index]] += 1
    return counts
