"""Orchestration: one call, `export_run(ExportConfig(...))`, turns a `tlx train` run into
.tflite files, export.json and a parity report.

Order: check every input first (run dir files, model, labels, formats, calibration set),
then convert, then write each file atomically, then measure parity, then export.json.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ContextManager

import tlx
from tlx import files
from tlx.errors import TlxError
from tlx.export import calibration as calib
from tlx.export import parity as par
from tlx.export.formats import DEFAULT_FORMATS, FORMATS, FormatSpec, OutputType, Quantization, get_format
from tlx.imaging import RESAMPLE
from tlx.run_dir import RunDir

EXPORT_JSON = "export.json"

#: Exit code of `tlx export` when --max-drop is exceeded (files are kept).
EXIT_MAX_DROP = 3

#: A progress hook: progress(label, total) -> a context manager yielding advance(n).
Progress = Callable[[str, int], ContextManager[Callable[[int], None]]]


@contextlib.contextmanager
def _no_progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
    yield lambda n: None


@dataclass(frozen=True)
class ExportConfig:
    """Everything `tlx export` needs."""

    #: The --out folder of a `tlx train` run (model.keras, labels.txt, split.json, config.json).
    run_dir: Path
    #: Format names from the format table (tlx.export.formats.FORMATS), in output order.
    formats: tuple[str, ...] = DEFAULT_FORMATS
    #: Where the files go; None means RUN_DIR/export.
    out_dir: Path | None = None
    #: Output tensor type of the int8 file (the float formats always output float32).
    output_type: OutputType = OutputType.UINT8
    #: How many training images calibrate int8 (class-balanced; fewer if the split has fewer).
    calibration_samples: int = 300
    #: Seed of the calibration sample: same seed, same images, same int8 file.
    calibration_seed: int = 0
    #: Fail (files kept, marked in export.json) if int8 accuracy on the test split is more
    #: than this many percentage points below Keras. None: no gate.
    max_drop: float | None = None
    #: Measure parity on the test split (skipping it is for benchmarks only).
    parity: bool = True


@dataclass
class ExportResult:
    """What export_run did; `summary` is the content of export.json."""

    out_dir: Path
    files: dict[str, Path]
    parity: par.ParityReport | None
    summary: dict
    #: False when --max-drop was exceeded.
    passed: bool = True
    warnings: list[str] = field(default_factory=list)


def export_run(config: ExportConfig, progress: Progress | None = None,
               log: Callable[[str], None] | None = None) -> ExportResult:
    progress = progress or _no_progress
    log = log or (lambda message: None)
    specs = _check_formats(config.formats)
    if config.max_drop is not None:
        if config.max_drop < 0:
            raise TlxError(f"--max-drop must be 0 or more percentage points (got {config.max_drop}).")
        if "int8" not in specs:
            raise TlxError("--max-drop checks the int8 file: add --format int8.")
        if not config.parity:
            raise TlxError("--max-drop needs the parity check.")

    run = RunDir(config.run_dir)
    out_dir = Path(config.out_dir) if config.out_dir is not None else run.export
    labels = run.read_labels()
    split = run.read_split()
    train_config = run.read_options()
    run.require(run.model, "the trained Keras model")
    if list(split.classes) and list(split.classes) != labels:
        raise TlxError(f"labels.txt ({labels}) and split.json ({list(split.classes)}) list different "
                       "classes. Are they from the same run? Re-run `tlx train`.")
    backbone_name = train_config.get("backbone")

    # Checked before the slow part (loading TensorFlow and the model).
    if config.max_drop is not None and not split.test:
        raise TlxError("--max-drop compares accuracy on the run's test images, and split.json lists none.")
    calibration_items: list[tuple[str, int]] = []
    if any(spec.needs_calibration for spec in specs.values()):
        # Never a test image, even if a hand-edited split lists one under train too.
        test_paths = {path for path, _ in split.test}
        train = [item for item in split.train if item[0] not in test_paths]
        calibration_items = calib.select(train, config.calibration_samples, config.calibration_seed)
        if not calibration_items:
            raise TlxError("The calibration set is empty: split.json lists no training images, and "
                           "int8 is calibrated on training images only (never on test images). "
                           "Export float formats only (--format float32), or re-run `tlx train`.")

    from tlx.export import inference
    from tlx.export.convert import convert, layer_names, saved_model
    from tlx.export.metadata import with_metadata

    log(f"Loading {run.model}")
    trained = inference.load_trained_model(run.model)
    image_size = inference.input_size(trained)
    configured = train_config.get("image_size")
    if configured is not None and tuple(_pair(configured)) != image_size:
        raise TlxError(f"config.json says image_size {configured} but model.keras takes "
                       f"{image_size[0]}x{image_size[1]} pixels. Are they from the same run?")
    model = inference.build_inference_model(trained, len(labels))
    normalization = inference.normalization(trained)

    calibration = None
    if calibration_items:
        with progress("Calibration images", len(calibration_items)) as advance:
            calibration = calib.load(calibration_items, image_size, advance)
        if calibration.skipped:
            log(f"Skipped {len(calibration.skipped)} unreadable calibration image(s).")

    run_id = str(train_config.get("run_id") or run.root.resolve().name)
    model_sha = _sha256(run.model)
    common_info = _common_tlx_info(run_id, model_sha, backbone_name, labels, image_size, normalization)

    # Convert everything before writing anything: a converter failure leaves an earlier
    # export in out_dir untouched and consistent with its export.json.
    contents: dict[str, bytes] = {}
    names = layer_names(model)
    with saved_model(model) as saved:
        for name, spec in specs.items():
            log(f"Converting {name}")
            content = convert(
                saved, spec,
                representative=calibration.representative_dataset() if spec.needs_calibration else None,
                output_type=config.output_type, layer_names=names)
            contents[name] = with_metadata(
                content, labels=list(labels), tlx_info=_file_tlx_info(common_info, spec, config.output_type),
                name=f"tlx {backbone_name or 'image'} classifier ({name})")

    # From here the folder changes: an old export.json would describe files being replaced.
    _remove_stale_temp_files(out_dir)
    (out_dir / EXPORT_JSON).unlink(missing_ok=True)
    written: dict[str, Path] = {}
    file_info: dict[str, dict] = {}
    for name, content in contents.items():
        spec = specs[name]
        path = out_dir / spec.filename
        files.write_bytes(path, content)
        written[name] = path
        file_info[name] = {"file": spec.filename, "bytes": len(content),
                           "sha256": hashlib.sha256(content).hexdigest(),
                           "quantization": spec.quantization.value, **_tensors(content)}
        log(f"Wrote {path} ({len(content) / 1e6:.2f} MB)")

    report, warnings = (_measure_parity(model, contents, split.test, image_size, progress)
                        if config.parity else (None, []))
    gate = _gate(config.max_drop, report)
    passed = gate is None or gate["passed"]

    removed = _remove_other_formats(out_dir, keep=set(specs))
    summary = {
        "status": "ok" if passed else "max_drop_exceeded",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "tlx_version": tlx.__version__,
        "run_dir": str(run.root.resolve()),
        "run_id": run_id,
        "model_sha256": model_sha,
        "backbone": backbone_name,
        "labels": list(labels),
        "image_size": list(image_size),
        "int8_output_type": OutputType(config.output_type).value if "int8" in specs else None,
        "calibration": None if calibration is None else {
            "source": "train",
            "requested": config.calibration_samples,
            "used": len(calibration),
            "seed": config.calibration_seed,
            "per_class": _per_class(calibration.items, labels),
            "skipped": [list(item) for item in calibration.skipped],
        },
        "files": file_info,
        "size_ratio_int8_to_float32": (round(file_info["int8"]["bytes"] / file_info["float32"]["bytes"], 4)
                                       if {"int8", "float32"} <= set(file_info) else None),
        "parity": report.to_json() if report is not None else None,
        "max_drop": gate,
        "removed_stale_files": removed,
        "warnings": warnings,
        "environment": {"python": platform.python_version(), "tensorflow": _tf_version(),
                        "keras": _keras_version()},
    }
    files.write_json(out_dir / EXPORT_JSON, summary)
    return ExportResult(out_dir=out_dir, files=written, parity=report, summary=summary,
                        passed=passed, warnings=warnings)


def _common_tlx_info(run_id, model_sha, backbone_name, labels, image_size, normalization) -> dict:
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
            "exif_transpose": True,
            "alpha": "composited on white",
            "resize": RESAMPLE.name.lower(),
            "in_graph": {"normalization": normalization,
                         "description": "pixels * scale + offset, inside the model"},
        },
        "output": {"kind": "probabilities", "activation": "softmax", "num_labels": len(labels)},
    }


def _measure_parity(model, contents: dict[str, bytes], test_items, image_size,
                    progress: Progress) -> tuple[par.ParityReport | None, list[str]]:
    if not test_items:
        return None, ["split.json has no test images: parity not measured."]
    with progress("Test images", len(test_items)) as advance:
        images = par.load_test_images(list(test_items), image_size, advance)
    if len(images) == 0:
        return None, ["No test image was readable: parity not measured."]
    warnings = [f"{len(images.skipped)} test image(s) unreadable, left out of parity."] if images.skipped else []
    # Full-integer files also run on the builtin kernels: tflite-runtime 2.14 (the Pi OS
    # Bookworm backend) computes int8 that way, not with XNNPACK, and the results differ.
    builtin = [name for name in contents if FORMATS[name].quantization is Quantization.INT8]
    with progress("Parity", len(images) * (len(contents) + len(builtin))) as advance:
        return par.measure(model, contents, images, advance, builtin_kernels=builtin), warnings


def _gate(max_drop: float | None, report: par.ParityReport | None) -> dict | None:
    """The --max-drop verdict for export.json, or None without a limit."""
    if max_drop is None:
        return None
    if report is None:  # every test image unreadable: the drop is unknown, so not within limits
        return {"limit_points": max_drop, "int8_drop_points": None, "passed": False}
    # The worse of the two kernel paths: the device may run either (ai-edge-litert's XNNPACK
    # or tflite-runtime's builtin kernels).
    rows = [row for row in (report.get("int8"), report.get("int8" + par.BUILTIN_SUFFIX)) if row is not None]
    worst = max(rows, key=lambda row: row.accuracy_drop_points)
    drop = worst.accuracy_drop_points
    return {"limit_points": max_drop, "int8_drop_points": drop, "measured_on": worst.format,
            "passed": drop <= max_drop}


def _check_formats(names) -> dict[str, FormatSpec]:
    specs: dict[str, FormatSpec] = {}
    for name in names:
        spec = get_format(name)
        specs.setdefault(spec.name, spec)
    if not specs:
        raise TlxError(f"No format to export. Choose from: {', '.join(FORMATS)}.")
    return specs


def _file_tlx_info(common: dict, spec: FormatSpec, output_type: OutputType) -> dict:
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


def _pair(value) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    return tuple(int(v) for v in value)


def _per_class(items, labels) -> dict[str, int]:
    counts = {label: 0 for label in labels}
    for _, index in items:
        if 0 <= index < len(labels):
            counts[labels[index]] += 1
    return counts


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _remove_stale_temp_files(out_dir: Path) -> None:
    """Temp files of a killed export (SIGKILL skips the cleanup in files.atomic_path)."""
    if not out_dir.is_dir():
        return
    names = [spec.filename for spec in FORMATS.values()] + [EXPORT_JSON]
    for name in names:
        for tmp in out_dir.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def _remove_other_formats(out_dir: Path, keep: set[str]) -> list[str]:
    """Files of formats not exported this time: they would come from an older model and sit
    next to the new ones undescribed by export.json."""
    removed = []
    for name, spec in FORMATS.items():
        path = out_dir / spec.filename
        if name not in keep and path.is_file():
            path.unlink()
            removed.append(spec.filename)
    return removed


def _tf_version() -> str | None:
    try:
        import tensorflow as tf
        return tf.__version__
    except ImportError:
        return None


def _keras_version() -> str | None:
    try:
        import keras
        return keras.__version__
    except ImportError:
        return None
