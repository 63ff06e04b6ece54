"""Write classified frames back as a video with the top label, its score and the FPS drawn.

OpenCV (the `camera` extra) encodes; the file appears under its name only when it is
complete (written beside it and renamed), and holds every frame classified before a stop,
an error or Ctrl-C.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from tlx.errors import TlxError
from tlx.files import atomic_path
from tlx.runtime.sources import import_cv2

#: Output suffix -> FourCC of a codec every opencv-python wheel's FFmpeg encodes.
CODECS = {".mp4": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}
#: Frame rate written when the source announces none.
DEFAULT_FPS = 10.0


def check_output(path: str | os.PathLike) -> Path:
    """`path` if its suffix is one we can write, else TlxError listing the suffixes."""
    path = Path(path)
    if path.suffix.lower() not in CODECS:
        raise TlxError(f"{path}: cannot write video with suffix {path.suffix or '(none)'!r}; "
                       f"use one of {', '.join(CODECS)}")
    if path.is_dir():
        raise TlxError(f"{path}: is a directory")
    return path


def _ascii(text: str) -> str:
    # OpenCV's built-in fonts have ASCII glyphs only.
    return text.encode("ascii", "replace").decode("ascii")


def draw(frame_rgb: np.ndarray, lines: list[str]) -> np.ndarray:
    """A BGR copy of the frame (RGB, RGBA or grey, as classify_stream takes them) with
    `lines` in white on black boxes, top left."""
    cv2 = import_cv2()
    if frame_rgb.ndim == 3 and frame_rgb.shape[2] == 1:
        frame_rgb = frame_rgb[:, :, 0]
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
    """Context manager: `write(result)` per classified frame. On exit the video is closed
    and renamed to `path` if it got at least one frame; otherwise nothing is left."""

    def __init__(self, path: str | os.PathLike, fps: float | None):
        self.path = check_output(path)
        self.fps = fps if fps and fps > 0 else DEFAULT_FPS
        self.frames = 0
        self._cv2 = import_cv2()
        self._stack = ExitStack()
        self._tmp: Path | None = None
        self._writer = None
        self._size: tuple[int, int] | None = None

    def __enter__(self) -> "AnnotatedVideo":
        self._tmp = self._stack.enter_context(atomic_path(self.path, suffix=self.path.suffix))
        return self

    def write(self, result) -> None:
        frame = result.frame
        if frame is None:
            raise TlxError("the stream kept no frames to annotate (keep_frames=False)")
        height, width = frame.shape[:2]
        if self._writer is None:
            self._size = (width, height)
            fourcc = self._cv2.VideoWriter_fourcc(*CODECS[self.path.suffix.lower()])
            self._writer = self._cv2.VideoWriter(str(self._tmp), fourcc, float(self.fps), self._size)
            if not self._writer.isOpened():
                raise TlxError(f"{self.path}: OpenCV cannot write this video")
        elif (width, height) != self._size:
            frame = self._cv2.resize(frame, self._size, interpolation=self._cv2.INTER_AREA)
        self._writer.write(draw(frame, caption(result)))
        self.frames += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._writer is not None:
            self._writer.release()
        if exc_type is None and self.frames == 0:
            exc_type, exc = TlxError, TlxError("no frames")  # nothing to keep: drop the temp file
        self._stack.__exit__(exc_type, exc, tb)
