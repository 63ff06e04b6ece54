"""`tlx bench BUNDLE`: the device side. Every model in the bundle on every interpreter backend
installed here, on the bundle's photos, through tlx.runtime (no TensorFlow):

- top-1 accuracy with its Wilson interval; the drop against the bundled Keras reference with
  a paired interval (same photos); top-1 agreement with that reference;
- agreement with the host's result for the same file and backend: how many photos' outputs
  differ at all, and by how many quantization steps (the device's kernels against the host's);
- latency p50/p90/p99 per thread count, `tlx predict` cold start, peak RSS of this process;
- the machine record.

The same pieces as `tlx bench RUN_DIR` (tlx.bench: evaluate, measure, stats), fed from the
bundle instead of a run folder.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

import tlx
from tlx import files, machine
from tlx.bench import evaluate, measure
from tlx.bench.options import MeasureOptions
from tlx.bench.rows import HostComparison, ModelRow, RunRecord, SweepCandidate, cold_start_of, failures_of
from tlx.bundle.archive import Bundle, BundleError, open_bundle, sha256_bytes
from tlx.bundle.manifest import MAX_PHOTO_PIXELS, Manifest, ModelEntry, remake
from tlx.bundle.result import (BundleRecord, DeviceResult, MAX_FAILURES, ResultError, Settings, parse_machine,
                               parse_result)
from tlx.drop import check_max_drop, drop_text, gate_text
from tlx.errors import TlxError
from tlx.progress import Log, silent
from tlx.imaging import check_image_size, load_image
from tlx.stats import paired_difference, wilson
from tlx.text import markdown_text, printable

#: When the host did not run a backend, the host backend with the same kernels to compare
#: against: tflite-runtime runs int8 on the builtin kernels, as ai-edge-litert does without
#: its default delegate.
HOST_EQUIVALENT = {"tflite-runtime": "litert-builtin", "litert-builtin": "tflite-runtime"}


@dataclass(frozen=True)
class DeviceBenchConfig:
    """What `tlx bench BUNDLE` measures and how."""

    #: A file written by `tlx bundle`.
    bundle: Path
    #: Timing, cold start and the drop limit, as for a run folder (tlx.bench.options).
    measurement: MeasureOptions = MeasureOptions()
    #: Backends to run; None: those of litert and tflite-runtime installed here.
    backends: Optional[tuple[str, ...]] = None
    #: Set when this "device" is an emulator (e.g. "qemu-aarch64 -cpu cortex-a72"): the result
    #: then checks function and accuracy only, and its latency is never shown as a device figure.
    emulated: Optional[str] = None


def default_prefix(bundle: Path) -> Path:
    """<bundle name without .zip>-<host name>: one result per device, side by side."""
    import platform

    stem = Path(bundle).name.removesuffix(".zip")
    return Path(f"{stem}-{platform.node() or 'device'}")


def bench_bundle(config: DeviceBenchConfig, log: Log = silent) -> DeviceResult:
    """Run the device benchmark; returns the result (tlx.bundle.result, see write_result)."""
    from tlx.runtime.backends import AUTO_ORDER, installed_backends, resolve_name

    options = config.measurement
    check_max_drop(options.max_drop, options.max_drop_on)
    started = time.perf_counter()
    # By default the backends a device user would run (litert-builtin only when named: it
    # stands in for tflite-runtime's kernels on a host, and costs time and memory here).
    backends = ([resolve_name(b) for b in config.backends] if config.backends else
                [b for b in installed_backends() if b in AUTO_ORDER])
    if not backends:
        raise TlxError("no TFLite interpreter backend is installed. Install one of:\n"
                       "  pip install 'tlx-edge[runtime]'   # ai-edge-litert\n"
                       "  pip install 'tlx-edge[tflite]'    # tflite-runtime 2.14 (Raspberry Pi OS Bookworm)")
    with open_bundle(config.bundle) as bundle:
        manifest = bundle.manifest
        record = _bundle_record(bundle)
        log(f"Checked {bundle.path.name}: {len(manifest.models)} models, {len(manifest.images)} photos")
        models, photos, sweep = [], None, len(manifest.parts()) > 1 or manifest.parts()[0].backbone is not None
        for part in manifest.parts():
            if photos is None or photos[0] != part.image_size:
                photos = None  # the previous size's pixels go before the next size's are decoded
                photos = (part.image_size, *_photos(bundle, part))
            _, pixels, truth, names = photos
            candidate = _candidate(part, truth) if sweep else None
            for entry in part.models:
                content = bundle.read(entry.file)
                for backend in backends:
                    log(f"{part.run_name + '/' if sweep else ''}{entry.name} on {backend}")
                    models.append(_bench_model(bundle, part, entry, content, backend, pixels, truth, names,
                                               config, log, candidate))
                del content  # before the next model is read: one model in memory at a time
        reference = None if sweep else wilson(int(np.sum(manifest.reference_top1 == truth)), len(truth))
    return DeviceResult(
        tlx=tlx.__version__, date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        machine=machine.current(), load_average=machine.load_average(), emulated=config.emulated,
        bundle=record,
        settings=Settings(threads=tuple(options.threads), runs=options.runs, warmup=options.warmup,
                          backends=tuple(backends), max_drop=options.max_drop,
                          max_drop_on=options.max_drop_on),
        labels=tuple(manifest.labels), n_images=len(truth),
        reference_name=None if sweep else manifest.reference_name,
        reference_accuracy=reference, models=tuple(models),
        peak_rss_mb=_peak_rss_mb(), wall_s=time.perf_counter() - started)


def _candidate(part: Manifest, truth: np.ndarray) -> SweepCandidate:
    return SweepCandidate(backbone=part.backbone, image_size=part.image_size[0],
                          run=RunRecord(name=part.run_name, run_id=part.run_id, model_sha256=part.model_sha256),
                          reference_name=part.reference_name,
                          reference_accuracy=wilson(int(np.sum(part.reference_top1 == truth)), len(truth)))


def _bundle_record(bundle: Bundle) -> BundleRecord:
    """What the result says about the bundle, built before any work: the manifest's schema
    lets through a few things a result may not hold (no model hash, a host machine record the
    result's schema refuses), and those are refused here rather than after the benchmark."""
    manifest = bundle.manifest
    for part in manifest.parts():
        if part.model_sha256 is None:
            raise BundleError(f"{bundle.path}: the manifest names no model hash for {printable(part.run_name)} "
                              f"(run.model_sha256), so no result could say which model it measured. "
                              f"{remake(bundle.path)}")
    try:
        host_machine = parse_machine(manifest.host_machine, f"{bundle.path}: the manifest's host.machine",
                                     advice=remake(bundle.path))
    except ResultError as exc:
        raise BundleError(str(exc)) from None
    sweep = getattr(manifest, "sweep", None)
    return BundleRecord(file=bundle.path.name, sha256=files.sha256_file(bundle.path),
                        run=None if sweep else RunRecord(name=manifest.run_name, run_id=manifest.run_id,
                                                         model_sha256=manifest.model_sha256),
                        created=manifest.created, tlx=manifest.tlx, host_machine=host_machine, sweep=sweep)


def _photos(bundle: Bundle, part: Manifest) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The photos decoded at `part`'s image size (a sweep's bundle: once per size, each size
    freed before the next, so the memory bound of one run's bundle holds)."""
    (height, width), version = part.image_size, part.preprocessing
    images = part.images
    # Filled in place (no list of arrays then a stacked copy): peak RSS is measured here. The
    # manifest's schema bounds this array (MAX_PIXEL_BYTES) and each photo's decoded size.
    pixels = np.empty((len(images), height, width, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        # Decoded from the original bytes with the function the trainer and tlx predict use.
        pixels[i] = load_image(bundle.read(image.file), (height, width), max_pixels=MAX_PHOTO_PIXELS,
                               version=version)
    truth = np.asarray([image.label for image in images], dtype=np.int64)
    return pixels, truth, [image.source or image.file for image in images]


def _bench_model(bundle, part: Manifest, entry, content, backend, pixels, truth, names, config,
                 log: Log, candidate: Optional[SweepCandidate] = None) -> ModelRow:
    from tlx.runtime import Classifier

    options = config.measurement
    source = f"{bundle.path.name}:{entry.file}"
    reference = part.reference_top1
    classifier = Classifier(content, num_threads=options.threads[0], backend=backend, source=source)
    labels = bundle.labels
    if classifier.labels is not None and classifier.labels != labels:
        raise BundleError(f"{source} lists the labels {classifier.labels}, the bundle's manifest {labels}: "
                          "the bundle mixes files of different runs. Make it again with `tlx bundle RUN_DIR`.")
    if classifier.num_classes != len(labels):
        raise BundleError(f"{source} has {classifier.num_classes} outputs, the bundle {len(labels)} labels. "
                          "Make the bundle again with `tlx bundle RUN_DIR`.")
    check_image_size(classifier.input_size, part.image_size, source, "the bundle's manifest",
                     "Make the bundle again with `tlx bundle RUN_DIR`.", error=BundleError)
    scores, failures = evaluate.tflite_scores(classifier, pixels, names)
    predicted = evaluate.top1(scores)
    latency = {}
    for threads in options.threads:
        log(f"Timing {entry.name} on {classifier.backend}, {threads} thread(s)")
        timed = classifier if threads == options.threads[0] else Classifier(
            content, num_threads=threads, backend=backend, source=source)
        latency[threads] = measure.interpreter_latency(timed, pixels[0], options.runs, options.warmup)
        timed.close()  # one interpreter (and its packed weights) alive at a time: peak RSS
    cold_start = None
    if options.cold_start:
        log(f"Cold start of `tlx predict` with {entry.name} on {classifier.backend}")
        with tempfile.TemporaryDirectory(prefix="tlx-bundle-") as scratch:
            # Names of our own, not the members': a photo named like the model must not
            # replace it (the suffix only tells the decoder what to expect).
            model_path = Path(scratch) / "model.tflite"
            model_path.write_bytes(content)
            image = part.images[0].file
            suffix = Path(image).suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,8}", Path(image).suffix) else ""
            image_path = Path(scratch) / f"photo{suffix}"
            image_path.write_bytes(bundle.read(image))
            cold_start = cold_start_of(measure.predict_cold_start(model_path, image_path, classifier.backend))
    return ModelRow(
        name=entry.name, backend=classifier.backend, file=entry.file, size_bytes=entry.size_bytes,
        sha256=sha256_bytes(content),
        accuracy=wilson(int(np.sum(predicted == truth)), len(truth)),
        drop=paired_difference(truth, reference, predicted),
        agreement=wilson(int(np.sum(predicted == reference)), len(truth)),
        host=_against_host(part, entry, classifier, scores, predicted),
        latency=latency, cold_start=cold_start,
        failures=failures_of(failures, MAX_FAILURES),
        candidate=candidate)


def _against_host(manifest: Manifest, entry: ModelEntry, classifier, scores: np.ndarray,
                  predicted) -> Optional[HostComparison]:
    """This machine's outputs against the host's for the same file and backend (or the host
    backend with the same kernels): identical photos, largest difference in quantization
    steps (quantized outputs) or in probability (float outputs)."""
    results = {(r.model, r.backend): r for r in manifest.host_results}
    host = results.get((entry.name, classifier.backend))
    if host is None:
        host = results.get((entry.name, HOST_EQUIVALENT.get(classifier.backend)))
    if host is None:
        return None
    # The schema checked the host's table is (photos, classes), like `scores`.
    diff = np.abs(scores.astype(np.float32) - host.scores)
    per_image = diff.max(axis=1) if diff.size else np.zeros(0, np.float32)
    # A photo that failed here (or on the host) has no difference to measure: it counts as
    # differing, and stays out of the largest difference and the steps.
    ok = np.isfinite(per_image)
    quantization = entry.output_quantization
    identical = int(np.sum(per_image[ok] == 0))
    max_steps = steps = None
    if quantization:
        photo_steps = np.rint(per_image[ok] / np.float32(quantization[0])).astype(np.int64)
        max_steps = int(photo_steps.max()) if len(photo_steps) else 0
        # {steps: photos}: how far the differing photos are from the host's output.
        steps = {int(k): int(v) for k, v in zip(*np.unique(photo_steps, return_counts=True))}
    return HostComparison(
        backend=host.backend, same_backend=host.backend == classifier.backend, n=int(len(per_image)),
        identical=identical, differ=int(len(per_image)) - identical,
        max_abs_diff=float(per_image[ok].max()) if ok.any() else None,
        top1_agreement=wilson(int(np.sum(predicted == host.top1)), len(per_image)),
        max_steps=max_steps, steps=steps)


def _peak_rss_mb() -> Optional[float]:
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --- the result files ----------------------------------------------------------------------

def _pct(p) -> str:
    return f"{100 * p.value:.1f} [{100 * p.low:.1f}, {100 * p.high:.1f}]"


def _vs_host(h: Optional[HostComparison]) -> str:
    if h is None:
        return "- (host did not run it)"
    same = "" if h.same_backend else f" (host {h.backend})"
    if h.max_steps is not None:
        return f"{h.identical}/{h.n} identical, max {h.max_steps} step(s){same}"
    largest = "-" if h.max_abs_diff is None else f"{h.max_abs_diff:.2g}"
    return f"{h.identical}/{h.n} identical, max diff {largest}{same}"


def row_name(m: ModelRow) -> str:
    """The model's name in a table: <run>/<name> in a sweep's result."""
    return f"{m.candidate.run.name}/{m.name}" if m.candidate else m.name


def table_rows(result: DeviceResult) -> tuple[list[str], list[list[str]]]:
    """The per-model table, raw text: escape it for where it goes (tlx.text)."""
    threads = result.settings.threads
    emulated = bool(result.emulated)
    header = ["model", "backend", "top-1 % [95% CI]", "drop pts [95% CI]", "agree Keras %", "vs host"]
    header += [f"p50/p90/p99 ms @{t}t" for t in threads] + ["cold start s", "predict peak RSS MB"]
    rows = []
    for m in result.models:
        row = [row_name(m), m.backend, _pct(m.accuracy), drop_text(m.drop),
               f"{100 * m.agreement.value:.1f}", _vs_host(m.host)]
        for t in threads:
            lat = m.latency.get(t)
            row.append("emulated" if emulated else f"{lat.p50:.2f}/{lat.p90:.2f}/{lat.p99:.2f}" if lat else "-")
        cold = m.cold_start
        row += ["emulated" if emulated and cold else f"{cold.first_output_s:.2f}" if cold else "-",
                f"{cold.peak_rss_mb:.0f}" if cold else "-"]
        rows.append(row)
    return header, rows


def text_table(result: DeviceResult) -> str:
    """The table for the terminal: names from the bundle with control characters escaped."""
    header, rows = table_rows(result)
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def markdown(result: DeviceResult) -> str:
    """The device's .md: every value from the bundle or this machine through markdown_text."""
    md = markdown_text
    header, rows = table_rows(result)
    mach, bundle = result.machine, result.bundle
    versions = ", ".join(f"{md(k)} {md(v)}" for k, v in mach.versions.items())
    load = "-" if result.load_average is None else ", ".join(f"{x:.2f}" for x in result.load_average)
    out = [
        f"# tlx bench on a device: {md(bundle.run.name if bundle.run else bundle.sweep['name'])}",
        "",
        f"- date: {md(result.date)}; tlx {md(result.tlx)}; load average (1, 5, 15 min) {load}",
        f"- machine: {md(mach.summary())}; {versions}",
    ]
    if result.emulated:
        out.append(f"- EMULATED ({md(result.emulated)}): a check of function and accuracy through the "
                   "ARM kernels; its latency is not a device figure and is not shown")
    out += [
        f"- bundle: {md(bundle.file)} (sha256 {bundle.sha256[:12]}), made {md(bundle.created)} by tlx "
        f"{md(bundle.tlx)} on {md(bundle.host_machine.cpu)}",
        f"- {result.n_images} photos; reference: {md(result.reference_name)} "
        f"(top-1 {_pct(result.reference_accuracy)}), computed on the host"
        if result.reference_accuracy else f"- {result.n_images} photos; reference: each candidate's Keras "
                                          "model, computed on the host",
        "- drop: reference minus model, in points, paired 95% interval; vs host: photos whose output "
        "equals the host's exactly for the same file and backend, and the largest difference in output "
        "quantization steps",
        f"- this process's peak RSS {result.peak_rss_mb:.0f} MB; {result.wall_s:.1f} s in all"
        if result.peak_rss_mb is not None else f"- {result.wall_s:.1f} s in all",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    out += ["| " + " | ".join(md(cell) for cell in row) + " |" for row in rows]
    failures = [(row_name(m), m.backend, image, error) for m in result.models for image, error in m.failures]
    if failures:
        out += ["", f"Failed inferences (the first {MAX_FAILURES} per model and backend):"]
        out += [f"- {md(n)} on {md(b)}: {md(image)}: {md(error)}" for n, b, image, error in failures]
    if result.settings.max_drop is not None:
        verdict = "EXCEEDED" if result.max_drop_exceeded else "within"
        out += ["", f"int8 drop limit {gate_text(result.settings.max_drop, result.settings.max_drop_on)}: "
                    f"{verdict}."]
    return "\n".join(out) + "\n"


def write_result(result: DeviceResult, prefix: Path) -> tuple[Path, Path]:
    """PREFIX.json and PREFIX.md, each written atomically. The JSON is first read back
    through the reader's schema (tlx.bundle.result): the device never writes a file that
    `tlx report --device` would refuse."""
    prefix = Path(prefix)
    json_path, md_path = prefix.with_name(prefix.name + ".json"), prefix.with_name(prefix.name + ".md")
    text = result.dumps()
    try:
        parse_result(json.loads(text), f"the result of {result.bundle.file}")
    except ResultError as exc:
        raise BundleError(f"{exc} The bundle's manifest holds values no result may: make the bundle again "
                          "with `tlx bundle RUN_DIR`.") from None
    files.write_text(json_path, text)
    files.write_text(md_path, markdown(result))
    return json_path, md_path
