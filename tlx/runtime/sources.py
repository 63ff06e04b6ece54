"""Frame sources for live classification: cameras, video files, stream URLs, any iterable.

Every source gives uint8 RGB frames (height, width, 3) through one small interface,
`FrameSource.read()`, so the stream loop (tlx.runtime.stream) never knows where frames
come from and tests can inject a source where CI has no camera. Kinds are a dict registry
(`SOURCES`); `open_source` picks one from what the user gave.

OpenCV (the `camera` extra, opencv-python-headless) reads USB cameras through V4L2, video
files and rtsp/http URLs; Picamera2 (Raspberry Pi OS's python3-picamera2) reads the Pi
camera module. Both are imported only when such a source is opened: the runtime stays
numpy + pillow + an interpreter.
"""

from __future__ import annotations

import glob
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from tlx.errors import MissingDependencyError, TlxError
from tlx.imaging import REDUCE_GAP

#: File suffixes read as videos (lower case).
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov"})
#: URL schemes read as network streams.
URL_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")
#: `--camera` without a value: the Pi camera module when Picamera2 sees one, else camera 0.
CAMERA_AUTO = "auto"
#: Names that select the Pi camera module through Picamera2.
PICAMERA_NAMES = frozenset({"picamera2", "pi"})

#: How long a network stream may take to open, or to deliver the next frame.
URL_TIMEOUT_MS = 10_000

#: Cameras are asked for frames this many times the model's input in each direction: the
#: least that preprocessing version 2 reduces from, so the CPU never copies or resizes more
#: pixels than the model needs.
CAMERA_SIZE_FACTOR = REDUCE_GAP
#: The frame shape asked of a camera, width:height (what cameras give by default; the model's
#: square input is a resize of it, as a 640x480 frame was).
CAMERA_ASPECT = (4, 3)
#: Picamera2 frame widths are multiples of this (libcamera's alignment for RGB output).
PICAMERA_WIDTH_ALIGN = 32
#: Picamera2's frame size when none is asked for (classify_stream asks for the model's).
PICAMERA_DEFAULT_SIZE = (640, 480)
#: Frame sizes USB cameras commonly offer, tried in order of area when the camera does not
#: give the size asked for (OpenCV cannot list a camera's modes).
COMMON_CAMERA_MODES = ((320, 240), (352, 288), (424, 240), (640, 360), (640, 480), (800, 448),
                       (800, 600), (848, 480), (960, 540), (1024, 576), (1024, 768), (1280, 720),
                       (1280, 960), (1600, 1200), (1920, 1080), (2560, 1440), (3840, 2160))


@dataclass(frozen=True)
class CameraSpec:
    """A camera and the frame size to ask it for."""

    #: An index (0), a device (/dev/video0), 'picamera2' / 'pi' or 'auto'.
    device: int | str
    #: (width, height) to ask for: the camera's smallest mode at least that large (OpenCV), or
    #: exactly that, scaled by the Pi's ISP (Picamera2). None: the camera's default.
    size: tuple[int, int] | None = None

    def __str__(self) -> str:
        return str(self.device)


def camera_frame_size(input_size: tuple[int, int]) -> tuple[int, int]:
    """(width, height) to ask a camera for, for a model taking `input_size` (height, width):
    CAMERA_SIZE_FACTOR x the input in each direction at least, CAMERA_ASPECT, width a multiple
    of PICAMERA_WIDTH_ALIGN (160x160 -> 448x320)."""
    need_h, need_w = (math.ceil(CAMERA_SIZE_FACTOR * side) for side in input_size)
    aspect_w, aspect_h = CAMERA_ASPECT
    height = max(need_h, math.ceil(need_w * aspect_h / aspect_w))
    width = max(need_w, math.ceil(height * aspect_w / aspect_h))
    width = -(-width // PICAMERA_WIDTH_ALIGN) * PICAMERA_WIDTH_ALIGN
    return width, height + height % 2


def parse_camera_size(text: str) -> tuple[int, int]:
    """'640x480' -> (640, 480); StreamError for anything else."""
    match = re.fullmatch(r"\s*(\d{1,5})\s*[xX]\s*(\d{1,5})\s*", str(text))
    if not match or not all(16 <= int(v) <= 8192 for v in match.groups()):
        raise StreamError(f"camera size {text!r}: expected WIDTHxHEIGHT, each 16 to 8192 (e.g. 1280x720)")
    return int(match.group(1)), int(match.group(2))


class StreamError(TlxError):
    """A frame source could not be opened, or stopped delivering frames."""


class FrameSource:
    """Where frames come from. Subclasses set the attributes and implement `read`."""

    #: For messages: a path, URL or 'camera 0'.
    name: str = "<frames>"
    #: True for sources that run in real time (cameras, network streams): when the model is
    #: slower than the source, frames are dropped rather than queued. False: every frame.
    live: bool = False
    #: Frames per second the source announces, or None.
    fps: float | None = None
    #: Frames the source announces (video files), or None.
    frame_count: int | None = None

    def read(self) -> tuple[np.ndarray, float] | None:
        """The next frame as (uint8 RGB HxWx3, time stamp in seconds), or None at the end.
        A live source's time stamp is seconds since it was opened; a file's is its video time.
        Raises StreamError when the source fails."""
        raise NotImplementedError

    def skip(self) -> float | None:
        """Pass over the next frame (not classified: --every); its time stamp, or None at the
        end. Sources that can skip decoding it override this."""
        got = self.read()
        return None if got is None else got[1]

    def end_error(self, frames_read: int) -> StreamError | None:
        """Called when `read` or `skip` returned None: an error if that end is a failure (a camera that
        stops, a truncated file), None for a normal end."""
        return None

    def close(self) -> None:
        """Release the device or file."""

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class IterableSource(FrameSource):
    """Frames from any iterable of uint8 HxWx3 RGB arrays, so any camera library can feed
    the stream. Not live by default: every frame is classified."""

    def __init__(self, frames: Iterable[np.ndarray], name: str = "<frames>", live: bool = False,
                 fps: float | None = None):
        self.name = name
        self.live = live
        self.fps = fps
        self._frames: Iterator[np.ndarray] = iter(frames)
        self._start = time.monotonic()
        self._count = 0

    def read(self) -> tuple[np.ndarray, float] | None:
        try:
            frame = next(self._frames)
        except StopIteration:
            return None
        stamp = self._count / self.fps if self.fps else time.monotonic() - self._start
        self._count += 1
        return frame, stamp


# --- OpenCV -----------------------------------------------------------------------------

def import_cv2():
    """The cv2 module, or MissingDependencyError naming the `camera` extra."""
    # OpenCV and its FFmpeg print warnings straight to stderr ("can't open camera by index",
    # "moov atom not found"); our own errors say the same in words. Both variables are read
    # when cv2 loads; set them yourself to see the native messages.
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    try:
        import cv2
    except ImportError:
        raise MissingDependencyError("Reading cameras, videos and stream URLs", "camera") from None
    return cv2


class OpenCVSource(FrameSource):
    """A cv2.VideoCapture: a V4L2 camera, a video file or a stream URL."""

    def __init__(self, capture, name: str, live: bool):
        self.name = name
        self.live = live
        self._cv2 = import_cv2()
        self._capture = capture
        fps = capture.get(self._cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 else None
        count = capture.get(self._cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count = int(count) if not live and count and count > 0 else None
        self._start = time.monotonic()
        self._count = 0

    def _stamp(self) -> float:
        if self.live:
            stamp = time.monotonic() - self._start
        elif self.fps:
            stamp = self._count / self.fps
        else:
            stamp = self._capture.get(self._cv2.CAP_PROP_POS_MSEC) / 1000.0
        self._count += 1
        return stamp

    def skip(self) -> float | None:
        # grab() without retrieve(): no colour conversion, and for cameras no decode at all.
        return self._stamp() if self._capture.grab() else None

    def read(self) -> tuple[np.ndarray, float] | None:
        ok, frame = self._capture.read()
        if not ok or frame is None:
            return None
        stamp = self._stamp()
        # OpenCV decodes to BGR; the model was trained on RGB. The reversed view is RGB
        # without a copy: tlx.imaging reads the kept pixels straight from the BGR memory, so
        # no whole frame is converted or written again beside the model's invoke (at
        # 1280x720, 2.7 MB read and written per frame less; the stream's rate against
        # cvtColor: benchmarks/results/stream_speed.md). Callers that need packed RGB memory
        # call np.ascontiguousarray on it.
        return frame[..., ::-1], stamp

    def end_error(self, frames_read: int) -> StreamError | None:
        if self.live:
            return StreamError(f"{self.name}: stopped delivering frames after {frames_read} "
                               "frame(s) (unplugged, or the stream ended)")
        if frames_read == 0:
            return StreamError(f"{self.name}: the video has no frames")
        # The container's count is an estimate for some formats (duration x rate), so a frame
        # or two short is not called damage; a truncated file loses far more.
        expected = self.frame_count or 0
        if expected - frames_read > max(2, expected // 50):
            return StreamError(f"{self.name}: the video ended after {frames_read} of "
                               f"{expected} frames (truncated or damaged file?)")
        return None

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


def _video_devices() -> str:
    devices = sorted(glob.glob("/dev/video*"), key=lambda p: int(re.sub(r"\D", "", p) or 0))
    return ", ".join(devices) if devices else "none"


def open_opencv_camera(camera: int | str | CameraSpec) -> FrameSource:
    """A USB/V4L2 camera by index (0) or device path (/dev/video0); a CameraSpec with a size
    gets the camera's smallest mode at least that large (request_frame_size)."""
    cv2 = import_cv2()
    size = camera.size if isinstance(camera, CameraSpec) else None
    camera = camera.device if isinstance(camera, CameraSpec) else camera
    device: Any = int(camera) if str(camera).isdigit() else str(camera)
    name = f"camera {device}"
    if isinstance(device, str) and not os.path.exists(device):
        raise StreamError(f"{name}: no such device (video devices here: {_video_devices()})")
    capture = cv2.VideoCapture(device, cv2.CAP_V4L2) if os.name == "posix" else cv2.VideoCapture(device)
    if not capture.isOpened():
        raise StreamError(f"{name}: cannot open the camera (video devices here: {_video_devices()}; "
                          "is another program using it?)")
    # The driver's queue would hand us old frames after a slow invoke; keep one.
    capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    if size is not None:
        request_frame_size(capture, size)
    return OpenCVSource(capture, name, live=True)


def request_frame_size(capture, size: tuple[int, int]) -> tuple[int, int]:
    """Set an OpenCV camera to its smallest mode at least `size` (width, height) in both
    directions; the (width, height) it took. A V4L2 driver answers a request with its nearest
    mode, which may be smaller: then the common modes above the request are tried, smallest
    first. A camera with no mode that large ends at its largest."""
    cv2 = import_cv2()
    want_w, want_h = size
    larger = sorted((m for m in COMMON_CAMERA_MODES if m[0] >= want_w and m[1] >= want_h and m != size),
                    key=lambda m: (m[0] * m[1], m))
    got = (0, 0)
    for width, height in (size, *larger):
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        got = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        if got[0] >= want_w and got[1] >= want_h:
            break
    return got


def open_video_file(path: str | os.PathLike) -> FrameSource:
    """A video file (.mp4, .avi, .mkv, .mov), every frame in order."""
    cv2 = import_cv2()
    name = str(path)
    if not os.path.isfile(path):
        raise StreamError(f"{name}: no such file" if not os.path.exists(path) else f"{name}: not a file")
    if not os.access(path, os.R_OK):
        raise StreamError(f"{name}: cannot read (permission denied)")
    capture = cv2.VideoCapture(name, cv2.CAP_FFMPEG)
    if not capture.isOpened():
        raise StreamError(f"{name}: cannot open as a video (damaged, empty, or a codec FFmpeg "
                          "does not know)")
    return OpenCVSource(capture, name, live=False)


def open_url(url: str) -> FrameSource:
    """An rtsp:// or http(s):// stream, read in real time (frames dropped when slow)."""
    cv2 = import_cv2()
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, URL_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, URL_TIMEOUT_MS]
    capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
    if not capture.isOpened():
        raise StreamError(f"{url}: no video stream (the address does not answer, refused the "
                          f"connection, or sent no video within {URL_TIMEOUT_MS // 1000} s)")
    return OpenCVSource(capture, url, live=True)


# --- Picamera2 (Raspberry Pi camera module) ---------------------------------------------

class Picamera2Source(FrameSource):
    """The Raspberry Pi camera module through Picamera2 (libcamera)."""

    live = True

    def __init__(self, camera, index: int):
        self._camera = camera
        self.name = f"Pi camera {index}"
        self._start = time.monotonic()

    def read(self) -> tuple[np.ndarray, float] | None:
        return self._camera.capture_array("main"), time.monotonic() - self._start

    def end_error(self, frames_read: int) -> StreamError | None:
        return StreamError(f"{self.name}: stopped delivering frames after {frames_read} frame(s)")

    def close(self) -> None:
        if self._camera is not None:
            self._camera.stop()
            self._camera.close()
            self._camera = None


def _import_picamera2():
    try:
        from picamera2 import Picamera2
    except ImportError:
        raise StreamError(
            "the Pi camera needs Picamera2, which this Python cannot import. On Raspberry Pi OS: "
            "sudo apt install python3-picamera2, and make the venv with "
            "python3 -m venv --system-site-packages") from None
    return Picamera2


def picamera2_cameras() -> int:
    """How many cameras Picamera2 sees (0 when it is not importable)."""
    try:
        return len(_import_picamera2().global_camera_info())
    except Exception:  # not importable, or libcamera itself failing: then no Pi camera
        return 0


def open_picamera2(index: int = 0, size: tuple[int, int] | None = None) -> FrameSource:
    """Camera `index` of the Pi's camera connector(s), frames of `size` = (width, height),
    scaled by the Pi's ISP from the whole sensor, so the CPU never sees more pixels than that
    (pass camera_frame_size(model input)); None: PICAMERA_DEFAULT_SIZE."""
    size = tuple(size) if size is not None else PICAMERA_DEFAULT_SIZE
    picamera2 = _import_picamera2()
    found = len(picamera2.global_camera_info())
    if index >= found:
        raise StreamError(f"Pi camera {index}: not found (Picamera2 sees {found} camera(s))")
    camera = picamera2(index)
    # libcamera names formats by their 32-bit word: "BGR888" is R, G, B in memory, i.e. the
    # RGB array the model wants, with no conversion.
    camera.configure(camera.create_video_configuration(main={"size": size, "format": "BGR888"}))
    camera.start()
    return Picamera2Source(camera, index)


def _open_picamera2_spec(spec: int | str | CameraSpec) -> FrameSource:
    size = spec.size if isinstance(spec, CameraSpec) else None
    device = str(spec.device if isinstance(spec, CameraSpec) else spec)
    return open_picamera2(int(device) if device.isdigit() else 0, size)


# --- the registry -----------------------------------------------------------------------

#: kind -> opener(spec) -> FrameSource. Camera openers also take a CameraSpec.
SOURCES: dict[str, Callable[[Any], FrameSource]] = {
    "camera": open_opencv_camera,
    "picamera2": _open_picamera2_spec,
    "video": open_video_file,
    "url": open_url,
    "frames": IterableSource,
}


def is_url(text: str) -> bool:
    return str(text).lower().startswith(URL_SCHEMES)


def is_video_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def is_stream_input(item: str | os.PathLike) -> bool:
    """True for what `tlx predict` reads as a stream rather than an image: videos and URLs."""
    return is_url(str(item)) or is_video_file(item)


def camera_kind(camera: int | str) -> tuple[str, Any]:
    """(registry kind, spec) for a --camera value: an index, /dev/videoN, picamera2/pi, auto."""
    text = str(camera).strip().lower()
    if text in PICAMERA_NAMES:
        return "picamera2", 0
    if text == CAMERA_AUTO:
        return ("picamera2", 0) if picamera2_cameras() else ("camera", 0)
    if text.isdigit() or text.startswith("/dev/"):
        return "camera", str(camera).strip()
    raise StreamError(f"camera {camera!r}: expected an index (0), a device (/dev/video0), "
                      f"'picamera2' or '{CAMERA_AUTO}'")


def source_kind(source: Any) -> tuple[str, Any]:
    """(registry kind, spec) for what the user passed to classify_stream."""
    if isinstance(source, CameraSpec):
        device = source.device
        kind, device = (("camera", int(device)) if isinstance(device, (int, np.integer))
                        else camera_kind(device))
        return kind, CameraSpec(device, source.size)
    if isinstance(source, (int, np.integer)) and not isinstance(source, bool):
        return "camera", int(source)
    if isinstance(source, (str, os.PathLike)):
        text = str(source)
        if is_url(text):
            return "url", text
        if text.startswith("/dev/video") or text.lower() in PICAMERA_NAMES | {CAMERA_AUTO}:
            return camera_kind(text)
        if is_video_file(text):
            return "video", source
        raise StreamError(f"{text}: not a stream (give a video file ({', '.join(sorted(VIDEO_SUFFIXES))}), "
                          "an rtsp:// or http:// URL, a camera index or /dev/videoN)")
    if isinstance(source, np.ndarray):
        raise StreamError("a single array is one image: use classify(); a stream takes an iterable "
                          "of frames")
    if isinstance(source, Iterable):
        return "frames", source
    raise StreamError(f"cannot read frames from a {type(source).__name__}")


def open_source(source: Any, kind: str | None = None,
                camera_size: tuple[int, int] | None = None) -> FrameSource:
    """A FrameSource for `source` (a FrameSource is returned as it is). `kind` forces a
    registry key; otherwise it is chosen from the value. `camera_size` (width, height): what
    to ask a camera for when `source` is one and not already a CameraSpec with a size."""
    if isinstance(source, FrameSource):
        return source
    if kind is None:
        kind, source = source_kind(source)
    if kind not in SOURCES:
        raise StreamError(f"unknown source kind {kind!r}; valid: {', '.join(SOURCES)}")
    if camera_size is not None and kind in ("camera", "picamera2"):
        if not isinstance(source, CameraSpec):
            source = CameraSpec(source, tuple(camera_size))
        elif source.size is None:
            source = CameraSpec(source.device, tuple(camera_size))
    return SOURCES[kind](source)
