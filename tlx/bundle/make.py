"""`tlx bundle RUN_DIR`: the host side. Packs the exported models, the held-out test photos
(original files) and what the host measured on them into one zip (tlx.bundle.archive).

manifest.json holds:
- format, format_version, tlx (version), created (UTC)
- run: folder name, run_id, model_sha256 (of model.keras; every bundled .tflite must carry it)
- labels, image_size, preprocessing (the run's tlx.imaging version; absent: 1)
- files: {member name: sha256} for every other member
- models: [{name, file, size_bytes, output_quantization}]
- images: [{file, label, source}] (source: the photo's path in the data folder, for people)
- skipped: [{source, error}] test photos that could not be read (left out)
- reference: the Keras model's probabilities and top-1 per image, computed here
- host: {machine, results: [{model, backend, scores, top1}]}: every model on every
  interpreter backend installed here, so a device can say which of its outputs differ from
  the host's and by how many quantization steps.

A sweep's bundle (tlx.sweep.bundle, format 2) has the labels, images and preprocessing once,
and a `candidates` list of {backbone, run, image_size, models, reference, host_results}, each
made by `run_part` as a single run's fields are.
"""

from __future__ import annotations

import datetime as _dt
import json
import random
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

import tlx
from tlx import files, machine
from tlx.bundle.archive import FORMAT, LABELS, MANIFEST, open_bundle, sha256_bytes
from tlx.bundle import manifest as schema
from tlx.bundle.manifest import SINGLE_RUN_VERSION
from tlx.bundle.manifest import MAX_IMAGES, MAX_PIXEL_BYTES, MAX_SCORE_VALUES, image_member, model_member
from tlx.errors import MissingDependencyError, TlxError
from tlx.run_dir import RunDir, require_present, require_same_photos

#: Photos are already compressed; deflating them again costs time and saves nothing.
_STORED_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp"})


@dataclass(frozen=True)
class BundleConfig:
    """What `tlx bundle` packs."""

    #: A `tlx train` run with `tlx export` output in RUN_DIR/export.
    run_dir: Path
    #: The bundle file; None: <run folder name>-bundle.zip in the current folder.
    out: Optional[Path] = None
    #: At most this many test photos, a class-stratified subset; None: all of them.
    max_images: Optional[int] = None
    #: Seed of that subset: same run, same seed, same photos.
    seed: int = 0
    #: Where the run's photos are now, if the data folder moved since training.
    data_dir: Optional[Path] = None


@dataclass(frozen=True)
class BundleSummary:
    path: Path
    size_bytes: int
    models: tuple[str, ...]
    images: int
    skipped: tuple[tuple[str, str], ...]
    host_backends: tuple[str, ...]


def default_out(run_dir: Path) -> Path:
    return Path(f"{Path(run_dir).resolve().name}-bundle.zip")


def stratified_subset(items, count: Optional[int], seed: int = 0) -> list[tuple[str, int]]:
    """Up to `count` items keeping the classes' shares (largest remainder; every class that
    has items keeps at least one when count allows). Deterministic; order as given."""
    items = list(items)
    if count is None or count >= len(items):
        return items
    if count < 1:
        raise TlxError(f"--max-images must be 1 or more (got {count}).")
    by_class: dict[int, list[int]] = {}
    for index, (_, label) in enumerate(items):
        by_class.setdefault(int(label), []).append(index)
    classes = sorted(by_class)
    exact = {c: count * len(by_class[c]) / len(items) for c in classes}
    take = {c: int(exact[c]) for c in classes}
    for c in sorted(classes, key=lambda c: (take[c] - exact[c], c))[:count - sum(take.values())]:
        take[c] += 1
    rng = random.Random(seed)
    chosen = set()
    for c in classes:
        chosen.update(rng.sample(by_class[c], take[c]))
    return [items[i] for i in sorted(chosen)]


def make_bundle(config: BundleConfig, log: Callable[[str], None] = lambda message: None) -> BundleSummary:
    from tlx.bench.evaluate import tensorflow_available
    from tlx.runtime.backends import installed_backends

    out = Path(config.out) if config.out is not None else default_out(config.run_dir)
    check_out(out)
    run = RunDir(config.run_dir)
    labels = run.read_labels()
    split = run.read_split(config.data_dir)
    run.require(run.model, "the trained Keras model, the bundle's reference")
    if not split.test:
        raise TlxError(f"The test split in {run.split} is empty: nothing to bundle. "
                       "Re-run `tlx train` with a larger --test-fraction or a --test-dir.")
    require_present(split, "test")
    if not tensorflow_available():
        raise MissingDependencyError("`tlx bundle` (the Keras reference is computed on the host)", "train")
    items = stratified_subset(split.test, config.max_images, config.seed)
    require_same_photos(split, [path for path, _ in items], log)
    host_backends = installed_backends()
    part, models, images = run_part(run, items, tuple(split.image_size), host_backends, log)
    manifest = {
        "format": FORMAT, "format_version": SINGLE_RUN_VERSION, "tlx": tlx.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        **shared_photos(labels, images, split.data_dir),
        **{key: part[key] for key in ("run", "image_size", "preprocessing", "models", "reference")},
        "host": {"machine": machine.current().to_json(), "results": part["host_results"]},
    }
    photos = photo_members(images)
    write_bundle(out, manifest, labels, models, photos)
    return BundleSummary(out, out.stat().st_size, tuple(m["name"] for m in part["models"]), len(photos),
                         images.skipped, tuple(host_backends))


def run_part(run: RunDir, items, image_size: tuple[int, int], host_backends, log,
             folder: Optional[str] = None) -> tuple[dict, dict[str, bytes], object]:
    """What a bundle says about one run: {run, image_size, preprocessing, models, reference,
    host_results}, its models {member name: bytes} (under models/<folder>/ when given: a
    sweep's candidate), and the photos decoded at its size."""
    from tlx.bench.bench import exported_models, model_name
    from tlx.pixels.cache import load_labelled

    tflite_paths = exported_models(run)
    model_sha = run.model_sha256()
    contents = {path: path.read_bytes() for path in tflite_paths}
    labels = run.read_labels()
    # A bundle describes one model per run; a device cannot check what the host did not.
    run.require_from_this_model(list(contents), model_sha, labels)
    check_photo_count(len(items), image_size,
                       scores_per_photo=len(labels) * (len(contents) * len(host_backends) + 1))
    log(f"Decoding {len(items)} test photos at {image_size[0]}x{image_size[1]}")
    preprocessing = run.preprocessing_version()
    # A photo the device would refuse (it decodes at most MAX_PHOTO_PIXELS) is left out here,
    # with its reason in the manifest, rather than shipped to fail there.
    images = load_labelled(items, image_size, version=preprocessing, max_pixels=schema.MAX_PHOTO_PIXELS)
    if not len(images):
        listed = "".join(f"\n  {path}: {reason}" for path, reason in images.skipped[:5])
        raise TlxError(f"None of the test photos could be read: nothing to bundle.{listed}")
    log(f"Keras reference of {run.root.name} (TensorFlow)")
    reference = _keras_probabilities(run.model, len(labels), images)
    results = []
    for path, content in contents.items():
        for backend in host_backends:
            log(f"Host: {model_name(path)} on {backend}")
            scores = _tflite_scores(content, images.pixels, str(path), backend)
            results.append({"model": model_name(path), "backend": backend,
                            "scores": _rounded(scores), "top1": _top1(scores)})
    part = {
        "run": {"name": run.root.resolve().name, "run_id": _run_id(run), "model_sha256": model_sha},
        "image_size": list(image_size), "preprocessing": preprocessing,
        "models": [{"name": model_name(p), "file": model_member(model_name(p), folder), "size_bytes": len(c),
                    "output_quantization": _output_quantization(run, p, c, preprocessing)}
                   for p, c in contents.items()],
        "reference": {"name": "keras", "probabilities": _rounded(reference), "top1": _top1(reference)},
        "host_results": results}
    return part, {model_member(model_name(p), folder): c for p, c in contents.items()}, images


def photo_members(images) -> list[tuple[str, Path]]:
    return [(image_member(i, _member_name(Path(p).name)), Path(p)) for i, p in enumerate(images.paths)]


def shared_photos(labels: list[str], images, data_dir: str) -> dict:
    """The manifest's labels, images and skipped photos (a sweep's candidates share them)."""
    return {"labels": labels, "files": {},
            "images": [{"file": member, "label": int(label), "source": _source(path, data_dir)}
                       for (member, path), label in zip(photo_members(images), images.labels)],
            "skipped": [{"source": _source(p, data_dir), "error": e} for p, e in images.skipped]}


def check_out(out: Path) -> None:
    """Before any work: `out` can be written (its folder exists or can be made, and takes a
    file; `out` itself is no folder). TlxError naming -o otherwise."""
    if out.is_dir():
        raise TlxError(f"-o {out} is a folder; give the bundle's file name, e.g. -o {out / 'bundle.zip'}.")
    files.require_writable_dir(out.parent, "-o: the folder")


def check_photo_count(count: int, image_size: tuple[int, int], scores_per_photo: int) -> None:
    """A device holds every photo decoded at once, and the manifest every score: the bundle
    schema bounds that memory, so a run with more photos is told to take a subset."""
    fits = min(MAX_IMAGES, MAX_PIXEL_BYTES // (image_size[0] * image_size[1] * 3),
               MAX_SCORE_VALUES // scores_per_photo)
    if count > fits:
        raise TlxError(f"{count} test photos of {image_size[0]}x{image_size[1]} pixels are more than a "
                       f"bundle holds ({fits}: a small device decodes them all into memory). "
                       f"Pass --max-images {fits} (a class-stratified subset).")


def _member_name(name: str) -> str:
    """The photo's file name as a zip member: no control character or backslash, not too long
    (the schema's pattern); the suffix kept, it tells the decoder what to expect."""
    cleaned = "".join("_" if unicodedata.category(c)[0] == "C" or c in "\\/" else c for c in name)
    stem, suffix = Path(cleaned).stem, Path(cleaned).suffix[:10]
    return (stem[:100] or "photo") + suffix


def _keras_probabilities(model_path: Path, num_labels: int, images) -> np.ndarray:
    from tlx.export.inference import build_inference_model, load_trained_model
    from tlx.export.parity import keras_probabilities

    return keras_probabilities(build_inference_model(load_trained_model(model_path), num_labels), images)


def _tflite_scores(content: bytes, pixels: np.ndarray, source: str, backend: str) -> np.ndarray:
    from tlx.export.parity import tflite_probabilities

    return tflite_probabilities(content, pixels, source=source, backend=backend)[0]


def _output_quantization(run: RunDir, path: Path, content: bytes, preprocessing: int) -> Optional[list]:
    """The model's output quantization, once it is known to decode photos as the run did."""
    from tlx.runtime import Classifier

    classifier = Classifier(content)
    try:
        run.require_preprocessing(path, classifier.preprocessing, preprocessing)
        return list(classifier.output_quantization) if classifier.output_quantization else None
    finally:
        classifier.close()


def _rounded(scores: np.ndarray) -> list[list[float]]:
    # float32 values written as the shortest decimal that reads back as the same float32:
    # exact for dequantized int8 outputs, so "identical" on the device means identical.
    return [[float(np.format_float_positional(v, unique=True, precision=None)) if np.isfinite(v) else None
             for v in row.astype(np.float32)] for row in scores]


def _top1(scores: np.ndarray) -> list[int]:
    return [int(i) for i in np.argmax(scores, axis=1)]


def _run_id(run: RunDir) -> Optional[str]:
    try:
        return run.read_config().run_id
    except TlxError:
        return None


def _source(path, data_dir: str) -> str:
    path = Path(path)
    try:
        return path.relative_to(data_dir).as_posix() if data_dir else path.name
    except ValueError:
        return path.name


def write_bundle(out: Path, manifest: dict, labels: list[str], models: dict[str, bytes], photos) -> None:
    """The zip, atomically: a temp file beside `out`, checked by the device's own reader
    (tlx.bundle.archive: layout, manifest schema, hashes, models' metadata), then renamed."""
    try:
        with files.atomic_path(out) as tmp:
            with zipfile.ZipFile(tmp, "w") as archive:
                _add_members(archive, manifest, labels, models, photos)
            try:
                open_bundle(tmp).close()
            except TlxError as exc:
                raise TlxError(f"The bundle failed its own check, so {out} was not written: {exc}") from None
    except OSError as exc:
        raise TlxError(f"Could not write {out} ({exc.strerror or exc}); nothing was written there. "
                       "Free some space or choose another place with -o.") from None


def _add_members(archive: zipfile.ZipFile, manifest: dict, labels: list[str],
                 models: dict[str, bytes], photos) -> None:
    def add(name: str, data: bytes, stored: bool = False) -> None:
        manifest["files"][name] = sha256_bytes(data)
        archive.writestr(name, data, zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)

    add(LABELS, "".join(f"{label}\n" for label in labels).encode("utf-8"))
    for member, content in models.items():
        # Stored: deflate saves under 10% on model weights, and inflating a member on the
        # device holds it twice in memory (peak RSS is one of the things measured there).
        add(member, content, stored=True)
    for member, path in photos:
        add(member, path.read_bytes(), stored=path.suffix.lower() in _STORED_SUFFIXES)
    # Last: a zip cut short before this point has no manifest and is refused as foreign.
    archive.writestr(MANIFEST, json.dumps(manifest, indent=1), zipfile.ZIP_DEFLATED)


def model_name_of(path: Path) -> str:
    from tlx.bench.bench import model_name

    return model_name(path)
