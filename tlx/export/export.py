"""Orchestration: one call, `export_run(ExportConfig(...))`, turns a `tlx train` run into
.tflite files, export.json and a parity report.

Order: check every input first (run dir files, model, labels, formats, calibration set),
then convert, then write each file atomically, then measure parity, then export.json.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tlx import files
from tlx.drop import DropGate, check_max_drop
from tlx.errors import TlxError
from tlx.export import calibration as calib
from tlx.export import parity as par
from tlx.export import records
from tlx.export.convert import SAVED_MODEL_PREFIX
from tlx.export.fallback import FallbackMode, FallbackResult, repair_int8
from tlx.export.fallback_report import write_reports
from tlx.export.formats import DEFAULT_FORMATS, FORMATS, FormatSpec, OutputType, Quantization, get_format
from tlx.imaging import check_image_size
from tlx.progress import Advance, Log, Progress
from tlx.run_dir import (CONFIG, EXPORT_JSON, MODEL, SPLIT, RunConfig, RunDir, Split, require_present,
                         require_same_photos)


@contextlib.contextmanager
def _no_progress(label: str, total: int) -> Iterator[Advance]:
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
    #: What of the int8 drop max_drop holds: the point, or its paired 95% interval's upper bound.
    max_drop_on: DropGate = DropGate.POINT
    #: Measure parity on the test split (skipping it is for benchmarks only).
    parity: bool = True
    #: AUTO: when int8 loses more than max_drop points on the run's validation images, keep
    #: the layers int8 hurts most in float, one more per step, until it is within max_drop
    #: (tlx.export.fallback.repair_int8). Needs max_drop, the int8 format and validation
    #: images. NONE: plain int8.
    fallback: FallbackMode = FallbackMode.NONE
    #: Where the run's photos are now, when the data folder moved since training (split.json
    #: records them relative to it). None: the folder recorded in split.json.
    data_dir: Path | None = None


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
    #: What --fallback auto did (None without it).
    fallback: FallbackResult | None = None


def export_run(config: ExportConfig, progress: Progress | None = None,
               log: Log | None = None) -> ExportResult:
    progress = progress or _no_progress
    log = log or (lambda message: None)
    specs = _check_request(config)
    inputs = _read_run(config, specs, log)
    # The output folder before the slow part, and one export at a time in it: two would
    # each delete the other's formats.
    existed = inputs.out_dir.exists()
    files.require_writable_dir(inputs.out_dir, "--out")
    try:
        with files.exclusive(inputs.out_dir, "`tlx export`"):
            _remove_stale_temp_files(inputs.out_dir)
            return _export(config, specs, inputs, progress, log)
    except BaseException:
        if not existed and not any(inputs.out_dir.iterdir()):
            inputs.out_dir.rmdir()  # a failed export leaves no trace
        raise


def _export(config: ExportConfig, specs: dict[str, FormatSpec], inputs: "_RunInputs",
            progress: Progress, log: Log) -> ExportResult:
    model, image_size, normalization = _load_model(inputs, log)
    calibration = _load_calibration(inputs.calibration_items, image_size, inputs.preprocessing,
                                    progress, log)
    model_sha = files.sha256_file(inputs.run.model)
    tlx_info = records.common_tlx_info(inputs.config.run_id, model_sha, inputs.config.options.backbone,
                                       inputs.labels, image_size, normalization, inputs.preprocessing)

    # Test images once, for the parity check and the fallback's test report.
    test_images = (_load_images("Test images", inputs.split.test, image_size, progress,
                                inputs.preprocessing)
                   if config.parity and inputs.split.test else None)

    contents, fallback = _convert_all(config, specs, inputs, model, calibration, test_images,
                                      image_size, tlx_info, progress, log)
    written, file_info = _write_files(inputs.out_dir, specs, contents, log)
    # Written with the models (not while converting: a failure there leaves an earlier
    # export untouched); without the fallback an older export's reports go.
    removed = write_reports(fallback, inputs.out_dir)

    report, warnings = (_measure_parity(model, contents, test_images, progress)
                        if config.parity else (None, []))
    if fallback is not None and not fallback.passed:
        warnings.append(f"--fallback auto: no step brought int8 within {config.max_drop:g} points on "
                        f"the validation images; kept the most accurate one (step "
                        f"{fallback.chosen_step.step}).")
    gate = records.max_drop_gate(config.max_drop, report, config.max_drop_on)
    passed = gate is None or gate["passed"]

    removed += _remove_other_formats(inputs.out_dir, keep=set(specs))
    summary = records.export_summary(
        passed=passed, run_root=inputs.run.root, run_id=inputs.config.run_id,
        backbone=inputs.config.options.backbone, labels=inputs.labels, model_sha=model_sha,
        image_size=image_size,
        int8_output_type=OutputType(config.output_type).value if "int8" in specs else None,
        calibration=calibration, calibration_requested=config.calibration_samples,
        calibration_seed=config.calibration_seed, file_info=file_info, report=report, gate=gate,
        fallback=fallback, removed=removed, warnings=warnings)
    files.write_json(inputs.out_dir / EXPORT_JSON, summary)
    return ExportResult(out_dir=inputs.out_dir, files=written, parity=report, summary=summary,
                        passed=passed, warnings=warnings, fallback=fallback)


@dataclass(frozen=True)
class _RunInputs:
    """What export_run read from the run directory, before loading the model."""

    run: RunDir
    out_dir: Path
    labels: list[str]
    split: Split
    #: config.json: the training options and the run id.
    config: RunConfig
    #: The training images that calibrate int8 (empty when no format needs calibration).
    calibration_items: list[tuple[str, int]]

    @property
    def preprocessing(self) -> int:
        """The run's preprocessing version (tlx.imaging): calibration and parity read the
        images the way training did, and the models carry it to the device."""
        return self.run.preprocessing_version()


def _check_request(config: ExportConfig) -> dict[str, FormatSpec]:
    """The option checks, before any file is read. Returns the formats to export by name."""
    specs = _check_formats(config.formats)
    _check_fallback_options(config, specs)
    check_max_drop(config.max_drop, config.max_drop_on)
    if config.max_drop is not None:
        if "int8" not in specs:
            raise TlxError("--max-drop checks the int8 file: add --format int8.")
        if not config.parity:
            raise TlxError("--max-drop needs the parity check.")
    return specs


def _read_run(config: ExportConfig, specs: dict[str, FormatSpec], log: Log) -> _RunInputs:
    """Reads and cross-checks the run directory's small files and picks the calibration images."""
    run = RunDir(config.run_dir)
    out_dir = Path(config.out_dir) if config.out_dir is not None else run.export
    labels = run.read_labels()
    split = run.read_split(config.data_dir)
    run_config = run.read_config()
    run.require(run.model, "the trained Keras model")
    if list(split.classes) and list(split.classes) != labels:
        raise TlxError(f"labels.txt ({labels}) and split.json ({list(split.classes)}) list different "
                       "classes. Are they from the same run? Re-run `tlx train`.")

    # Checked before the slow part (loading TensorFlow and the model).
    if config.max_drop is not None and not split.test:
        raise TlxError("--max-drop compares accuracy on the run's test images, and split.json lists none.")
    if config.fallback == FallbackMode.AUTO and not split.validation:
        raise TlxError("--fallback auto decides on the run's validation images, and split.json lists "
                       "none. Re-run `tlx train` with a validation split, or export without "
                       "--fallback auto.")
    needed = [name for name, used in (("train", any(s.needs_calibration for s in specs.values())),
                                      ("validation", config.fallback == FallbackMode.AUTO),
                                      ("test", config.parity)) if used]
    require_present(split, *needed)
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
    read = [*calibration_items, *(split.validation if config.fallback == FallbackMode.AUTO else ()),
            *(split.test if config.parity else ())]
    require_same_photos(split, [path for path, _ in read], log)
    return _RunInputs(run=run, out_dir=out_dir, labels=labels, split=split, config=run_config,
                      calibration_items=calibration_items)


def _load_model(inputs: _RunInputs, log: Log) -> tuple[object, tuple[int, int], dict]:
    """Loads model.keras (the slow part) and checks its input size against split.json and
    config.json. Returns (inference model, image size as (height, width), in-graph normalization)."""
    from tlx.export import inference

    log(f"Loading {inputs.run.model}")
    trained = inference.load_trained_model(inputs.run.model)
    image_size = inference.input_size(trained)
    fix = f"Export a {MODEL} together with the {SPLIT} and {CONFIG} of its own run."
    check_image_size(image_size, inputs.split.image_size, MODEL, SPLIT, fix)
    check_image_size(image_size, inputs.config.options.image_size, MODEL, CONFIG, fix)
    model = inference.build_inference_model(trained, len(inputs.labels))
    return model, image_size, inference.normalization(trained)


def _load_calibration(items: list[tuple[str, int]], image_size, preprocessing: int, progress: Progress,
                      log: Log) -> calib.CalibrationSet | None:
    """The calibration images at the model's input size; None when nothing needs calibration."""
    if not items:
        return None
    with progress("Calibration images", len(items)) as advance:
        calibration = calib.load(items, image_size, advance, preprocessing)
    if calibration.skipped:
        log(f"Skipped {len(calibration.skipped)} unreadable calibration image(s).")
    return calibration


def _convert_all(config: ExportConfig, specs: dict[str, FormatSpec], inputs: _RunInputs, model,
                 calibration: calib.CalibrationSet | None, test_images: par.TestImages | None,
                 image_size, tlx_info: dict, progress: Progress,
                 log: Log) -> tuple[dict[str, bytes], FallbackResult | None]:
    """Every requested format as .tflite bytes with metadata, in memory, and what --fallback
    auto did (None without it)."""
    from tlx.export.convert import convert, layer_names, saved_model
    from tlx.export.metadata_writer import with_metadata

    # Convert everything before writing anything: a converter failure leaves an earlier
    # export in out_dir untouched and consistent with its export.json.
    converted: dict[str, bytes] = {}
    names = layer_names(model)
    fallback = None
    # The SavedModel goes inside the output folder (hidden), where the next export removes
    # what a killed one left, rather than piling up in the system's temp folder.
    with saved_model(model, inputs.out_dir) as saved:
        for name, spec in specs.items():
            log(f"Converting {name}")
            converted[name] = convert(
                saved, spec,
                representative=calibration.representative_dataset() if spec.needs_calibration else None,
                output_type=config.output_type, layer_names=names)
        if config.fallback == FallbackMode.AUTO:
            fallback = _repair_int8(config, saved, model, calibration, inputs.split.validation,
                                    test_images, image_size, progress, log, inputs.preprocessing)
            if fallback.chosen_step.step > 0:
                converted["int8"] = fallback.model
    contents: dict[str, bytes] = {}
    for name, content in converted.items():
        info = records.file_tlx_info(tlx_info, specs[name], config.output_type)
        if fallback is not None and specs[name].quantization is Quantization.INT8:
            info["float_fallback"] = list(fallback.chosen_step.float_layers)
        contents[name] = with_metadata(
            content, labels=list(inputs.labels), tlx_info=info,
            name=f"tlx {inputs.config.options.backbone} classifier ({name})")
    return contents, fallback


def _write_files(out_dir: Path, specs: dict[str, FormatSpec], contents: dict[str, bytes],
                 log: Log) -> tuple[dict[str, Path], dict[str, dict]]:
    """Writes each .tflite atomically. Returns the paths and export.json's "files" entries."""
    # From here the folder changes: an old export.json would describe files being replaced.
    (out_dir / EXPORT_JSON).unlink(missing_ok=True)
    written: dict[str, Path] = {}
    file_info: dict[str, dict] = {}
    for name, content in contents.items():
        spec = specs[name]
        path = out_dir / spec.filename
        files.write_bytes(path, content)
        written[name] = path
        file_info[name] = records.file_record(spec, content)
        log(f"Wrote {path} ({len(content) / 1e6:.2f} MB)")
    return written, file_info


def _check_fallback_options(config: ExportConfig, specs: dict[str, FormatSpec]) -> None:
    if config.fallback != FallbackMode.AUTO:
        return
    if config.max_drop is None:
        raise TlxError("--fallback auto keeps layers in float until int8 is within --max-drop: "
                       "add --max-drop POINTS.")
    if "int8" not in specs:
        raise TlxError("--fallback auto repairs the int8 file: add --format int8.")


def _load_images(label: str, items, image_size, progress: Progress, preprocessing: int) -> par.TestImages:
    with progress(label, len(items)) as advance:
        return par.load_test_images(list(items), image_size, advance, preprocessing)


def _repair_int8(config: ExportConfig, saved, model, calibration: calib.CalibrationSet,
                 validation_items, test_images: par.TestImages | None, image_size,
                 progress: Progress, log: Log, preprocessing: int) -> FallbackResult:
    """--fallback auto: decided on the validation images against the Keras model's accuracy
    there; the test images (if any) are only reported."""
    validation = _load_images("Validation images", validation_items, image_size, progress, preprocessing)
    if len(validation) == 0:
        raise TlxError(f"None of the {len(validation_items)} validation images is readable, and "
                       "--fallback auto decides on them. Check split.json's validation list, or "
                       "export without --fallback auto.")
    if validation.skipped:
        log(f"Skipped {len(validation.skipped)} unreadable validation image(s).")
    keras_probs = par.keras_probabilities(model, validation)
    reference = float(np.mean(keras_probs.argmax(axis=1) == validation.labels))
    has_test = test_images is not None and len(test_images) > 0
    log(f"int8 float fallback: deciding on {len(validation)} validation images "
        f"(Keras accuracy {reference:.1%})")
    return repair_int8(
        saved, calibration.pixels, validation.pixels, validation.labels,
        max_drop_points=config.max_drop, reference_accuracy=reference,
        output_type=config.output_type,
        test_pixels=test_images.pixels if has_test else None,
        test_labels=test_images.labels if has_test else None,
        log=log)


def _measure_parity(model, contents: dict[str, bytes], images: par.TestImages | None,
                    progress: Progress) -> tuple[par.ParityReport | None, list[str]]:
    """`images`: the test split as read (None when split.json lists none)."""
    if images is None:
        return None, ["split.json has no test images: parity not measured."]
    if len(images) == 0:
        return None, ["No test image was readable: parity not measured."]
    warnings = [f"{len(images.skipped)} test image(s) unreadable, left out of parity."] if images.skipped else []
    # Full-integer files also run on the builtin kernels: tflite-runtime 2.14 (the Pi OS
    # Bookworm backend) computes int8 that way, not with XNNPACK, and the results differ.
    builtin = [name for name in contents if FORMATS[name].quantization is Quantization.INT8]
    with progress("Parity", len(images) * (len(contents) + len(builtin))) as advance:
        return par.measure(model, contents, images, advance, builtin_kernels=builtin), warnings


def _check_formats(names) -> dict[str, FormatSpec]:
    specs: dict[str, FormatSpec] = {}
    for name in names:
        spec = get_format(name)
        specs.setdefault(spec.name, spec)
    if not specs:
        raise TlxError(f"No format to export. Choose from: {', '.join(FORMATS)}.")
    return specs


def _remove_stale_temp_files(out_dir: Path) -> None:
    """Temp files and SavedModels of a killed export (SIGKILL skips every cleanup). Called with
    the folder's lock held, so none of them belongs to a running export."""
    if not out_dir.is_dir():
        return
    names = [spec.filename for spec in FORMATS.values()] + [EXPORT_JSON]
    for name in names:
        for tmp in out_dir.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)
    for staged in out_dir.glob(f"{SAVED_MODEL_PREFIX}*"):
        shutil.rmtree(staged, ignore_errors=True)


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
