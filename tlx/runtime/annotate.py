"""Write classified frames back as a video with the top label, its score and the FPS drawn.

OpenCV (the `camera` extra) encodes. The output is checked before any work (`check_output`:
a suffix we can write, a folder that exists and is writable, not an existing file unless
overwriting is asked for, never one of the inputs). The video is written beside it under a
temporary name and takes its name only once it is complete and verified: it opens and holds
every frame written (OpenCV's writer reports no error, so a full disk shows only here). It
holds every frame classified before a stop, a source error or Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import Iterable

import numpy as np

from tlx import interrupts
from tlx.errors import TlxError
from tlx.files import atomic_path, require_writable_dir
from tlx.runtime.sources import import_cv2, is_url

#: Output suffix -> FourCC of a codec every opencv-python wheel's FFmpeg encodes.
CODECS = {".mp4": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}
#: Frame rate written when the source announces none.
DEFAULT_FPS = 10.0


def check_output(path: str | os.PathLike, inputs: Iterable = (), overwrite: bool = False) -> Path:
    """`path` if a video can be written there without destroying anything, else TlxError:
    a suffix we can write, not a folder, its folder exists and is writable, no existing file
    unless `overwrite`, and not any of `inputs` (the same file, also through a symbolic or
    hard link; URLs and camera indices are skipped)."""
    path = Path(path)
    if path.suffix.lower() not in CODECS:
        raise TlxError(f"{path}: cannot write video with suffix {path.suffix or '(none)'!r}; "
                       f"use one of {', '.join(CODECS)}")
    if path.is_dir():
        raise TlxError(f"{path}: is a directory; give a file name such as {path / 'annotated.mp4'}")
    for source in inputs:
        if _same_file(path, source):
            raise TlxError(f"{path}: is the input video {source}; writing it would destroy what is "
                           "being read. Choose another output name.")
    folder = path.parent
    if not folder.is_dir():
        raise TlxError(f"{path}: the folder {folder} does not exist; create it first" if not folder.exists()
                       else f"{path}: {folder} is not a folder")
    require_writable_dir(folder, f"{path}: the folder")
    if os.path.lexists(path) and not overwrite:
        raise TlxError(f"{path}: already exists. Give another name, or --overwrite to replace it "
                       "(it is replaced only once the new video is complete).")
    return path


def _same_file(path: Path, source) -> bool:
    if not isinstance(source, (str, os.PathLike)) or is_url(str(source)):
        return False
    if os.path.realpath(path) == os.path.realpath(source):
        return True
    try:
        mine, theirs = os.stat(path), os.stat(source)
    except OSError:  # one of them does not exist (yet): not the same file
        return False
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


def verify_video(path: str | os.PathLike, frames: int) -> str | None:
    """None if the video at `path` opens, its container counts `frames` frames and the last
    one decodes; else what is wrong. Constant time: it does not decode the whole video."""
    cv2 = import_cv2()
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not capture.isOpened():
            return "the finished file does not open as a video"
        count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
        if count != frames:
            return f"the finished file holds {max(int(count), 0)} of the {frames} frames written"
        capture.set(cv2.CAP_PROP_POS_FRAMES, frames - 1)
        ok, _ = capture.read()
        return None if ok else f"frame {frames - 1} of the finished file does not decode"
    finally:
        capture.release()


def _ascii(text: str) -> str:
    # OpenCV's built-in fonts have ASCII glyphs only.
    return text.encode("ascii", "replace").decode("ascii")


def draw(frame_rgb: np.ndarray, lines: list[str]) -> np.ndarray:
    """A BGR copy of the frame (RGB, RGBA or grey, as classify_stream takes them) with
    `lines` in white on black boxes, top left."""
    cv2 = import_cv2()
    if frame_rgb.ndim == 3 and frame_rgb.shape[2] == 1:
        frame_rgb = frame_rgb[:, :, 0]
    if frame_rgb.ndim == 3 and frame_rgb.shape[2] == 3 and frame_rgb.strides[2] < 0:
        # OpenCV's own BGR frame, handed on as its reversed view (tlx.runtime.sources): the
        # BGR memory is right there; draw on a copy, the caller's frame stays as it was.
        bgr = np.array(frame_rgb[..., ::-1])
    else:
        code = {2: cv2.COLOR_GRAY2BGR, 3: cv2.COLOR_RGB2BGR, 4: cv2.COLOR_RGBA2BGR}[
            frame_rgb.shape[2] if frame_rgb.ndim == 3 else 2]
        bgr = cv2.cvtColor(frame_rgb, code)
    height = bgr.shape[0]
    scale = max(0.4, height / 800)
    thickness = max(1, round(scale * 2))
    pad = max(2, round(6 * scale))
    y = 0
    for line in lines:
        line = _ascii(line)
        (width, text_height), baseline = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top, y = y, y + text_height + baseline + 2 * pad
        cv2.rectangle(bgr, (0, top), (width + 2 * pad, y), (0, 0, 0), -1)
        cv2.putText(bgr, line, (pad, y - baseline - pad), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), thickness, cv2.LINE_AA)
    return bgr


def caption(result) -> list[str]:
    """The lines drawn for a FrameResult: the top class and score, then the FPS."""
    top = result.predictions[0]
    return [f"{top.name} {top.score:.2f}", f"{result.fps:.1f} FPS"]


class AnnotatedVideo:
    """Context manager: `write(result)` per classified frame. On a normal exit the video is
    closed, verified and renamed to `path` (TlxError if it does not verify: a full disk); on
    an exception, or without frames, nothing is left behind. The temp file is created and
    removed with Ctrl-C and SIGTERM held (tlx.interrupts.deferred), so neither leaves it."""

    def __init__(self, path: str | os.PathLike, fps: float | None, overwrite: bool = False):
        self.path = check_output(path, overwrite=overwrite)
        self.fps = fps if fps and fps > 0 else DEFAULT_FPS
        self.overwrite = overwrite
        self.frames = 0
        self._cv2 = import_cv2()
        self._stack = ExitStack()
        self._tmp: Path | None = None
        self._writer = None
        self._size: tuple[int, int] | None = None

    def __enter__(self) -> "AnnotatedVideo":
        return self

    def _open(self, size: tuple[int, int]) -> None:
        with interrupts.deferred():  # the temp file and its removal on exit are set up together
            self._tmp = self._stack.enter_context(atomic_path(self.path, suffix=self.path.suffix))
        self._size = size
        fourcc = self._cv2.VideoWriter_fourcc(*CODECS[self.path.suffix.lower()])
        self._writer = self._cv2.VideoWriter(str(self._tmp), fourcc, float(self.fps), size)
        if not self._writer.isOpened():
            raise TlxError(f"{self.path}: OpenCV cannot write this video")

    def write(self, result) -> None:
        frame = result.frame
        if frame is None:
            raise TlxError("the stream kept no frames to annotate (keep_frames=False)")
        height, width = frame.shape[:2]
        if self._tmp is None:
            self._open((width, height))
        elif (width, height) != self._size:
            frame = self._cv2.resize(frame, self._size, interpolation=self._cv2.INTER_AREA)
        self._writer.write(draw(frame, caption(result)))
        self.frames += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        with interrupts.deferred():
            if self._writer is not None:
                self._writer.release()
            if self._tmp is None:
                return
            failure = exc if exc_type is not None else self._check_finished()
            if failure is None:
                try:
                    self._stack.__exit__(None, None, None)  # the rename
                except OSError as error:
                    raise TlxError(f"{self.path}: cannot rename the finished video into place "
                                   f"({error.strerror or error})") from None
                return
            self._stack.__exit__(type(failure), failure, None)  # removes the temp file
            if exc_type is None and self.frames:
                raise failure

    def _check_finished(self) -> TlxError | None:
        if self.frames == 0:
            return TlxError("no frames")  # nothing to keep: only the temp file to remove
        problem = verify_video(self._tmp, self.frames)
        if problem is not None:
            return TlxError(f"{self.path}: writing the annotated video failed: {problem}"
                            f"{_disk_hint(self._tmp)}. Nothing was written under that name (a file "
                            "already there is unchanged).")
        if not self.overwrite and os.path.lexists(self.path):
            return TlxError(f"{self.path}: appeared while the video was being written; not "
                            "replaced (--overwrite replaces it).")
        return None


def _disk_hint(path: Path) -> str:
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return ""
    return f" (the disk is full: {free // 1024} KiB free)" if free < (1 << 20) else ""
