"""The bundle's manifest.json: one typed schema, checked in one place before anything uses it.

A bundle comes from elsewhere (copied to a device, maybe edited, maybe crafted), so every
field is checked here for its type, its range and its agreement with the other fields:
labels against every label index and score row, the photo count against every list of
per-photo figures, member names against fixed patterns, top-1 lists against the scores
they summarize. Sizes are bounded so that a small file cannot make the device allocate
gigabytes (tlx.bundle.archive bounds the members themselves).

What cannot be checked here: a consistent lie in the host's claims (a label changed to
another valid class, host scores nudged within the model's output range). The manifest is
not signed; the device reports against what it says, and every member it names is checked
against its SHA-256.

TensorFlow-free: this runs on the device.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from tlx import files
from tlx.errors import TlxError
from tlx.text import printable

FORMAT = "tlx-bench-bundle"
#: Bumped when a reader of the previous version could misread a new bundle. 2: a sweep's
#: bundle (a `candidates` list); a single run's bundle is still written as version 1, so
#: that an older tlx on the device reads it.
FORMAT_VERSION = 2
SINGLE_RUN_VERSION = 1
SWEEP_VERSION = 2

MANIFEST = "manifest.json"
LABELS = "labels.txt"
MODELS = "models/"
IMAGES = "images/"

#: Bounds that keep a crafted bundle from exhausting a small device's memory. A genuine
#: bundle of 2,000 photos and 100 classes has a manifest of a few MB.
MAX_MANIFEST_BYTES = 16 << 20
MAX_LABELS_BYTES = 1 << 20
MAX_MODEL_BYTES = 64 << 20
MAX_IMAGE_BYTES = 32 << 20
MAX_IMAGES = 5000
MAX_LABELS = 1000
MAX_MODELS = 8
#: Candidates of a sweep's bundle (backbones x image sizes), and models in all.
MAX_CANDIDATES = 32
MAX_SWEEP_MODELS = 64
MAX_HOST_RESULTS = 64
#: Per-photo scores held in the manifest (reference and host results together).
MAX_SCORE_VALUES = 1_000_000
#: The model input side in pixels, and the decoded photos held at once (photos x height x
#: width x 3 bytes): the device keeps them in memory for every model.
MAX_IMAGE_SIDE = 1024
MAX_PIXEL_BYTES = 96 << 20
#: A photo's decoded size (a 24 MP camera photo): a small PNG can decode to gigapixels.
MAX_PHOTO_PIXELS = 24_000_000
MAX_TEXT = 4096
#: Objects and lists, and values, a manifest may hold: a JSON value costs Python 30-60 bytes
#: against its 2-4 bytes of text, so the manifest's size alone does not bound memory.
MAX_CONTAINERS = 300_000
MAX_VALUES = MAX_SCORE_VALUES + 200_000

_HEX64 = re.compile(r"[0-9a-f]{64}")
#: models/model_<name>.tflite, as `tlx export` names its files.
_MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9_]{0,31}")
#: A sweep candidate's run folder, <backbone>-<size> (tlx.sweep.records.RUN_NAME).
_RUN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}-[0-9]{1,4}")
#: images/<nnnn>-<original file name>: no folder, no control character, no backslash.
_IMAGE_FILE = re.compile(r"images/(\d{4,6})-([^/\\\x00-\x1f\x7f]{1,200})")


class BundleError(TlxError):
    """A bundle that cannot be trusted: not a bundle, damaged, crafted, or from a newer tlx."""


def model_member(name: str, run: Optional[str] = None) -> str:
    """models/model_<name>.tflite; in a sweep's bundle models/<run>/model_<name>.tflite."""
    return f"{MODELS}{run + '/' if run else ''}model_{name}.tflite"


def image_member(index: int, file_name: str) -> str:
    return f"{IMAGES}{index:04d}-{file_name}"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    file: str
    size_bytes: int
    #: (scale, zero point) of the output tensor; None for a float output.
    output_quantization: Optional[tuple[float, int]]


@dataclass(frozen=True)
class ImageEntry:
    file: str
    label: int
    #: The photo's path in the host's data folder, for people (not trusted as a path).
    source: str


@dataclass(frozen=True)
class HostResult:
    model: str
    backend: str
    #: (photos, classes) float32; NaN where the host had no output.
    scores: np.ndarray
    top1: np.ndarray


@dataclass(frozen=True)
class Manifest:
    format_version: int
    tlx: str
    created: str
    #: {name, run_id, model_sha256}, as written (copied into the device result).
    run: dict
    labels: tuple[str, ...]
    image_size: tuple[int, int]
    preprocessing: int
    #: {member name: sha256} for every member but the manifest.
    files: dict
    models: tuple[ModelEntry, ...]
    images: tuple[ImageEntry, ...]
    reference_name: str
    reference_top1: np.ndarray
    host_machine: dict
    host_results: tuple[HostResult, ...]
    #: The sweep candidate's backbone when this is one part of a sweep's bundle.
    backbone: Optional[str] = None

    def parts(self) -> tuple["Manifest", ...]:
        """The runs the bundle holds: this one."""
        return (self,)

    @property
    def run_name(self) -> str:
        return self.run["name"]

    @property
    def run_id(self) -> Optional[str]:
        return self.run.get("run_id")

    @property
    def model_sha256(self) -> Optional[str]:
        return self.run.get("model_sha256")


@dataclass(frozen=True)
class SweepManifest:
    """A sweep's bundle: the photos and labels every candidate shares, and per candidate a
    Manifest of its own (run, image size, models, reference, host results), each checked by
    the same rules as a single run's bundle."""

    format_version: int
    tlx: str
    created: str
    #: {name, split_sha256}: the sweep folder and the hash of the one split it tested on.
    sweep: dict
    labels: tuple[str, ...]
    preprocessing: int
    files: dict
    images: tuple[ImageEntry, ...]
    host_machine: dict
    candidates: tuple[Manifest, ...]

    def parts(self) -> tuple[Manifest, ...]:
        return self.candidates

    @property
    def models(self) -> tuple[ModelEntry, ...]:
        return tuple(m for c in self.candidates for m in c.models)


class _Invalid(Exception):
    """One field is wrong: `where` is its path in the manifest."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}")


def parse_manifest(raw: bytes, source: str) -> "Manifest | SweepManifest":
    """The manifest in `raw` as a Manifest, or BundleError naming the first field that is wrong.

    `raw` is at most MAX_MANIFEST_BYTES (the caller reads no more)."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{source}: {MANIFEST} is larger than {MAX_MANIFEST_BYTES >> 20} MB. "
                          f"{remake(source)}")
    containers, values = files.json_nodes(raw)
    if containers > MAX_CONTAINERS or values > MAX_VALUES:
        raise BundleError(f"{source}: {MANIFEST} holds {containers} objects and lists and {values} values; "
                          f"a bundle's has at most {MAX_CONTAINERS} and {MAX_VALUES}. {remake(source)}")
    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys,
                         parse_constant=_no_constant)
    except _Invalid as exc:
        raise BundleError(f"{source}: {MANIFEST} is not valid: {exc}. {remake(source)}") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BundleError(f"{source}: {MANIFEST} is not valid JSON ({str(exc)[:200]}). "
                          f"{remake(source)}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BundleError(f"{source} is a zip archive but not a tlx bench bundle ({MANIFEST} does not "
                          f"say format {FORMAT!r}). Pass a file written by `tlx bundle RUN_DIR`.")
    version = doc.get("format_version")
    if type(version) is not int or version > FORMAT_VERSION or version < 1:
        _newer(doc, version, source)
    try:
        return _sweep_manifest(doc, version) if "candidates" in doc else _manifest(doc, version)
    except _Invalid as exc:
        raise BundleError(f"{source}: {MANIFEST} is not valid: {exc}. {remake(source)}") from None


def remake(path) -> str:
    from pathlib import Path

    return (f"Make it again on the host with `tlx bundle RUN_DIR -o {Path(str(path)).name}` and copy "
            "the whole file (compare its size or sha256sum on both machines).")


def _newer(doc: dict, version, source: str) -> None:
    import tlx

    if type(version) is int and version > FORMAT_VERSION:
        made_by = doc.get("tlx") if isinstance(doc.get("tlx"), str) else "?"
        raise BundleError(
            f"{source} was written by tlx {made_by[:40]} in bundle format {version}; this tlx "
            f"({tlx.__version__}) reads format {FORMAT_VERSION} and older. Upgrade tlx on this machine "
            "(pip install -U tlx-edge), or make the bundle with the tlx installed here.")
    raise BundleError(f"{source}: {MANIFEST} has no valid format_version (a whole number from 1 to "
                      f"{FORMAT_VERSION}). {remake(source)}")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    # Python keeps the last of two equal keys and other readers the first: refuse both.
    out = {}
    for key, value in pairs:
        if key in out:
            raise _Invalid(repr(key[:80]), "appears twice in one object")
        out[key] = value
    return out


def _no_constant(name: str):
    raise _Invalid(name, "is not a JSON number")


# --- field checks: each returns the checked value or raises _Invalid naming the field ------------

def _obj(doc, where: str) -> dict:
    if not isinstance(doc, dict):
        raise _Invalid(where, f"must be an object, not {_kind(doc)}")
    return doc


def _field(doc: dict, key: str, where: str, default=...):
    if key not in doc:
        if default is ...:
            raise _Invalid(f"{where}.{key}" if where else key, "is missing")
        return default
    return doc[key]


def _str(value, where: str, pattern: Optional[re.Pattern] = None, limit: int = MAX_TEXT,
         optional: bool = False) -> Optional[str]:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _Invalid(where, f"must be text, not {_kind(value)}")
    if len(value) > limit:
        raise _Invalid(where, f"is longer than {limit} characters")
    if pattern is not None and not pattern.fullmatch(value):
        raise _Invalid(where, f"{value[:80]!r} is not of the form tlx writes")
    return value


def _int(value, where: str, low: int, high: int) -> int:
    if type(value) is not int:  # bool is an int in Python, not in a manifest
        raise _Invalid(where, f"must be a whole number, not {_kind(value)}")
    if not low <= value <= high:
        raise _Invalid(where, f"{value} is outside {low}..{high}")
    return value


def _list(value, where: str, low: int, high: int) -> list:
    if not isinstance(value, list):
        raise _Invalid(where, f"must be a list, not {_kind(value)}")
    if not low <= len(value) <= high:
        raise _Invalid(where, f"has {len(value)} entries; {low}..{high} expected")
    return value


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "true/false", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _sweep_manifest(doc: dict, version: int) -> SweepManifest:
    """Each candidate is checked as a single run's manifest made of the shared fields and its
    own; then the candidates together (run names once each, every file listed used)."""
    if version < SWEEP_VERSION:
        raise _Invalid("candidates", f"a bundle of format {version} has none")
    entries = _list(_field(doc, "candidates", ""), "candidates", 1, MAX_CANDIDATES)
    files = _obj(_field(doc, "files", ""), "files")
    host = _obj(_field(doc, "host", ""), "host")
    shared = {key: doc[key] for key in ("tlx", "created", "labels", "preprocessing", "images") if key in doc}
    parts, runs, used, scores = [], set(), set(), 0
    for i, entry in enumerate(entries):
        where = f"candidates[{i}]"
        entry = _obj(entry, where)
        backbone = _str(_field(entry, "backbone", where), f"{where}.backbone", limit=100)
        run = _str(_field(_obj(_field(entry, "run", where), f"{where}.run"), "name", f"{where}.run"),
                   f"{where}.run.name", _RUN_NAME, limit=110)
        size = _list(_field(entry, "image_size", where), f"{where}.image_size", 2, 2)
        side = _int(size[0], f"{where}.image_size[0]", 8, MAX_IMAGE_SIDE)
        if run != f"{backbone}-{side}":
            raise _Invalid(f"{where}.run.name", f"{run[:80]!r} is not <backbone>-<image size>")
        if run in runs:
            raise _Invalid(f"{where}.run.name", f"{run[:80]!r} appears twice")
        runs.add(run)
        own = {name for name in files if name.startswith(f"{MODELS}{run}/")}
        part_doc = {**shared, **{k: entry[k] for k in ("run", "image_size", "models", "reference") if k in entry},
                    "host": {"machine": host.get("machine"), "results": _field(entry, "host_results", where)},
                    "files": {name: files[name] for name in files
                              if name in own or not name.startswith(MODELS)}}
        try:
            part = _manifest(part_doc, version, run)
        except _Invalid as exc:
            raise _Invalid(where, str(exc)) from None
        scores += (len(part.host_results) + 1) * len(part.images) * len(part.labels)
        if scores > MAX_SCORE_VALUES:
            raise _Invalid(where, f"the candidates hold more than {MAX_SCORE_VALUES} scores in all; "
                                  "make the bundle with fewer photos")
        used.update(part.files)
        parts.append(dataclasses.replace(part, backbone=backbone))
    if sum(len(p.models) for p in parts) > MAX_SWEEP_MODELS:
        raise _Invalid("candidates", f"hold more than {MAX_SWEEP_MODELS} models")
    if set(files) != used:
        raise _Invalid("files", f"lists {sorted(set(files) - used)[0][:80]!r}, which no candidate uses")
    sweep = _obj(_field(doc, "sweep", ""), "sweep")
    first = parts[0]
    return SweepManifest(
        format_version=version, tlx=first.tlx, created=first.created,
        sweep={"name": _str(_field(sweep, "name", "sweep"), "sweep.name", limit=255),
               "split_sha256": _str(_field(sweep, "split_sha256", "sweep"), "sweep.split_sha256", _HEX64)},
        labels=first.labels, preprocessing=first.preprocessing, files=dict(files), images=first.images,
        host_machine=first.host_machine, candidates=tuple(parts))


def _manifest(doc: dict, version: int, run_folder: Optional[str] = None) -> Manifest:
    labels = tuple(_labels(_field(doc, "labels", "")))
    size = _list(_field(doc, "image_size", ""), "image_size", 2, 2)
    image_size = (_int(size[0], "image_size[0]", 8, MAX_IMAGE_SIDE),
                  _int(size[1], "image_size[1]", 8, MAX_IMAGE_SIDE))
    images = _images(_field(doc, "images", ""), len(labels))
    pixel_bytes = len(images) * image_size[0] * image_size[1] * 3
    if pixel_bytes > MAX_PIXEL_BYTES:
        raise _Invalid("images", f"{len(images)} photos of {image_size[0]}x{image_size[1]} take "
                                 f"{pixel_bytes >> 20} MB decoded, more than {MAX_PIXEL_BYTES >> 20} MB: "
                                 "make the bundle with fewer photos (--max-images)")
    models = _models(_field(doc, "models", ""), run_folder)
    files = _files(_field(doc, "files", ""), models, images)
    n, k = len(images), len(labels)
    results = _list(_field(_obj(_field(doc, "host", ""), "host"), "results", "host"), "host.results",
                    0, MAX_HOST_RESULTS)
    if (len(results) + 1) * n * k > MAX_SCORE_VALUES:
        raise _Invalid("host.results", f"{len(results) + 1} score tables of {n} photos x {k} classes: more "
                                       f"than {MAX_SCORE_VALUES} values; make the bundle with fewer photos")
    reference = _obj(_field(doc, "reference", ""), "reference")
    probabilities = _scores(_field(reference, "probabilities", "reference"), "reference.probabilities",
                            n, k, allow_missing=False)
    reference_top1 = _top1(_field(reference, "top1", "reference"), "reference.top1", probabilities)
    host = doc["host"]
    run = _run(_field(doc, "run", ""))
    return Manifest(
        format_version=version,
        tlx=_str(_field(doc, "tlx", ""), "tlx", limit=64),
        created=_str(_field(doc, "created", ""), "created", limit=64),
        run=run, labels=labels, image_size=image_size,
        preprocessing=_preprocessing(_field(doc, "preprocessing", "", default=1)),
        files=files, models=models, images=images,
        reference_name=_str(_field(reference, "name", "reference"), "reference.name", limit=64),
        reference_top1=reference_top1,
        host_machine=_machine(_field(host, "machine", "host")),
        host_results=_host_results(results, models, n, k),
    )


def _labels(value) -> list[str]:
    labels = _list(value, "labels", 1, MAX_LABELS)
    for i, label in enumerate(labels):
        _str(label, f"labels[{i}]", limit=200)
        if not label or label != label.strip() or any(c in label for c in "\r\n\x00"):
            raise _Invalid(f"labels[{i}]", f"{label[:80]!r} cannot be a line of labels.txt")
    if len(set(labels)) != len(labels):
        raise _Invalid("labels", "a class name appears twice")
    return labels


def _preprocessing(value) -> int:
    from tlx.imaging import PREPROCESSING_VERSIONS

    version = _int(value, "preprocessing", 1, 1 << 30)
    if version not in PREPROCESSING_VERSIONS:
        raise BundleError(f"The bundle asks for preprocessing version {version}, which this tlx does not "
                          f"know (known: {sorted(PREPROCESSING_VERSIONS)}). Upgrade tlx on this machine.")
    return version


def _run(value) -> dict:
    run = _obj(value, "run")
    return {"name": _str(_field(run, "name", "run"), "run.name", limit=255),
            "run_id": _str(_field(run, "run_id", "run", None), "run.run_id", limit=128, optional=True),
            "model_sha256": _str(_field(run, "model_sha256", "run", None), "run.model_sha256", _HEX64,
                                 optional=True)}


def _models(value, run_folder: Optional[str] = None) -> tuple[ModelEntry, ...]:
    out = []
    for i, entry in enumerate(_list(value, "models", 1, MAX_MODELS)):
        where = f"models[{i}]"
        entry = _obj(entry, where)
        name = _str(_field(entry, "name", where), f"{where}.name", _MODEL_NAME)
        file = _str(_field(entry, "file", where), f"{where}.file")
        if file != model_member(name, run_folder):
            raise _Invalid(f"{where}.file", f"{file[:80]!r} is not {model_member(name, run_folder)!r}")
        size = _int(_field(entry, "size_bytes", where), f"{where}.size_bytes", 16, MAX_MODEL_BYTES)
        out.append(ModelEntry(name, file, size, _quantization(_field(entry, "output_quantization", where, None),
                                                              f"{where}.output_quantization")))
    if len({m.name for m in out}) != len(out):
        raise _Invalid("models", "a model name appears twice")
    return tuple(out)


def _quantization(value, where: str) -> Optional[tuple[float, int]]:
    if value is None:
        return None
    scale, zero_point = _list(value, where, 2, 2)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (
            math.isfinite(scale) and scale > 0):
        raise _Invalid(f"{where}[0]", "the scale must be a positive number")
    return float(scale), _int(zero_point, f"{where}[1]", -128, 255)


def _images(value, num_labels: int) -> tuple[ImageEntry, ...]:
    out = []
    for i, entry in enumerate(_list(value, "images", 1, MAX_IMAGES)):
        where = f"images[{i}]"
        entry = _obj(entry, where)
        file = _str(_field(entry, "file", where), f"{where}.file", _IMAGE_FILE)
        if printable(file) != file:  # a terminal control or bidirectional override in a name
            raise _Invalid(f"{where}.file", f"{printable(file[:80])} holds a control character")
        if int(_IMAGE_FILE.fullmatch(file).group(1)) != i:
            raise _Invalid(f"{where}.file", f"{file[:80]!r} is not numbered {i:04d}: photos are listed once, "
                                            "in order")
        label = _int(_field(entry, "label", where), f"{where}.label", 0, num_labels - 1)
        source = _str(_field(entry, "source", where, ""), f"{where}.source", limit=1024)
        out.append(ImageEntry(file, label, source))
    return tuple(out)


def _files(value, models: tuple[ModelEntry, ...], images: tuple[ImageEntry, ...]) -> dict:
    listed = _obj(value, "files")
    expected = {LABELS, *(m.file for m in models), *(i.file for i in images)}
    if set(listed) != expected:
        extra, missing = sorted(set(listed) - expected), sorted(expected - set(listed))
        raise _Invalid("files", f"lists {extra[0][:80]!r}, which nothing uses" if extra else
                                f"has no hash for {missing[0][:80]!r}")
    for name, digest in listed.items():
        _str(digest, f"files[{name[:80]!r}]", _HEX64)
    return dict(listed)


def _scores(value, where: str, n: int, k: int, allow_missing: bool) -> np.ndarray:
    """An (n, k) float32 table; a row of nulls (no output for that photo) when `allow_missing`."""
    rows = _list(value, where, n, n)
    out = np.empty((n, k), dtype=np.float32)
    for i, row in enumerate(rows):
        row = _list(row, f"{where}[{i}]", k, k)
        if allow_missing and all(v is None for v in row):
            out[i] = np.nan
            continue
        for j, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.001:
                raise _Invalid(f"{where}[{i}][{j}]", f"must be a probability from 0 to 1, not {_kind(v)} "
                                                     f"{str(v)[:40]}")
        out[i] = row
    return out


def _top1(value, where: str, scores: np.ndarray) -> np.ndarray:
    """The top-1 list, which must be the argmax of `scores` (first maximum; first NaN)."""
    top1 = _list(value, where, len(scores), len(scores))
    k = scores.shape[1]
    for i, t in enumerate(top1):
        _int(t, f"{where}[{i}]", 0, k - 1)
    top1 = np.asarray(top1, dtype=np.int64)
    if len(scores) and not np.array_equal(top1, np.argmax(scores, axis=1)):
        i = int(np.flatnonzero(top1 != np.argmax(scores, axis=1))[0])
        raise _Invalid(f"{where}[{i}]", "is not the class with the highest score")
    return top1


def _host_results(results: list, models: tuple[ModelEntry, ...], n: int, k: int) -> tuple[HostResult, ...]:
    from tlx.runtime.backends import BACKENDS

    by_name = {m.name: m for m in models}
    out, seen = [], set()
    for i, entry in enumerate(results):
        where = f"host.results[{i}]"
        entry = _obj(entry, where)
        model = _str(_field(entry, "model", where), f"{where}.model", limit=64)
        backend = _str(_field(entry, "backend", where), f"{where}.backend", limit=64)
        if model not in by_name:
            raise _Invalid(f"{where}.model", f"{model[:40]!r} is not a model of the bundle")
        if backend not in BACKENDS:
            raise _Invalid(f"{where}.backend", f"{backend[:40]!r} is not one of {', '.join(BACKENDS)}")
        if (model, backend) in seen:
            raise _Invalid(where, f"a second result for {model} on {backend}")
        seen.add((model, backend))
        scores = _scores(_field(entry, "scores", where), f"{where}.scores", n, k, allow_missing=True)
        _on_grid(scores, by_name[model].output_quantization, f"{where}.scores")
        out.append(HostResult(model, backend, scores, _top1(_field(entry, "top1", where), f"{where}.top1",
                                                            scores)))
    return tuple(out)


def _on_grid(scores: np.ndarray, quantization: Optional[tuple[float, int]], where: str) -> None:
    """A quantized model's dequantized outputs are scale x (q - zero point), q a byte."""
    if quantization is None:
        return
    scale, zero_point = quantization
    q = scores.astype(np.float64) / scale + zero_point
    ok = np.isnan(q) | ((np.abs(q - np.rint(q)) < 1e-3) & (q >= -128.5) & (q <= 255.5))
    if not ok.all():
        i, j = (int(x[0]) for x in np.nonzero(~ok))
        raise _Invalid(f"{where}[{i}][{j}]", f"{float(scores[i, j]):.8g} is no output of a model with output scale "
                                             f"{scale:g} and zero point {zero_point}")


def _machine(value) -> dict:
    """The host's machine record: text, whole numbers and lists of text, as tlx.machine writes."""
    record = _obj(value, "host.machine")
    if len(record) > 32:
        raise _Invalid("host.machine", "has more than 32 fields")
    for key, item in record.items():
        where = f"host.machine.{key[:40]}"
        _str(key, where, limit=64)
        if isinstance(item, list):
            for x in _list(item, where, 0, 64):
                _str(x, where, limit=256)
        elif isinstance(item, dict):
            if len(item) > 64:
                raise _Invalid(where, "has more than 64 fields")
            for sub, x in item.items():
                _str(x, f"{where}.{sub[:40]}", limit=256, optional=True)
        elif item is not None and type(item) is not int:
            _str(item, where, limit=1024)
    _str(_field(record, "cpu", "host.machine"), "host.machine.cpu", limit=1024)
    return record
