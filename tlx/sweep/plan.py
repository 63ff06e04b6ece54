"""What a sweep trains: its options, its candidates, the shard of them this process takes, and
plan.json / split.json, written once so that every shard (on any machine) agrees on both."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tlx import files
from tlx.errors import TlxError
from tlx.progress import Log, Progress
from tlx.run_dir import RunDir, Split, require_present
from tlx.sweep import records
from tlx.sweep.pareto import Budgets
from tlx.run_config import Strategy, TrainConfig

#: Largest --image-sizes value (a sweep trains many models; beyond this it is not an edge model).
MAX_IMAGE_SIZE = 1024
MIN_IMAGE_SIZE = 8
#: Options that differ between machines without changing what is trained: shards may differ in
#: them; every other option must be the same in every shard (plan.json).
LOCAL_OPTIONS = ("data_dir", "out", "backbone", "image_size", "test_dir", "cache_dir", "workers",
                 "overwrite")


@dataclass(frozen=True)
class Shard:
    """The `index`-th (1-based) of `count` slices of the candidates: candidate k (0-based, in plan
    order) belongs to slice k % count + 1, so backbones and sizes spread over the slices."""

    index: int = 1
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> "Shard":
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise TlxError(f"--shard {text!r}: write I/N, e.g. --shard 2/4 for the second of 4 slices.") from None
        if count < 1 or not 1 <= index <= count:
            raise TlxError(f"--shard {text}: I must be from 1 to N and N at least 1 (e.g. 1/{max(count, 2)} "
                           f"... {max(count, 2)}/{max(count, 2)}).")
        return cls(index, count)

    def owns(self, position: int) -> bool:
        return position % self.count == self.index - 1


@dataclass(frozen=True)
class Candidate:
    backbone: str
    image_size: int

    @property
    def run(self) -> str:
        return records.run_name(self.backbone, self.image_size)


@dataclass(frozen=True)
class SweepConfig:
    """Every option of `tlx sweep`."""

    #: The folder of class folders (as for `tlx train`).
    data_dir: Path
    #: SWEEP_DIR: receives plan.json, split.json, a run folder per candidate, sweep.json.
    out: Path
    #: Registry keys, in the order candidates are trained.
    backbones: tuple[str, ...]
    #: Input sizes in pixels; every backbone is trained at each.
    image_sizes: tuple[int, ...]
    #: The training options of every candidate (backbone, image_size, data_dir and out are
    #: replaced per candidate).
    training: TrainConfig
    #: This process's slice of the candidates (None: all of them).
    shard: Optional[Shard] = None
    #: Limits the recommended model must meet.
    budgets: Budgets = Budgets()
    #: Timed interpreter runs per model on the host (after the warm-up).
    bench_runs: int = 50
    bench_warmup: int = 5

    def candidates(self) -> list[Candidate]:
        return [Candidate(b, s) for b in self.backbones for s in self.image_sizes]

    def candidate_training(self, candidate: Candidate) -> TrainConfig:
        return dataclasses.replace(self.training, data_dir=self.data_dir, out=self.out / candidate.run,
                                   backbone=candidate.backbone, image_size=candidate.image_size,
                                   overwrite=True)

    def validate(self) -> None:
        from tlx.trainer.backbones import get_backbone, parse_weights

        if not self.backbones:
            raise TlxError("--backbones is empty: name at least one (`tlx backbones` lists them).")
        if not self.image_sizes:
            raise TlxError("--image-sizes is empty: give at least one size, e.g. 96,128,160.")
        for backbone in self.backbones:
            get_backbone(backbone)  # an unknown name's error lists the valid ones
        for option, values in (("--backbones", self.backbones), ("--image-sizes", self.image_sizes)):
            twice = sorted({str(v) for v in values if values.count(v) > 1})
            if twice:
                raise TlxError(f"{option} names {', '.join(twice)} more than once.")
        bad = [s for s in self.image_sizes if not MIN_IMAGE_SIZE <= s <= MAX_IMAGE_SIZE]
        if bad:
            raise TlxError(f"--image-sizes {', '.join(map(str, bad))}: each size must be from "
                           f"{MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} pixels.")
        if self.training.strategy is Strategy.MULTI_WORKER:
            raise TlxError("--strategy multi-worker trains one run on several machines; a sweep spreads "
                           "its candidates over machines with --shard I/N instead.")
        self.candidate_training(self.candidates()[0]).validate()
        weights = parse_weights(self.training.weights)
        if weights not in (None, "imagenet") and not Path(weights).is_file():
            raise TlxError(f"--weights {weights}: no such file. Use imagenet, none or a weights file path.")
        if self.bench_runs < 1 or self.bench_warmup < 0:
            raise TlxError("--bench-runs must be 1 or more and --bench-warmup 0 or more.")


def check_sweep_dir(path: Path) -> Path:
    """SWEEP_DIR is a folder tlx can write (created if missing), checked before any work."""
    return files.require_writable_dir(path, "--out")


# -- plan.json ----------------------------------------------------------------------------

def plan_json(config: SweepConfig) -> dict:
    recipe = {k: v for k, v in config.training.to_json().items() if k not in LOCAL_OPTIONS}
    return {"format": records.FORMAT, "backbones": list(config.backbones),
            "image_sizes": list(config.image_sizes), "training": recipe}


def _write_once(path: Path, obj: dict) -> None:
    """Create `path` with `obj` unless it exists: written whole under a temporary name, then
    linked to its name (a link never replaces a file), so of two shards starting together
    exactly one file lands and the other reads it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(obj, indent=2) + "\n")
        os.chmod(tmp, 0o644)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:
            # A file system without hard links: a rename instead. Two shards may then both
            # rename, but each writes the same content (deterministic from the same options).
            if not path.exists():
                os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_plan(sweep_dir: Path) -> dict:
    """plan.json, checked: backbones (registry-shaped names), sizes, the training options."""
    path = Path(sweep_dir) / records.PLAN
    if not path.is_file():
        raise TlxError(f"{sweep_dir} holds no sweep (no {records.PLAN}). Start one with "
                       "`tlx sweep DATA_DIR --out SWEEP_DIR --backbones ... --image-sizes ...`.")
    obj = records.read_bounded_json(path, records.MAX_CANDIDATE_BYTES, "the sweep's plan")
    try:
        ok = (isinstance(obj, dict) and obj.get("format") == records.FORMAT
              and isinstance(obj.get("training"), dict)
              and isinstance(obj.get("backbones"), list) and isinstance(obj.get("image_sizes"), list)
              and len(obj["backbones"]) * len(obj["image_sizes"]) <= records.MAX_CANDIDATES
              and all(isinstance(b, str) and records.RUN_NAME.match(f"{b}-1") for b in obj["backbones"])
              and all(isinstance(s, int) and not isinstance(s, bool)
                      and MIN_IMAGE_SIZE <= s <= MAX_IMAGE_SIZE for s in obj["image_sizes"]))
    except TypeError:
        ok = False
    if not ok:
        raise TlxError(f"{path} is not a sweep plan tlx wrote (damaged or edited). Start the sweep in "
                       "a new folder.")
    return obj


def plan_candidates(plan: dict) -> list[Candidate]:
    return [Candidate(b, s) for b in plan["backbones"] for s in plan["image_sizes"]]


def check_plan(config: SweepConfig) -> None:
    """When SWEEP_DIR already has a plan.json (another shard's, or this sweep's before an
    interruption): it has the same candidates and training options, else TlxError."""
    if not (config.out / records.PLAN).exists():
        return
    mine, theirs = plan_json(config), read_plan(config.out)
    differ = [f"--{k.replace('_', '-')}" for k in ("backbones", "image_sizes") if theirs.get(k) != mine[k]]
    differ += [f"--{k.replace('_', '-')}" for k in sorted(set(mine["training"]) | set(theirs["training"]))
               if mine["training"].get(k) != theirs["training"].get(k)]
    if differ:
        raise TlxError(f"{config.out} holds a sweep with other options (they differ in: {', '.join(differ)}). "
                       "Every shard and every restart must use the same options: repeat the first "
                       "command's, or choose another --out.")


def ensure_plan(config: SweepConfig) -> None:
    """Write plan.json once; then check the one that landed (another shard's may have won)."""
    _write_once(config.out / records.PLAN, plan_json(config))
    check_plan(config)


# -- split.json ---------------------------------------------------------------------------

def ensure_split(config: SweepConfig, log: Log, progress: Optional[Progress] = None) -> Split:
    """The sweep's one split: read back when it exists, else made once (seeded: the same files
    give the same split on every machine) and written before any candidate trains."""
    from tlx.trainer import data as data_mod

    path = config.out / records.SPLIT
    if not path.is_file():
        t = config.training
        images = data_mod.load_data(
            config.data_dir, image_size=config.image_sizes[0], seed=t.seed,
            validation_fraction=t.validation_fraction, test_fraction=t.test_fraction, test_dir=t.test_dir,
            max_pixels=t.max_pixels, cache_dir=t.cache_dir, workers=t.workers, log=log,
            progress=progress, preprocessing=t.preprocessing)
        _write_once(path, images.split.to_json())
    # Read back: a shard that lost the race uses the winner's file, and every shard re-roots
    # the files under its own DATA_DIR (the folder may be mounted elsewhere on each machine).
    split = RunDir(config.out).read_split(config.data_dir)
    # Photos gone or moved fail here, once, instead of once per candidate.
    require_present(split, "train", "validation", "test")
    log(f"Split ({path}): {len(split.classes)} classes; {len(split.train)} train, "
        f"{len(split.validation)} validation, {len(split.test)} test images, shared by every candidate")
    return split
