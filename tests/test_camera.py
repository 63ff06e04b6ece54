"""Cameras are asked for the frame size the model needs (tlx.runtime.sources, `--camera-size`).

Picamera2 exists only on Raspberry Pi OS and CI has no USB camera: stand-ins record what tlx
asks of them (Picamera2's configuration; an OpenCV capture that, like a V4L2 driver, answers a
size request with its nearest mode) and give real photo frames of the size they were set to.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from tests.support.runtime import models_folder
from tlx.cli.app import app
from tlx.imaging import REDUCE_GAP
from tlx.runtime import Classifier
from tlx.runtime import sources as sources_mod
from tlx.runtime.sources import (CameraSpec, IterableSource, StreamError, camera_frame_size,
                                 parse_camera_size, request_frame_size)


def photo_frame(width: int, height: int) -> np.ndarray:
    """scikit-image's cat photo at the given size (what a camera set to it would deliver)."""
    from skimage import data

    return np.asarray(Image.fromarray(data.chelsea()).resize((width, height), Image.Resampling.BILINEAR))


@pytest.fixture(scope="module")
def models(request):
    return models_folder(request)


@pytest.fixture(scope="module")
def clf(models) -> Classifier:
    return Classifier.from_file(models / "int8.tflite", num_threads=1)


# --- the size asked for ----------------------------------------------------------------------

def test_camera_frame_size_of_common_inputs():
    assert camera_frame_size((160, 160)) == (448, 320)
    assert camera_frame_size((224, 224)) == (608, 448)
    assert camera_frame_size((32, 32)) == (96, 64)
    assert camera_frame_size((96, 240)) == (480, 360)  # a wide input: its width decides


@settings(max_examples=200, deadline=None)
@given(st.integers(8, 1024), st.integers(8, 1024))
def test_camera_frame_size_covers_twice_the_input(height, width):
    frame_w, frame_h = camera_frame_size((height, width))
    assert frame_w >= REDUCE_GAP * width and frame_h >= REDUCE_GAP * height
    assert frame_w % sources_mod.PICAMERA_WIDTH_ALIGN == 0 and frame_h % 2 == 0
    assert 3 * frame_w >= 4 * frame_h  # 4:3, or wider for a wide input or the alignment
    # No more than needed: the least height for 2x at 4:3, the least width over that.
    assert frame_h <= max(2 * height, -(-2 * width * 3 // 4)) + 1
    assert frame_w < max(2 * width, -(-frame_h * 4 // 3)) + sources_mod.PICAMERA_WIDTH_ALIGN


def test_parse_camera_size():
    assert parse_camera_size("1280x720") == (1280, 720)
    assert parse_camera_size(" 640X480 ") == (640, 480)
    for bad in ("1280", "1280x", "x720", "-640x480", "640x480x3", "8x8", "99999x10", "axb", ""):
        with pytest.raises(StreamError, match="expected WIDTHxHEIGHT"):
            parse_camera_size(bad)


# --- Picamera2: the ISP scales to the size asked for -------------------------------------------

class RecordingPicamera2:
    """Picamera2's documented calls (global_camera_info, create_video_configuration,
    configure, start, capture_array, stop, close), recording the configuration tlx asks for
    and giving a real photo at that size, with the row padding Picamera2's arrays can have."""

    configured: list = []

    @staticmethod
    def global_camera_info():
        return [{"Model": "imx708", "Num": 0}]

    def __init__(self, index):
        self.size = None

    def create_video_configuration(self, main):
        return {"main": dict(main)}

    def configure(self, config):
        self.configured.append(config["main"])
        self.size = tuple(config["main"]["size"])

    def start(self):
        pass

    def capture_array(self, stream):
        width, height = self.size
        padded = np.zeros((height, width + 16, 3), np.uint8)  # stride padding, as libcamera's
        padded[:, :width] = photo_frame(width, height)
        return padded[:, :width]

    def stop(self):
        pass

    def close(self):
        pass


@pytest.fixture
def picamera2(monkeypatch):
    module = type(sys)("picamera2")
    module.Picamera2 = RecordingPicamera2
    RecordingPicamera2.configured = []
    monkeypatch.setitem(sys.modules, "picamera2", module)
    return RecordingPicamera2


def test_picamera2_is_asked_for_twice_the_model_input(clf, picamera2):
    with clf.classify_stream("picamera2", max_frames=2) as stream:
        results = list(stream)
    size = camera_frame_size(clf.input_size)
    assert picamera2.configured == [{"size": size, "format": "BGR888"}]
    assert size == clf.camera_frame_size and size[0] < 640 and size[1] < 480  # not the old 640x480
    assert results[0].frame.shape == (size[1], size[0], 3)
    assert list(results[0].predictions) == clf.classify(results[0].frame)


def test_picamera2_asked_for_a_given_size(clf, picamera2):
    with clf.classify_stream("pi", max_frames=1, camera_size=(1280, 720)) as stream:
        (result,) = list(stream)
    assert picamera2.configured == [{"size": (1280, 720), "format": "BGR888"}]
    assert result.frame.shape == (720, 1280, 3)
    assert list(result.predictions) == clf.classify(result.frame)


def test_picamera2_without_a_size_keeps_its_default(picamera2):
    sources_mod.open_picamera2(0).close()
    assert picamera2.configured == [{"size": sources_mod.PICAMERA_DEFAULT_SIZE, "format": "BGR888"}]


# --- OpenCV: the smallest mode at least the size ----------------------------------------------

class NearestModeCapture:
    """A cv2.VideoCapture of a camera with fixed modes: like a V4L2 driver, a size request
    gets the nearest mode (which may be smaller than asked). Records every request."""

    def __init__(self, modes, *args):
        self.modes = list(modes)
        self.mode = self.modes[len(self.modes) // 2]
        self.want = list(self.mode)
        self.requests = []

    def isOpened(self):
        return True

    def set(self, prop, value):
        import cv2

        if prop in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT):
            self.want[0 if prop == cv2.CAP_PROP_FRAME_WIDTH else 1] = int(value)
            self.requests.append(tuple(self.want))
            self.mode = min(self.modes, key=lambda m: abs(m[0] - self.want[0]) + abs(m[1] - self.want[1]))
        return True

    def get(self, prop):
        import cv2

        return {cv2.CAP_PROP_FRAME_WIDTH: self.mode[0], cv2.CAP_PROP_FRAME_HEIGHT: self.mode[1]}.get(prop, 0)

    def read(self):
        import cv2

        return True, cv2.cvtColor(photo_frame(*self.mode), cv2.COLOR_RGB2BGR)

    def release(self):
        pass


WEBCAM_MODES = [(160, 120), (320, 240), (352, 288), (640, 480), (800, 600), (1280, 720), (1920, 1080)]


@pytest.mark.parametrize("want, got", [
    ((448, 320), (640, 480)),     # the nearest mode, 352x288, is too small: the next common one
    ((96, 64), (160, 120)),
    ((640, 480), (640, 480)),
    ((1000, 700), (1280, 720)),
    ((4000, 3000), (1920, 1080)),  # larger than any mode: the camera's largest
])
def test_opencv_camera_takes_its_smallest_mode_at_least_the_size(want, got):
    pytest.importorskip("cv2")
    capture = NearestModeCapture(WEBCAM_MODES)
    assert request_frame_size(capture, want) == got
    assert capture.mode == got


def test_opencv_camera_opened_at_the_model_size(clf, monkeypatch):
    cv2 = pytest.importorskip("cv2")
    captures = []

    def video_capture(device, *args):
        captures.append(NearestModeCapture(WEBCAM_MODES))
        return captures[-1]

    monkeypatch.setattr(cv2, "VideoCapture", video_capture)
    with clf.classify_stream(0, max_frames=1) as stream:
        (result,) = list(stream)
    want = camera_frame_size(clf.input_size)  # 96x64 for the 32 px test model
    assert captures[0].requests[:2] == [(want[0], captures[0].requests[0][1]), want]
    assert result.frame.shape == (120, 160, 3)  # the smallest mode at least 96x64
    assert list(result.predictions) == clf.classify(result.frame)


# --- tlx predict --camera --camera-size ---------------------------------------------------------

def invoke(*args):
    return CliRunner().invoke(app, ["predict", *map(str, args)])


def test_cli_camera_size_is_passed_to_the_camera(models, clf, monkeypatch):
    opened = []

    def open_camera(spec):
        opened.append(spec)
        return IterableSource([photo_frame(*spec.size)] * 2, name=f"camera {spec}", live=True)

    monkeypatch.setitem(sources_mod.SOURCES, "camera", open_camera)
    result = invoke(models / "int8.tflite", "--camera", "0", "--camera-size", "1280x720", "--json")
    assert result.exit_code == 0, result.output
    assert opened == [CameraSpec(0, (1280, 720))]
    result = invoke(models / "int8.tflite", "--camera", "0", "--json")
    assert result.exit_code == 0, result.output
    assert opened[1] == CameraSpec(0, clf.camera_frame_size)


@pytest.mark.parametrize("args, message", [
    (("--camera", "--camera-size", "big"), "expected WIDTHxHEIGHT"),
    (("--camera", "--camera-size", "1280x"), "expected WIDTHxHEIGHT"),
    (("--camera", "--camera-size", "10x10"), "each 16 to 8192"),
    (("--camera-size", "640x480", "photo.jpg"), "applies to --camera only"),
])
def test_cli_bad_camera_size(models, args, message):
    result = invoke(models / "int8.tflite", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "--camera-size" in result.output
    assert "Traceback" not in result.output


def test_camera_spec_of_a_file_is_an_error():
    with pytest.raises(StreamError, match="expected an index"):
        sources_mod.open_source(CameraSpec("video.mp4", (320, 240)))
