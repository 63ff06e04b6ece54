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
from tlx.bench.stats import paired_difference, wilson
from tlx.bundle.archive import Bundle, BundleError, open_bundle
from tlx.drop import check_max_drop
from tlx.bundle.manifest import MAX_PHOTO_PIXELS, Manifest, ModelEntry
from tlx.errors import TlxError
from tlx.progress import Log, silent
from tlx.imaging import check_image_size, load_image

#: What a device result file says it is, so that `tlx report --device` refuses anything else.
KIND = "tlx-device-result"
RESULT_VERSION = 1

#: When the host did not run a backend, the host backend with the same kernels to compare
#: against: tflite-runtime runs int8 on the builtin kernels, as ai-edge-litert does without
#: its default delegate.
HOST_EQUIVALENT = {"tflite-runtime": "litert-builtin", "litert-builtin": "tflite-runtime"}


@dataclass(frozen=True)
class DeviceBenchConfig:
    """What `tlx bench BUNDLE` measures and how."""

    #: A file written by `tlx bundle`.
    bundle: Path
    #: Interpreter thread counts to time.
    threads: tuple[int, ...] = (1, 2)
    #: Timed runs per model, backend and thread count (after the warm-up).
    runs: int = 50
    #: Discarded warm-up runs before timing.
    warmup: int = 5
    #: Backends to run; None: those of litert and tflite-runtime installed here.
    backends: Optional[tuple[str, ...]] = None
    #: Measure `tlx predict` cold start and peak memory in a fresh process.
    cold_start: bool = True
    #: Fail (exit 3) when an int8 model loses more than this many points against Keras.
    max_drop: Optional[float] = None
    #: Set when this "device" is an emulator (e.g. "qemu-aarch64 -cpu cortex-a72"): the result
    #: then checks function and accuracy only, and its latency is never shown as a device figure.
    emulated: Optional[str] = None


def default_prefix(bundle: Path) -> Path:
    """<bundle name without .zip>-<host name>: one result per device, side by side."""
    import platform

    stem = Path(bundle).name.removesuffix(".zip")
    return Path(f"{stem}-{platform.node() or 'device'}")


def bench_bundle(config: DeviceBenchConfig, log: Log = silent) -> dict:
    """Run the device benchmark; returns the result document (see write_result)."""
    from tlx.runtime.backends import AUTO_ORDER, installed_backends, resolve_name

    check_max_drop(config.max_drop)
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
        log(f"Checked {bundle.path.name}: {len(manifest.models)} models, {len(manifest.images)} photos")
        pixels, truth, names = _photos(bundle)
        reference = manifest.reference_top1
        models = []
        for entry in manifest.models:
            content = bundle.read(entry.file)
            for backend in backends:
                log(f"{entry.name} on {backend}")
                models.append(_bench_model(bundle, entry, content, backend, pixels, truth, names,
                                           reference, config, log))
            del content  # before the next model is read: one model in memory at a time
    result = {
        "kind": KIND, "format_version": RESULT_VERSION, "tlx": tlx.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine.current().to_json(), "load_average": machine.load_average(),
        "emulated": config.emulated,
        "bundle": {"file": Path(config.bundle).name, "sha256": files.sha256_file(config.bundle),
                   "run": dict(manifest.run), "created": manifest.created, "tlx": manifest.tlx,
                   "host_machine": manifest.host_machine},
        "settings": {"threads": list(config.threads), "runs": config.runs, "warmup": config.warmup,
                     "backends": backends, "max_drop": config.max_drop},
        "labels": list(manifest.labels),
        "n_images": len(truth),
        "reference": {"name": manifest.reference_name,
                      "accuracy": wilson(int(np.sum(reference == truth)), len(truth)).to_json()},
        "models": models,
        "peak_rss_mb": _peak_rss_mb(),
        "wall_s": time.perf_counter() - started,
    }
    result["max_drop_exceeded"] = config.max_drop is not None and any(
        m["drop"]["points"] > config.max_drop for m in models if m["name"].startswith("int8"))
    return result


def _photos(bundle: Bundle) -> tuple[np.ndarray, np.ndarray, list[str]]:
    (height, width), version = bundle.image_size, bundle.preprocessing
    images = bundle.manifest.images
    # Filled in place (no list of arrays then a stacked copy): peak RSS is measured here. The
    # manifest's schema bounds this array (MAX_PIXEL_BYTES) and each photo's decoded size.
    pixels = np.empty((len(images), height, width, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        # Decoded from the original bytes with the function the trainer and tlx predict use.
        pixels[i] = load_image(bundle.read(image.file), (height, width), max_pixels=MAX_PHOTO_PIXELS,
                               version=version)
    truth = np.asarray([image.label for image in images], dtype=np.int64)
    return pixels, truth, [image.source or image.file for image in images]


def _bench_model(bundle, entry, content, backend, pixels, truth, names, reference, config, log: Log) -> dict:
    from tlx.runtime import Classifier

    source = f"{bundle.path.name}:{entry.file}"
    classifier = Classifier(content, num_threads=config.threads[0], backend=backend, source=source)
    labels = bundle.labels
    if classifier.labels is not None and classifier.labels != labels:
        raise BundleError(f"{source} lists the labels {classifier.labels}, the bundle's manifest {labels}: "
                          "the bundle mixes files of different runs. Make it again with `tlx bundle RUN_DIR`.")
    if classifier.num_classes != len(labels):
        raise BundleError(f"{source} has {classifier.num_classes} outputs, the bundle {len(labels)} labels. "
                          "Make the bundle again with `tlx bundle RUN_DIR`.")
    check_image_size(classifier.input_size, bundle.image_size, source, "the bundle's manifest",
                     "Make the bundle again with `tlx bundle RUN_DIR`.", error=BundleError)
    scores, failures = evaluate.tflite_scores(classifier, pixels, names)
    predicted = evaluate.top1(scores)
    out = {
        "name": entry.name, "backend": classifier.backend, "file": entry.file,
        "size_bytes": entry.size_bytes,
        "accuracy": wilson(int(np.sum(predicted == truth)), len(truth)).to_json(),
        "drop": paired_difference(truth, reference, predicted).to_json(),
        "agreement_reference": wilson(int(np.sum(predicted == reference)), len(truth)).to_json(),
        "host": _against_host(bundle.manifest, entry, classifier, scores, predicted),
        "latency": {},
        "cold_start": None,
        "failures": [{"image": n, "error": e} for n, e in failures],
    }
    for threads in config.threads:
        log(f"Timing {entry.name} on {classifier.backend}, {threads} thread(s)")
        timed = classifier if threads == config.threads[0] else Classifier(
            content, num_threads=threads, backend=backend, source=source)
        out["latency"][str(threads)] = measure.interpreter_latency(timed, pixels[0], config.runs,
                                                                   config.warmup).to_json()
        timed.close()  # one interpreter (and its packed weights) alive at a time: peak RSS
    if config.cold_start:
        log(f"Cold start of `tlx predict` with {entry.name} on {classifier.backend}")
        with tempfile.TemporaryDirectory(prefix="tlx-bundle-") as scratch:
            # Names of our own, not the members': a photo named like the model must not
            # replace it (the suffix only tells the decoder what to expect).
            model_path = Path(scratch) / "model.tflite"
            model_path.write_bytes(content)
            image = bundle.manifest.images[0].file
            suffix = Path(image).suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,8}", Path(image).suffix) else ""
            image_path = Path(scratch) / f"photo{suffix}"
            image_path.write_bytes(bundle.read(image))
            out["cold_start"] = measure.predict_cold_start(model_path, image_path, classifier.backend).to_json()
    return out


def _against_host(manifest: Manifest, entry: ModelEntry, classifier, scores: np.ndarray,
                  predicted) -> Optional[dict]:
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
    out = {"backend": host.backend, "same_backend": host.backend == classifier.backend,
           "n": int(len(per_image)), "identical": int(np.sum(per_image[ok] == 0)),
           "differ": int(len(per_image) - np.sum(per_image[ok] == 0)),
           "max_abs_diff": float(per_image[ok].max()) if ok.any() else None,
           "top1_agreement": wilson(int(np.sum(predicted == host.top1)),
                                    len(per_image)).to_json(),
           "max_steps": None, "steps": None}
    if quantization:
        steps = np.rint(per_image[ok] / np.float32(quantization[0])).astype(np.int64)
        out["max_steps"] = int(steps.max()) if len(steps) else 0
        # {steps: photos}: how far the differing photos are from the host's output.
        out["steps"] = {str(k): int(v) for k, v in zip(*np.unique(steps, return_counts=True))}
    return out


def _peak_rss_mb() -> Optional[float]:
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --- the result files ----------------------------------------------------------------------

def _pct(p: dict) -> str:
    return f"{100 * p['value']:.1f} [{100 * p['ci95'][0]:.1f}, {100 * p['ci95'][1]:.1f}]"


def _drop(d: dict) -> str:
    interval = (f" [{d['ci95'][0]:+.1f}, {d['ci95'][1]:+.1f}]" if d.get("ci95")
                else " (no photo changed correctness)")
    return f"{d['points']:+.1f}{interval}"


def _vs_host(h: Optional[dict]) -> str:
    if h is None:
        return "- (host did not run it)"
    same = "" if h["same_backend"] else f" (host {h['backend']})"
    if h["max_steps"] is not None:
        return f"{h['identical']}/{h['n']} identical, max {h['max_steps']} step(s){same}"
    largest = "-" if h["max_abs_diff"] is None else f"{h['max_abs_diff']:.2g}"
    return f"{h['identical']}/{h['n']} identical, max diff {largest}{same}"


def table_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    threads = result["settings"]["threads"]
    emulated = bool(result.get("emulated"))
    header = ["model", "backend", "top-1 % [95% CI]", "drop pts [95% CI]", "agree Keras %", "vs host"]
    header += [f"p50/p90/p99 ms @{t}t" for t in threads] + ["cold start s", "predict peak RSS MB"]
    rows = []
    for m in result["models"]:
        row = [m["name"], m["backend"], _pct(m["accuracy"]), _drop(m["drop"]),
               f"{100 * m['agreement_reference']['value']:.1f}", _vs_host(m["host"])]
        for t in threads:
            lat = m["latency"].get(str(t))
            row.append("emulated" if emulated else
                       f"{lat['p50_ms']:.2f}/{lat['p90_ms']:.2f}/{lat['p99_ms']:.2f}" if lat else "-")
        cold = m["cold_start"]
        row += ["emulated" if emulated and cold else f"{cold['first_output_s']:.2f}" if cold else "-",
                f"{cold['peak_rss_mb']:.0f}" if cold else "-"]
        rows.append(row)
    return header, rows


def text_table(result: dict) -> str:
    header, rows = table_rows(result)
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def markdown(result: dict) -> str:
    header, rows = table_rows(result)
    mach, bundle = result["machine"], result["bundle"]
    versions = ", ".join(f"{k} {v}" for k, v in mach["versions"].items())
    out = [
        f"# tlx bench on a device: {bundle['run']['name']}",
        "",
        f"- date: {result['date']}; tlx {result['tlx']}; load average {result.get('load_average')}",
        f"- machine: {mach['cpu']} ({mach['architecture']}, {mach['cores']} cores; int8-relevant features: "
        f"{', '.join(mach['cpu_features']) or 'none'}); {mach['os']}; Python {mach['python']}; {versions}",
    ]
    if result.get("emulated"):
        out.append(f"- EMULATED ({result['emulated']}): a check of function and accuracy through the "
                   "ARM kernels; its latency is not a device figure and is not shown")
    out += [
        f"- bundle: {bundle['file']} (sha256 {bundle['sha256'][:12]}), made {bundle['created']} by tlx "
        f"{bundle['tlx']} on {bundle['host_machine']['cpu']}",
        f"- {result['n_images']} photos; reference: {result['reference']['name']} "
        f"(top-1 {_pct(result['reference']['accuracy'])}), computed on the host",
        "- drop: reference minus model, in points, paired 95% interval; vs host: photos whose output "
        "equals the host's exactly for the same file and backend, and the largest difference in output "
        "quantization steps",
        f"- this process's peak RSS {result['peak_rss_mb']:.0f} MB; {result['wall_s']:.1f} s in all"
        if result.get("peak_rss_mb") is not None else f"- {result['wall_s']:.1f} s in all",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    failures = [(m["name"], m["backend"], f) for m in result["models"] for f in m["failures"]]
    if failures:
        out += ["", "Failed inferences:"] + [f"- {n} on {b}: {f['image']}: {f['error']}" for n, b, f in failures]
    if result["settings"]["max_drop"] is not None:
        verdict = "EXCEEDED" if result["max_drop_exceeded"] else "within"
        out += ["", f"int8 drop limit {result['settings']['max_drop']:g} points: {verdict}."]
    return "\n".join(out) + "\n"


def write_result(result: dict, prefix: Path) -> tuple[Path, Path]:
    """PREFIX.json and PREFIX.md, each written atomically."""
    prefix = Path(prefix)
    json_path, md_path = prefix.with_name(prefix.name + ".json"), prefix.with_name(prefix.name + ".md")
    files.write_json(json_path, result)
    files.write_text(md_path, markdown(result))
    return json_path, md_path


def read_result(path: Path) -> dict:
    """A device result file, checked to be one (for `tlx report --device`)."""
    try:
        result = files.read_json(path)
    except FileNotFoundError:
        raise TlxError(f"{path}: no such file. Pass the .json that `tlx bench BUNDLE` wrote.") from None
    except (OSError, ValueError) as exc:
        raise TlxError(f"{path} is not a device result ({exc}). Pass the .json that `tlx bench BUNDLE` "
                       "wrote.") from None
    if not isinstance(result, dict) or result.get("kind") != KIND:
        raise TlxError(f"{path} is not a device result. Pass the .json that `tlx bench BUNDLE` wrote.")
    if not isinstance(result.get("format_version"), int) or result["format_version"] > RESULT_VERSION:
        raise TlxError(f"{path} was written by a newer tlx ({result.get('tlx')}); upgrade tlx here.")
    return result
