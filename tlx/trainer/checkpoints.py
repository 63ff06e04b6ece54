"""Checkpoints of a training run, so that `tlx train --resume` continues after Ctrl-C, a
crash, a full disk or a damaged file.

After every epoch the model (with its optimizer state) goes to RUN/checkpoints, then
checkpoints/state.json is rewritten to list the complete checkpoints, newest last, each with
its size, SHA-256, epoch and the history up to it. Both writes are atomic and the state is
written after the file it names, so a crash between the two leaves the previous pair intact.

- The last two checkpoints are kept: one damaged file still leaves something to resume from.
- A checkpoint is trusted only after its size and hash match state.json and Keras loads it;
  otherwise the previous one is used, with a message. When none is usable the error names
  each damaged file.
- Ctrl-C during a save is held until the checkpoint and state.json are both written: what the
  interrupted run reports as saved is what state.json says.
- Left-overs of a killed save (`.save-*` folders, temp files) are removed on the next start.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from tlx import files
from tlx.errors import TlxError, first_line
from tlx.progress import Log
from tlx.run_dir import RunDir


#: How many complete checkpoints stay on disk.
KEEP = 2
#: Prefix of the private folder a model is saved into before it is moved in place.
STAGING_PREFIX = ".save-"


@dataclass(frozen=True)
class Checkpoint:
    """One complete checkpoint, as listed in state.json."""

    #: File name inside RUN/checkpoints.
    file: str
    #: "full": the whole classifier; "head": the head trained on cached features (phase 1).
    kind: str
    #: The phase the last finished epoch belongs to (1 or 2).
    phase: int
    #: Epochs finished when it was saved (both phases counted).
    epochs_done: int
    #: Size and SHA-256 of the file; None for checkpoints of older tlx versions.
    bytes: Optional[int] = None
    sha256: Optional[str] = None
    #: The run's history up to this epoch (history.json's content).
    history: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: dict) -> "Checkpoint":
        return cls(file=str(obj["file"]), kind=str(obj["kind"]), phase=int(obj["phase"]),
                   epochs_done=int(obj["epochs_done"]),
                   bytes=None if obj.get("bytes") is None else int(obj["bytes"]),
                   sha256=obj.get("sha256"), history=dict(obj.get("history") or {}))


def save_model(model, path: Path) -> None:
    """model.save needs a name ending in .keras, so save into a private temp folder
    beside `path`, then move it in atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=path.parent)
    try:
        staged = Path(tmpdir) / path.name
        model.save(staged)
        with files.atomic_path(path) as tmp:
            os.replace(staged, tmp)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def remove_leftovers(folder: Path) -> list[str]:
    """Staging folders and temp files that a killed save (SIGKILL skips every cleanup) left in
    `folder`. Returns their names."""
    removed = []
    if not folder.is_dir():
        return removed
    for path in sorted(folder.iterdir()):
        if path.name.startswith(STAGING_PREFIX) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.name.startswith(".") and path.name.endswith(".tmp") and path.is_file():
            path.unlink(missing_ok=True)
        else:
            continue
        removed.append(path.name)
    return removed


@contextmanager
def hold_interrupts() -> Iterator[None]:
    """Ctrl-C inside the block is raised when the block ends, not in the middle of it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt


class CheckpointStore:
    """The checkpoints of one run: save after an epoch, pick a usable one to resume from."""

    def __init__(self, run: RunDir, log: Log):
        self.run = run
        self.log = log
        self.folder = run.checkpoints
        self.entries: list[Checkpoint] = []
        self.finished = False

    @property
    def latest(self) -> Optional[Checkpoint]:
        return self.entries[-1] if self.entries else None

    def clean(self) -> None:
        """Remove what killed saves left behind (here and beside model.keras)."""
        removed = remove_leftovers(self.folder) + remove_leftovers(self.run.root)
        if removed:
            self.log(f"Removed {len(removed)} left-over(s) of an interrupted save: {', '.join(removed)}")

    # -- reading -------------------------------------------------------------

    def read(self) -> None:
        """Load state.json; TlxError naming it when it is missing or damaged."""
        path = self.run.state
        if not path.is_file():
            raise TlxError(f"{self.run.root} has no checkpoint to resume from (no epoch finished yet): "
                           f"start it again with `tlx train ... --out {self.run.root} --overwrite`.")
        try:
            obj = files.read_json(path)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            if "checkpoints" in obj:
                entries = [Checkpoint.from_json(item) for item in obj["checkpoints"]]
            else:  # state.json of tlx before two checkpoints were kept: one, without a hash
                entries = [Checkpoint(file=obj["checkpoint"], kind=obj["model"], phase=obj["phase"],
                                      epochs_done=obj["epochs_done"], history=obj.get("history") or {})]
            if not entries:
                raise ValueError("it lists no checkpoint")
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            reason = f"no {reason!r}" if isinstance(exc, KeyError) else reason
            raise TlxError(f"{path} is damaged ({reason}), so the run cannot be resumed. Start it "
                           f"again with `tlx train ... --out {self.run.root} --overwrite`.") from None
        self.entries = entries
        self.finished = bool(obj.get("finished"))

    def restore(self):
        """(checkpoint, loaded Keras model) of the newest usable checkpoint; falls back to the
        previous one with a message. Call inside the training strategy's scope."""
        import keras

        damaged: list[str] = []
        for index in range(len(self.entries) - 1, -1, -1):
            entry = self.entries[index]
            path = self.folder / entry.file
            problem = self._problem(entry, path)
            model = None
            if problem is None:
                try:
                    model = keras.models.load_model(path)
                except Exception as exc:  # any failure to load means: do not trust it
                    problem = f"Keras cannot load it: {first_line(exc, 200)}"
            if problem is None:
                if damaged:
                    self.log(f"Warning: {'; '.join(damaged)}. Resuming from the previous checkpoint, "
                             f"{entry.file} (epoch {entry.epochs_done}), instead.")
                # Forget the unusable newer ones: the next save replaces them.
                self.entries = self.entries[:index + 1]
                return entry, model
            damaged.append(f"{path} is damaged ({problem})")
        raise TlxError("No usable checkpoint is left: " + "; ".join(damaged) + ". Start the run again "
                       f"with `tlx train ... --out {self.run.root} --overwrite`.")

    @staticmethod
    def _problem(entry: Checkpoint, path: Path) -> Optional[str]:
        if not path.is_file():
            return "the file is missing"
        size = path.stat().st_size
        if entry.bytes is not None and size != entry.bytes:
            return f"{size} bytes, state.json says {entry.bytes}"
        if entry.sha256 is not None and files.sha256_file(path) != entry.sha256:
            return "its SHA-256 differs from the one in state.json"
        return None

    # -- writing -------------------------------------------------------------

    def save(self, model, kind: str, phase: int, epochs_done: int, history: dict) -> Checkpoint:
        """Save the model after an epoch, then state.json; keep the last KEEP checkpoints."""
        name = f"{kind}_epoch{epochs_done:03d}.keras"
        path = self.folder / name
        with hold_interrupts():
            try:
                save_model(model, path)
                entry = Checkpoint(file=name, kind=kind, phase=phase, epochs_done=epochs_done,
                                   bytes=path.stat().st_size, sha256=files.sha256_file(path),
                                   history=json.loads(json.dumps(history)))
                entries = [e for e in self.entries if e.file != name][-(KEEP - 1):] + [entry]
                self._write_state(entries)
            except OSError as exc:
                kept = (f"the checkpoint of epoch {self.latest.epochs_done} is intact"
                        if self.latest else "no earlier checkpoint exists")
                raise TlxError(f"Could not save the checkpoint of epoch {epochs_done} in {self.folder} "
                               f"({exc.strerror or exc}); {kept}. Free some space, then continue with "
                               f"`tlx train --resume {self.run.root}`.") from None
            self.entries = entries
            self._remove_unlisted()
        return entry

    def mark_finished(self) -> None:
        self.finished = True
        self._write_state(self.entries)

    def _write_state(self, entries: list[Checkpoint]) -> None:
        files.write_json(self.run.state, {"finished": self.finished,
                                          "checkpoints": [asdict(e) for e in entries]})

    def _remove_unlisted(self) -> None:
        keep = {e.file for e in self.entries}
        for path in self.folder.glob("*.keras"):
            if path.name not in keep:
                path.unlink(missing_ok=True)
