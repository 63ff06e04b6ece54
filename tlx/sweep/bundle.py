"""`tlx bundle SWEEP_DIR`: every finished candidate's exported models in one bench bundle,
with the test photos they share stored once (the sweep tests every candidate on one split).

The manifest is the bundle's one schema (tlx.bundle.manifest) in its sweep form: the labels
and photos once, then per candidate the same fields a single run's bundle has (run, image
size, models under models/<run>/, the Keras reference, the host's results). Candidates are
ordered by image size, so the device decodes each size's photos once.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Callable, Optional

import tlx
from tlx import files, machine
from tlx.bundle.make import (BundleSummary, check_out, check_photo_count, photo_members, run_part, shared_photos,
                             stratified_subset, write_bundle)
from tlx.bundle.manifest import FORMAT, SWEEP_VERSION
from tlx.errors import MissingDependencyError, TlxError
from tlx.run_dir import RunDir, require_present, require_same_photos
from tlx.sweep.records import DONE, SPLIT, SWEEP_JSON, read_sweep


def is_sweep_dir(path: Path) -> bool:
    return (Path(path) / SWEEP_JSON).is_file()


def make_sweep_bundle(sweep_dir: Path, out: Optional[Path], max_images: Optional[int] = None, seed: int = 0,
                      data_dir: Optional[Path] = None,
                      log: Callable[[str], None] = lambda message: None) -> BundleSummary:
    from tlx.bench.bench import exported_models
    from tlx.bench.evaluate import tensorflow_available
    from tlx.runtime.backends import installed_backends

    sweep_dir = Path(sweep_dir)
    out = Path(out) if out is not None else Path(f"{sweep_dir.resolve().name}-bundle.zip")
    check_out(out)
    record = read_sweep(sweep_dir / SWEEP_JSON)
    done = sorted((c for c in record.candidates if c.status == DONE), key=lambda c: c.image_size)
    if not done:
        raise TlxError(f"No candidate of {sweep_dir} finished: nothing to bundle. Run `tlx sweep` to the end.")
    split = RunDir(sweep_dir).read_split(data_dir)
    if not split.test:
        raise TlxError(f"The sweep's test split ({sweep_dir / SPLIT}) is empty: nothing to bundle.")
    require_present(split, "test")
    if not tensorflow_available():
        raise MissingDependencyError("`tlx bundle` (the Keras reference is computed on the host)", "train")
    items = stratified_subset(split.test, max_images, seed)
    require_same_photos(split, [path for path, _ in items], log)
    host_backends = installed_backends()
    labels = list(split.classes)
    # Before the work: the manifest holds every candidate's scores, the device one size's photos.
    exported = sum(len(exported_models(RunDir(sweep_dir / c.run))) for c in done)
    check_photo_count(len(items), (done[-1].image_size, done[-1].image_size),
                      scores_per_photo=len(labels) * (exported * len(host_backends) + len(done)))
    parts, models, shared = [], {}, None
    for candidate in done:
        run = RunDir(sweep_dir / candidate.run)
        if run.read_labels() != labels:
            raise TlxError(f"{run.root} lists other classes than the sweep's split: it is not this sweep's "
                           "candidate. Run the sweep again (`tlx sweep`).")
        log(f"Candidate {candidate.run}")
        part, candidate_models, images = run_part(run, items, (candidate.image_size, candidate.image_size),
                                                  host_backends, log, folder=candidate.run)
        if shared is None:
            shared = images
        elif list(images.paths) != list(shared.paths) or part["preprocessing"] != parts[0]["preprocessing"]:
            raise TlxError(f"{candidate.run} reads the test photos differently from {done[0].run} (another "
                           "preprocessing version, or a photo only one could decode): its photos would "
                           "not be shared. Bundle the runs one by one with `tlx bundle RUN_DIR`.")
        parts.append({"backbone": candidate.backbone, **part})
        models.update(candidate_models)
        del images  # the pixels of this size; the next candidate decodes its own
    manifest = {
        "format": FORMAT, "format_version": SWEEP_VERSION, "tlx": tlx.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "sweep": {"name": sweep_dir.resolve().name, "split_sha256": files.sha256_file(sweep_dir / SPLIT)},
        **shared_photos(labels, shared, split.data_dir),
        "preprocessing": parts[0].pop("preprocessing"),
        "candidates": [{k: v for k, v in p.items() if k != "preprocessing"} for p in parts],
        "host": {"machine": machine.current().to_json()},
    }
    photos = photo_members(shared)
    write_bundle(out, manifest, labels, models, photos)
    names = tuple(f"{p['run']['name']}/{m['name']}" for p in parts for m in p["models"])
    return BundleSummary(out, out.stat().st_size, names, len(photos), shared.skipped, tuple(host_backends))
