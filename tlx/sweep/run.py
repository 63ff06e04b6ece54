"""Run a sweep (or this process's shard of it) and collect sweep.json.

Each candidate is an ordinary run folder, made by the library functions of `tlx train`,
`tlx export` and `tlx bench`, step by step: a step whose output is there and belongs to the
run's current model.keras (hashes) is not done again, an interrupted training continues
from its last checkpoint (tlx.trainer.train.resume). So the same command, run again after
Ctrl-C or a crash, picks up where it stopped. A candidate that fails is recorded with its
error (candidates/<run>.json) and the sweep goes on with the next.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from tlx import files
from tlx.errors import BusyError, TlxError
from tlx.progress import Log, Progress
from tlx.run_dir import RunDir, Split
from tlx.sweep import records
from tlx.sweep.pareto import Budgets, ModelPoint, pareto_front, recommend
from tlx.sweep.plan import (Candidate, SweepConfig, check_plan, check_sweep_dir, ensure_plan, ensure_split,
                            plan_candidates, read_plan)
from tlx.sweep.records import DONE, FAILED, PENDING, CandidateRecord, SweepRecord

#: Export formats of every candidate.
FORMATS = ("float32", "int8")


def run_sweep(config: SweepConfig, log: Log, progress: Optional[Progress] = None,
              callbacks: Sequence = ()) -> tuple[list[CandidateRecord], Optional[SweepRecord]]:
    """Train, export and bench this process's candidates; then, without --shard, collect
    sweep.json. Returns the records of the candidates this process ran, and sweep.json's
    content (None for a shard: `--collect` gathers the shards).
    `callbacks`: extra Keras callbacks for every training (tests interrupt with them)."""
    config.validate()
    existed = config.out.exists()
    check_sweep_dir(config.out)
    try:
        # Nothing is written before the split is made: bad input leaves no half-started sweep.
        check_plan(config)
        split = ensure_split(config, log, progress)
        ensure_plan(config)
    except BaseException:
        if not existed and not any(config.out.iterdir()):
            config.out.rmdir()
        raise
    candidates = config.candidates()
    mine = [(k, c) for k, c in enumerate(candidates) if config.shard is None or config.shard.owns(k)]
    if config.shard is not None:
        log(f"Shard {config.shard.index}/{config.shard.count}: {len(mine)} of {len(candidates)} candidates")
    done = []
    for number, (_, candidate) in enumerate(mine, 1):
        # Keras prints downloads and the like on stdout, which belongs to --json's document.
        with contextlib.redirect_stdout(sys.stderr):
            try:
                record = _attempt(config, candidate, split, log, progress, callbacks)
            finally:
                _release_models()
        if record is not None:
            done.append(record)
            log(progress_line(f"[{number}/{len(mine)}]", record))
    if config.shard is not None:
        log(f"Shard {config.shard.index}/{config.shard.count} finished. When every shard has, gather "
            f"them with `tlx sweep {config.out} --collect`.")
        return done, None
    return done, collect(config.out, config.budgets, log)


def _attempt(config: SweepConfig, candidate: Candidate, split: Split, log: Log,
             progress: Optional[Progress], callbacks: Sequence) -> Optional[CandidateRecord]:
    """One candidate, recorded whether it succeeds or fails; None when another process holds it."""
    run = RunDir(config.out / candidate.run)
    run.root.mkdir(exist_ok=True)
    started = time.perf_counter()
    try:
        with files.exclusive(run.root, "`tlx sweep`"):
            finished = _finished_record(config.out, candidate)
            if finished is not None:
                log(f"{candidate.run}: already done (trained, exported and benched; hashes match)")
                return finished
            try:
                models = _candidate(config, candidate, run, split, log, progress, callbacks)
                record = CandidateRecord(candidate.backbone, candidate.image_size, candidate.run, DONE,
                                         models, seconds=round(time.perf_counter() - started, 1))
            except KeyboardInterrupt:
                log(f"\nInterrupted in {candidate.run}. Run the same command again to continue: "
                    "finished candidates are kept, this one resumes from its last epoch.")
                raise
            except Exception as exc:  # any failure of one candidate: record it, go on
                record = CandidateRecord(candidate.backbone, candidate.image_size, candidate.run, FAILED,
                                         error=_error_text(exc),
                                         seconds=round(time.perf_counter() - started, 1))
            records.write_candidate(config.out, record)
            return record
    except BusyError:
        log(f"{candidate.run}: another process is working on it; skipped here.")
        return None


def _release_models() -> None:
    """Forget the finished candidate's Keras models and graphs: one process trains many."""
    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()
    gc.collect()


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    name = "" if isinstance(exc, TlxError) else f"{type(exc).__name__}: "
    return (name + text)[:records.MAX_TEXT]


def _candidate(config: SweepConfig, candidate: Candidate, run: RunDir, split: Split, log: Log,
               progress: Optional[Progress], callbacks: Sequence) -> tuple[records.ModelRecord, ...]:
    """Train (or resume, or keep), export, bench: each only when its output is not current."""
    from tlx.bench import report as bench_report
    from tlx.bench.bench import BenchConfig, run_bench
    from tlx.bench.options import MeasureOptions
    from tlx.export.export import ExportConfig, export_run
    from tlx.trainer.train import resume, train

    log(f"\n==> {candidate.backbone} at {candidate.image_size} px ({run.root})")
    state = training_state(run)
    if state == "finished":
        log("trained already")
    elif state == "interrupted":
        resume(run.root, log=log, callbacks=callbacks, progress=progress)
    else:
        train(config.candidate_training(candidate), log=log, callbacks=callbacks, progress=progress,
              split=split)
    if run.has_current_export():
        log("exported already")
    else:
        export_run(ExportConfig(run_dir=run.root, formats=FORMATS), log=log)
    if run.has_current_bench():
        log("benched already")
    else:
        measurement = MeasureOptions(threads=(records.BENCH_THREADS,), runs=config.bench_runs,
                                 warmup=config.bench_warmup, cold_start=False)
        result = run_bench(BenchConfig(run_dir=run.root, measurement=measurement, include_keras=False),
                           log=log)
        bench_report.write(result, run.bench)
    return records.models_from_bench(run.bench_json)


def training_state(run: RunDir) -> str:
    """"finished" (model.keras, metrics, state.json says so), "interrupted" (a checkpoint to
    resume from) or "none" (train from the start)."""
    from tlx.trainer.checkpoints import CheckpointStore

    if not run.state.is_file():
        return "none"
    store = CheckpointStore(run, log=lambda _: None)
    try:
        store.read()
    except TlxError:
        return "none"
    if store.finished:
        return "finished" if run.model.is_file() and run.metrics.is_file() else "none"
    return "interrupted"


def progress_line(prefix: str, record: CandidateRecord) -> str:
    head = f"{prefix} {record.backbone} {record.image_size} px"
    if record.status != DONE:
        return f"{head}: {record.status.upper()}" + (f": {record.error.splitlines()[0]}" if record.error else "")
    models = " | ".join(f"{m.format} {m.accuracy:.1%} {m.latency_ms:.2f} ms {m.size_bytes / 1e6:.2f} MB"
                        for m in record.models)
    took = f" in {record.seconds:.0f} s" if record.seconds is not None else ""
    return f"{head}: done{took}: {models}"


# -- collect ------------------------------------------------------------------------------

def collect(sweep_dir: Path, budgets: Budgets, log: Log) -> SweepRecord:
    """sweep.json from plan.json and the candidate records: every candidate (done, failed or
    still pending), the Pareto front and the pick under `budgets`; and pareto.png. A done
    record whose run folder no longer holds the measured model counts as pending."""
    from tlx.bench.bench import environment

    sweep_dir = Path(sweep_dir)
    plan = read_plan(sweep_dir)
    candidates = [_collected(sweep_dir, c, log) for c in plan_candidates(plan)]
    points = [ModelPoint(f"{c.run}/{m.format}", m.accuracy, m.latency_ms, m.size_bytes)
              for c in candidates for m in c.models]
    front = pareto_front(points)
    pick, reason = recommend(points, budgets)
    split = RunDir(sweep_dir).read_split()
    record = SweepRecord(
        candidates=tuple(candidates), pareto=tuple(p.id for p in front), budgets=budgets.to_json(),
        recommended=pick.id if pick else None, reason=reason, data_dir=split.data_dir,
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        environment=environment())
    records.write_sweep(sweep_dir / records.SWEEP_JSON, record)
    written = records.read_sweep(sweep_dir / records.SWEEP_JSON)
    from tlx.sweep.chart import CHART, pareto_chart

    if pareto_chart(written, sweep_dir / CHART):
        log(f"Chart: {sweep_dir / CHART}")
    return written


def _read_record(sweep_dir: Path, candidate: Candidate) -> Optional[CandidateRecord]:
    path = sweep_dir / records.CANDIDATES / f"{candidate.run}.json"
    if not path.is_file():
        return None
    record = records.read_candidate(path)
    if (record.backbone, record.image_size) != (candidate.backbone, candidate.image_size):
        raise TlxError(f"{path} describes {record.run}, not {candidate.run}: the file was moved or "
                       "edited. Delete it and run the sweep again.")
    return record


def _is_current(sweep_dir: Path, record: CandidateRecord) -> bool:
    """A done record still describes its run folder: the bench of the current model.keras
    holds the recorded numbers, and the training finished."""
    run = RunDir(sweep_dir / record.run)
    try:
        return (training_state(run) == "finished" and run.has_current_bench()
                and records.models_from_bench(run.bench_json) == record.models)
    except TlxError:
        return False


def _finished_record(sweep_dir: Path, candidate: Candidate) -> Optional[CandidateRecord]:
    """The candidate's done record when everything it names is still there and current."""
    try:
        record = _read_record(sweep_dir, candidate)
    except TlxError:
        return None  # a damaged record: the candidate is redone and the record replaced
    if record is None or record.status != DONE or not _is_current(sweep_dir, record):
        return None
    return record if RunDir(sweep_dir / record.run).has_current_export() else None


def _collected(sweep_dir: Path, candidate: Candidate, log: Log) -> CandidateRecord:
    record = _read_record(sweep_dir, candidate)
    if record is None:
        return CandidateRecord(candidate.backbone, candidate.image_size, candidate.run, PENDING)
    if record.status == DONE and not _is_current(sweep_dir, record):
        log(f"{candidate.run}: its run folder no longer holds the measured model; counted as "
            "pending (run the sweep again to redo it).")
        return CandidateRecord(candidate.backbone, candidate.image_size, candidate.run, PENDING)
    return record
