"""Live classification: video files, stream URLs and cameras (tlx.runtime.stream, `tlx predict`).

The videos are real: real photos (Tux Paint's, else scikit-image's) written with OpenCV's
VideoWriter, several frames per photo, decoded again by OpenCV. The camera path runs
through the same FrameSource interface with an injected source (CI has no camera).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests.support.runtime import models_folder
from tlx.cli.app import app
from tlx.errors import TlxError
from tlx.imaging import load_image
from tlx.runtime import Classifier
from tlx.runtime import sources as sources_mod
from tlx.runtime.sources import FrameSource, IterableSource, StreamError
from tlx.runtime.stream import STAGES

cv2 = pytest.importorskip("cv2", reason="the 'camera' extra (opencv-python-headless)")

REPO = Path(__file__).resolve().parent.parent
TUXPAINT = Path("/usr/share/tuxpaint/stamps")
#: Frames per photo, frame size (width, height) and rate of the test video.
PER_PHOTO, SIZE, FPS = 4, (160, 120), 8.0


def real_photos(count: int = 6) -> list[np.ndarray]:
    """RGB photos at the video size: Tux Paint's (alpha on white, as load_image does), else
    scikit-image's bundled ones."""
    paths = sorted(TUXPAINT.glob("*/*/*.png"))[:: 7][:count] if TUXPAINT.is_dir() else []
    if len(paths) >= count:
        return [load_image(p, (SIZE[1], SIZE[0])) for p in paths]
    from skimage import data

    images = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket(), data.immunohistochemistry(),
              data.retina()]
    return [load_image(np.ascontiguousarray(i[..., :3]), (SIZE[1], SIZE[0])) for i in images[:count]]


def write_video(path: Path, photos: list[np.ndarray], per_photo: int = PER_PHOTO,
                fourcc: str = "mp4v") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, SIZE)
    assert writer.isOpened()
    for photo in photos:
        for _ in range(per_photo):
            writer.write(cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def decoded_frames(path: Path) -> list[np.ndarray]:
    """The video's frames as OpenCV decodes them, in RGB."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames


@pytest.fixture(scope="module")
def models(request) -> Path:
    return models_folder(request)


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return real_photos()


@pytest.fixture(scope="module")
def video(tmp_path_factory, photos) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "photos.mp4", photos)


@pytest.fixture(scope="module")
def clf(models) -> Classifier:
    return Classifier.from_file(models / "int8.tflite", num_threads=1)


def invoke(*args):
    return CliRunner().invoke(app, ["predict", *map(str, args)])


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def closed_port() -> int:
    """A localhost port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CameraLike(FrameSource):
    """An injected camera: live, real photos as frames, and a camera's end (an error)
    after the given frames, like a USB camera pulled out. With a `gate` (a semaphore) each
    frame waits for a permit: the test paces the camera by events, not by sleeping."""

    live = True
    name = "injected camera"

    def __init__(self, frames, delay: float = 0.0, gate: threading.Semaphore | None = None):
        self._frames = list(frames)
        self._delay = delay
        self._gate = gate
        self._start = time.monotonic()
        self.closed = False
        #: Frames handed out so far; notified on every change, and at the end.
        self.delivered = 0
        self.ended = False
        self.changed = threading.Condition()

    def read(self):
        if self._gate is not None:
            self._gate.acquire()
        if not self._frames:
            with self.changed:
                self.ended = True
                self.changed.notify_all()
            return None
        time.sleep(self._delay)
        frame = self._frames.pop(0)
        with self.changed:
            self.delivered += 1
            self.changed.notify_all()
        return frame, time.monotonic() - self._start

    def wait_delivered(self, count: int) -> None:
        """Until `count` frames were handed out or the camera ended."""
        with self.changed:
            assert self.changed.wait_for(lambda: self.delivered >= count or self.ended, timeout=60)

    def end_error(self, frames_read):
        return StreamError(f"{self.name}: stopped delivering frames after {frames_read} frame(s)")

    def close(self):
        self.closed = True


# --- the library --------------------------------------------------------------------------

@pytest.mark.parametrize("suffix,fourcc", [(".mp4", "mp4v"), (".avi", "MJPG"), (".mkv", "mp4v"),
                                           (".mov", "mp4v")])
def test_video_predictions_equal_classify_on_the_same_frames(clf, photos, tmp_path, suffix, fourcc):
    path = write_video(tmp_path / f"v{suffix}", photos, fourcc=fourcc)
    frames = decoded_frames(path)
    assert len(frames) == len(photos) * PER_PHOTO
    with clf.classify_stream(path, top_k=3) as stream:
        results = list(stream)
    assert [r.index for r in results] == list(range(len(frames)))
    assert [r.time for r in results] == pytest.approx([i / FPS for i in range(len(frames))])
    for result, frame in zip(results, frames):
        assert list(result.predictions) == clf.classify(frame, top_k=3)
        assert np.array_equal(result.frame, frame)
    # Real photos, not one colour: the model does not give every frame the same scores.
    assert len({tuple(p.score for p in r.predictions) for r in results}) > 1
    assert stream.stats.frames == len(frames) and stream.stats.dropped == 0


def test_every_max_frames_and_duration(clf, video):
    frames = decoded_frames(video)
    total = len(frames)
    results = list(clf.classify_stream(video, every=5))
    assert [r.index for r in results] == list(range(0, total, 5))
    # Skipped frames are grabbed, not decoded: the ones classified are still the right ones.
    for result in results:
        assert np.array_equal(result.frame, frames[result.index])
        assert result.time == pytest.approx(result.index / FPS)
    assert [r.index for r in clf.classify_stream(video, every=2, max_frames=3)] == [0, 2, 4]
    # Video time: frames at 0, 1/8, ... 7/8 s come before the 1 s mark.
    assert [r.index for r in clf.classify_stream(video, duration=1.0)] == list(range(8))


def test_any_iterable_of_arrays(clf, photos):
    results = list(clf.classify_stream(iter(photos), top_k=2))
    assert [list(r.predictions) for r in results] == [clf.classify(p, top_k=2) for p in photos]
    with pytest.raises(StreamError, match="frame 1: .*not uint8"):
        list(clf.classify_stream([photos[0], photos[1].astype(np.float32)]))


def test_injected_camera_through_the_frame_source_interface(clf, photos):
    # Lockstep: the camera hands out a frame only when the previous one was classified, so
    # none is dropped however busy the machine is.
    gate = threading.Semaphore(1)
    camera = CameraLike(photos, gate=gate)
    results = []
    with pytest.raises(StreamError, match="stopped delivering frames after 6"):
        for result in clf.classify_stream(camera, top_k=3):
            results.append(result)
            gate.release()
    assert [r.index for r in results] == list(range(len(photos)))
    for result in results:
        assert list(result.predictions) == clf.classify(photos[result.index], top_k=3)
    assert camera.closed


def test_a_slow_consumer_drops_live_frames_but_not_file_frames(clf, photos, video):
    live = CameraLike(photos * 10)  # 60 frames, as fast as the reader takes them
    seen = []
    with pytest.raises(StreamError):
        for result in clf.classify_stream(live):
            seen.append(result)
            # A model slower than the camera: before taking the next result, the camera has
            # handed out 3 more frames. Frames index+1 and index+2 were both put in the
            # one-frame slot by then, so at least one of them is dropped at every step.
            live.wait_delivered(result.index + 4)
    indices = [r.index for r in seen]
    # Every other frame at most, and the last one: the newest frame is never dropped.
    assert indices == sorted(indices) and len(indices) <= 31 and indices[-1] == 59
    assert seen[-1].dropped == 60 - len(seen) >= 29
    # A file: every frame, in order, however slow the model.
    slow = []
    for result in clf.classify_stream(video):
        slow.append(result.index)
        time.sleep(0.005)
    assert slow == list(range(len(decoded_frames(video))))


def test_realtime_file_reads_at_the_video_rate(clf, video):
    start = time.perf_counter()
    results = list(clf.classify_stream(video, max_frames=6, realtime=True))
    # 6 frames at 8 fps take at least 5/8 s when paced; unpaced they take milliseconds.
    assert time.perf_counter() - start >= 0.6
    assert [r.index for r in results] == list(range(6))


def test_stream_stats_memory_is_bounded():
    from tlx.runtime.stream import StreamStats

    stats = StreamStats(capacity=100)
    for i in range(5000):
        stats.add(1.0, 2.0, float(i % 10))
    assert stats.frames == 5000 and stats._samples.shape == (100, 3)
    p = stats.percentiles()
    assert p["capture"]["p50"] == 1.0 and p["preprocess"]["p90"] == 2.0 and 3 <= p["invoke"]["p50"] <= 6


def test_source_registry_and_kinds(video):
    assert sources_mod.source_kind(video)[0] == "video"
    assert sources_mod.source_kind("rtsp://127.0.0.1:1/x")[0] == "url"
    assert sources_mod.source_kind(2) == ("camera", 2)
    assert sources_mod.source_kind("/dev/video3") == ("camera", "/dev/video3")
    assert sources_mod.source_kind([np.zeros((2, 2, 3), np.uint8)])[0] == "frames"
    with pytest.raises(StreamError, match="not a stream"):
        sources_mod.source_kind("photo.jpg")
    with pytest.raises(StreamError, match="valid: camera, picamera2, video, url, frames"):
        sources_mod.open_source(video, kind="webcam")
    with pytest.raises(StreamError, match="Picamera2"):
        sources_mod.open_source("picamera2")  # no picamera2 module off a Pi


def test_without_opencv_the_message_names_the_extra(models, video, monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # as if opencv-python-headless were absent
    result = invoke(models / "int8.tflite", video)
    assert result.exit_code == 1
    assert "pip install 'tlx-edge[camera]'" in result.stderr and "Traceback" not in result.output


def test_runtime_and_cli_import_no_opencv():
    code = ("import sys, tlx.runtime, tlx.runtime.stream, tlx.runtime.sources, tlx.cli; "
            "bad = {'cv2', 'tensorflow'} & set(sys.modules); assert not bad, bad")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# --- the command --------------------------------------------------------------------------

def test_cli_json_lines_one_object_per_frame(models, video, clf):
    result = invoke(models / "int8.tflite", video, "--json", "--top-k", "2")
    assert result.exit_code == 0, result.output
    records = json_lines(result.stdout)
    frames = decoded_frames(video)
    assert len(records) == len(frames)
    for i, (record, frame) in enumerate(zip(records, frames)):
        assert set(record) == {"source", "frame", "time", "predictions", "ms", "fps", "dropped"}
        assert record["source"] == str(video) and record["frame"] == i
        assert record["time"] == pytest.approx(i / FPS)
        assert set(record["ms"]) == set(STAGES) and all(v >= 0 for v in record["ms"].values())
        assert record["predictions"] == [p.to_json() for p in clf.classify(frame, top_k=2)]
    assert f"{len(frames)} frame(s) classified" in result.stderr
    for stage in STAGES:
        assert stage in result.stderr


def test_cli_every_max_frames_duration(models, video):
    model = models / "int8.tflite"
    result = invoke(model, video, "--json", "--every", "3", "--max-frames", "4")
    assert result.exit_code == 0, result.output
    assert [r["frame"] for r in json_lines(result.stdout)] == [0, 3, 6, 9]
    result = invoke(model, video, "--duration", "0.5")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 4 and lines[1].split()[:2] == ["0.125s", "#1"]


def test_cli_annotate_writes_a_playable_video(models, video, tmp_path):
    out = tmp_path / "out" / "annotated.mp4"
    out.parent.mkdir()
    result = invoke(models / "int8.tflite", video, "--every", "2", "--annotate", out)
    assert result.exit_code == 0, result.output
    frames = decoded_frames(out)
    assert len(frames) == len(decoded_frames(video)) // 2
    assert frames[0].shape == (SIZE[1], SIZE[0], 3)
    capture = cv2.VideoCapture(str(out))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS / 2)
    # The caption box: black with white text, top left; the photo elsewhere.
    box = frames[0][2:14, 2:40].astype(int)
    assert (box.max(axis=2) < 60).mean() > 0.4 and (box.min(axis=2) > 180).any()
    assert [p.name for p in out.parent.iterdir()] == ["annotated.mp4"]  # no temp file left


def lockstep(monkeypatch, gate: threading.Semaphore) -> None:
    """The command's streams release `gate` after each classified frame (see CameraLike)."""
    from tlx.cli import predict_stream

    class LockstepStream(predict_stream.FrameStream):
        def __iter__(self):
            for result in super().__iter__():
                yield result
                gate.release()

    monkeypatch.setattr(predict_stream, "FrameStream", LockstepStream)


def test_cli_camera_with_an_injected_source(models, photos, clf, monkeypatch):
    opened = []
    gate = threading.Semaphore(1)

    def gated(frames):
        for frame in frames:
            gate.acquire()
            yield frame

    def open_camera(spec):
        opened.append(spec)
        return IterableSource(gated(photos), name=f"camera {spec}", live=True)

    monkeypatch.setitem(sources_mod.SOURCES, "camera", open_camera)
    lockstep(monkeypatch, gate)
    result = invoke(models / "int8.tflite", "--camera", "1", "--json")
    assert result.exit_code == 0, result.output
    assert opened == [sources_mod.CameraSpec(1, clf.camera_frame_size)]  # asked for what the model needs
    records = json_lines(result.stdout)
    assert [record["frame"] for record in records] == list(range(len(photos)))
    for record in records:
        assert record["predictions"] == [p.to_json() for p in
                                         clf.classify(photos[record["frame"]], top_k=3)]
    assert "Reading camera 1 (live" in result.stderr


def test_cli_camera_that_stops_midway_keeps_the_frames(models, photos, monkeypatch, tmp_path):
    monkeypatch.setitem(sources_mod.SOURCES, "camera", lambda spec: CameraLike(photos[:3], delay=0.02))
    out = tmp_path / "cam.avi"
    result = invoke(models / "int8.tflite", "--camera", "/dev/video0", "--annotate", out)
    assert result.exit_code == 1
    printed = result.stdout.splitlines()
    assert 1 <= len(printed) <= 3 and "#2 " in printed[-1]  # a stalled machine may drop one
    assert "stopped delivering frames after 3" in result.stderr and "Traceback" not in result.output
    assert f"{len(printed)} frame(s) classified" in result.stderr
    assert len(decoded_frames(out)) == len(printed)


def test_cli_truncated_video_keeps_the_frames_already_classified(models, photos, tmp_path):
    whole = write_video(tmp_path / "whole.mkv", photos)
    data = whole.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    result = invoke(models / "int8.tflite", cut, "--json", "--annotate", tmp_path / "cut_out.mp4")
    assert result.exit_code == 1
    kept = json_lines(result.stdout)
    assert 0 < len(kept) < len(photos) * PER_PHOTO
    assert f"ended after {len(kept)} of {len(photos) * PER_PHOTO} frames" in result.stderr
    assert len(decoded_frames(tmp_path / "cut_out.mp4")) == len(kept)
    assert "Traceback" not in result.output


def test_cli_bad_sources(models, video, tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(4000))
    empty = tmp_path / "empty.mp4"
    cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE).release()  # zero frames
    url = f"http://127.0.0.1:{closed_port()}/stream.mjpg"
    cases = [
        ((garbage,), "garbage.mp4: cannot open as a video"),
        ((empty,), "empty.mp4: "),
        ((tmp_path / "missing.avi",), "missing.avi: no such file"),
        ((url,), f"{url}: no video stream"),
        (("rtsp://127.0.0.1:%d/cam" % closed_port(),), "no video stream"),
        (("--camera", "/dev/video99"), "camera /dev/video99: no such device"),
        (("--camera", "banana"), "expected an index"),
    ]
    if not any(Path(f"/dev/video{i}").exists() for i in range(8)):
        cases.append((("--camera", "7"), "camera 7: cannot open the camera"))
    for args, message in cases:
        result = invoke(models / "int8.tflite", *args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.output
    # One bad source does not stop the others; the exit code still says it failed.
    result = invoke(models / "int8.tflite", garbage, video, "--max-frames", "2")
    assert result.exit_code == 1 and len(result.stdout.splitlines()) == 2


def test_cli_refuses_mixes_and_stream_options_on_images(models, video, tmp_path):
    image = tmp_path / "a.png"
    from PIL import Image
    Image.new("RGB", (8, 8)).save(image)
    for args, message in [((image, video), "separate calls"), ((image, "--every", "2"), "--every"),
                          ((image, "--annotate", tmp_path / "o.mp4"), "--annotate"),
                          ((video, "--annotate", tmp_path / "o.gif"), "'.gif'"),
                          (("--camera", "0", "1"), "one camera at a time"), ((), "or --camera")]:
        result = invoke(models / "int8.tflite", *args)
        assert result.exit_code in (1, 2), (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output


class StandInPicamera2:
    """Picamera2's documented API (global_camera_info, create_video_configuration, configure,
    start, capture_array, stop, close) over real photos: checks how tlx's adapter drives the
    Pi camera library, which exists only on Raspberry Pi OS. Not a test of Picamera2."""

    calls: list = []
    photos: list = []

    @staticmethod
    def global_camera_info():
        return [{"Model": "imx708", "Num": 0}]

    def __init__(self, index):
        self.calls.append(("init", index))
        self._next = 0

    def create_video_configuration(self, main):
        return {"main": main}

    def configure(self, config):
        self.calls.append(("configure", config["main"]))

    def start(self):
        self.calls.append(("start",))

    def capture_array(self, stream):
        time.sleep(0.01)
        frame = self.photos[self._next % len(self.photos)]
        self._next += 1
        return frame

    def stop(self):
        self.calls.append(("stop",))

    def close(self):
        self.calls.append(("close",))


def test_picamera2_adapter(clf, photos, monkeypatch):
    module = type(sys)("picamera2")
    module.Picamera2 = StandInPicamera2
    StandInPicamera2.calls, StandInPicamera2.photos = [], photos
    monkeypatch.setitem(sys.modules, "picamera2", module)
    assert sources_mod.camera_kind("auto") == ("picamera2", 0)  # the camera module wins
    results = list(clf.classify_stream("picamera2", max_frames=3))
    assert len(results) == 3 and [r.index for r in results] == sorted({r.index for r in results})
    for result in results:
        assert list(result.predictions) == clf.classify(result.frame, top_k=5)
    # RGB arrays straight from libcamera ("BGR888" is R, G, B in memory), then released.
    assert StandInPicamera2.calls[:3] == [("init", 0), ("configure", {"size": clf.camera_frame_size,
                                                                      "format": "BGR888"}), ("start",)]
    assert StandInPicamera2.calls[-2:] == [("stop",), ("close",)]
    with pytest.raises(StreamError, match="Pi camera 2: not found"):
        sources_mod.open_picamera2(2)


def test_live_status_line_on_stderr(models, video, monkeypatch):
    from tlx.cli import predict_stream

    monkeypatch.setattr(predict_stream, "STATUS_INTERVAL_LOG", 0.0)  # a line per frame
    result = invoke(models / "int8.tflite", video, "--max-frames", "5", "--json")
    assert result.exit_code == 0, result.output
    status = [line for line in result.stderr.splitlines() if "FPS | ms:" in line]
    assert len(status) >= 4
    assert all(f" {stage} " in status[-1] for stage in STAGES) and "dropped 0" in status[-1]
    assert len(json_lines(result.stdout)) == 5  # stdout stays JSON Lines only


def test_annotate_draws_grey_and_rgba_frames_too(photos):
    from tlx.runtime.annotate import draw

    rgb = photos[0]
    for frame in (rgb, rgb[:, :, 0], rgb[:, :, :1], np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])):
        out = draw(frame, ["label 0.99", "10.0 FPS"])
        assert out.shape == rgb.shape and out.dtype == np.uint8
        assert out[4, 4].max() < 60  # the caption box


class MJPEGCamera:
    """An IP camera on localhost: serves the photos as an MJPEG stream (multipart JPEG over
    HTTP, what network cameras send), one every 30 ms, then hangs up; `endless`: over and
    over until the client goes (a stream that is still running whenever a signal comes)."""

    def __init__(self, photos, endless: bool = False):
        import http.server
        import threading

        self.jpegs = [cv2.imencode(".jpg", cv2.cvtColor(p, cv2.COLOR_RGB2BGR))[1].tobytes() for p in photos]
        jpegs = self.jpegs

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    for jpeg in itertools.cycle(jpegs) if endless else jpegs:
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         b"%d\r\n\r\n" % len(jpeg) + jpeg + b"\r\n")
                        self.wfile.flush()
                        time.sleep(0.03)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading (--max-frames)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cam.mjpg"

    def frame(self, index: int) -> np.ndarray:
        """Frame `index` as a client decodes it (RGB)."""
        return cv2.cvtColor(cv2.imdecode(np.frombuffer(self.jpegs[index % len(self.jpegs)], np.uint8), cv2.IMREAD_COLOR),
                            cv2.COLOR_BGR2RGB)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_cli_url_stream_and_its_end(models, photos, clf):
    camera = MJPEGCamera(photos)
    try:
        result = invoke(models / "int8.tflite", camera.url, "--json", "--max-frames", "2")
        assert result.exit_code == 0, result.output
        assert len(json_lines(result.stdout)) == 2
        # The camera hangs up after its frames: an error, with every frame classified kept.
        result = invoke(models / "int8.tflite", camera.url, "--json")
        assert result.exit_code == 1
        assert f"{camera.url}: stopped delivering frames after {len(photos)}" in result.stderr
        records = json_lines(result.stdout)
        assert records and records[-1]["frame"] == len(photos) - 1
        for record in records:
            assert record["predictions"] == [p.to_json() for p in
                                             clf.classify(camera.frame(record["frame"]), top_k=3)]
        assert "Traceback" not in result.output
    finally:
        camera.close()


# --- --annotate never destroys data -------------------------------------------------------

def files_in(folder: Path) -> dict[str, bytes]:
    """Every file in `folder` (hidden temp files included) with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.is_symlink()}


def test_annotate_refuses_an_output_that_is_an_input_also_through_links(video, tmp_path):
    source = tmp_path / "a.mp4"
    source.write_bytes(video.read_bytes())
    (tmp_path / "symlink.mp4").symlink_to(source)
    os.link(source, tmp_path / "hardlink.mp4")
    (tmp_path / "folder_link").symlink_to(tmp_path)
    before = files_in(tmp_path)
    # No model file: any work before the check would fail on the model instead.
    no_model = tmp_path / "no_model.tflite"
    for args in [(source, "--annotate", source),
                 (source, "--annotate", source, "--overwrite"),
                 (source, "--annotate", tmp_path / "symlink.mp4", "--overwrite"),
                 (tmp_path / "symlink.mp4", "--annotate", source, "--overwrite"),
                 (source, "--annotate", tmp_path / "hardlink.mp4", "--overwrite"),
                 (source, "--annotate", tmp_path / "folder_link" / "a.mp4", "--overwrite")]:
        result = invoke(no_model, *args)
        assert result.exit_code == 1, (args, result.output)
        assert "is the input video" in result.stderr and "Traceback" not in result.output, args
        assert files_in(tmp_path) == before, args


#: Ways to name a file again: a symbolic link to it, a hard link, a path through a linked
#: folder, a path with "sub/.." in it.
ALIASES = ("symlink", "hardlink", "folder_link", "dotdot")


def alias(root: Path, path: Path, how: str, n: int) -> Path:
    """Another name for `path` (inside `root`), made on the disk."""
    if how == "symlink":
        link = root / f"link{n}.mp4"
        link.symlink_to(path)
        return link
    if how == "hardlink" and path.exists():
        link = root / f"hard{n}.mp4"
        os.link(path, link)
        return link
    if how == "folder_link":
        folder = root / f"folder{n}"
        folder.symlink_to(root, target_is_directory=True)
        return folder / path.relative_to(root)
    if how == "dotdot":
        return Path(f"{root}/sub/../{path.relative_to(root)}")
    return path  # no hard link to a file that does not exist


@settings(max_examples=80, deadline=None)
@given(names=st.lists(st.tuples(st.sampled_from(["in.mp4", "other.mp4", "new.mp4"]),
                                st.lists(st.sampled_from(ALIASES), max_size=3)),
                      min_size=2, max_size=2))
def test_an_input_is_recognised_under_any_of_its_names(names):
    """Property: the output is refused as an input exactly when both names lead to the same
    file, however many links and folder tricks lie between (new.mp4 does not exist)."""
    from tlx.runtime.annotate import check_output

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder).resolve()
        (root / "in.mp4").write_bytes(b"the input")
        (root / "other.mp4").write_bytes(b"another file")
        (root / "sub").mkdir()
        paths, counter = [], itertools.count()
        for base, hows in names:
            path = root / base
            for how in hows:
                path = alias(root, path, how, next(counter))
            paths.append(path)
        output, source = paths
        same = names[0][0] == names[1][0]
        if same:
            with pytest.raises(TlxError, match="is the input video"):
                check_output(output, inputs=[str(source)], overwrite=True)
        else:
            assert check_output(output, inputs=[str(source)], overwrite=True) == output


def test_annotate_with_several_sources_is_refused_before_any_work(video, tmp_path):
    a, b = tmp_path / "a.mp4", tmp_path / "b.avi"
    a.write_bytes(video.read_bytes())
    write_video(b, real_photos()[:2], fourcc="MJPG")
    before = files_in(tmp_path)
    for out in (b, tmp_path / "new.mp4"):  # the issue's `a.mp4 b.avi --annotate b.avi`, and a new name
        result = invoke(tmp_path / "no_model.tflite", a, b, "--annotate", out)
        assert result.exit_code == 2, result.output
        assert "for one source, not 2" in result.output and "once per source" in result.output
        assert files_in(tmp_path) == before


def test_annotate_keeps_an_existing_file_unless_overwrite(models, video, tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"the only copy of something")
    result = invoke(tmp_path / "no_model.tflite", video, "--annotate", out)
    assert result.exit_code == 1
    assert "already exists" in result.stderr and "--overwrite" in result.stderr
    assert files_in(tmp_path) == {"out.mp4": b"the only copy of something"}
    result = invoke(models / "int8.tflite", video, "--annotate", out, "--overwrite", "--max-frames", "3")
    assert result.exit_code == 0, result.output
    assert len(decoded_frames(out)) == 3 and list(files_in(tmp_path)) == ["out.mp4"]
    # --overwrite means nothing without --annotate.
    result = invoke(models / "int8.tflite", video, "--overwrite")
    assert result.exit_code == 2 and "--annotate" in result.output


def test_annotate_output_is_checked_before_any_work(video, tmp_path):
    (tmp_path / "folder.mp4").mkdir()
    no_model = tmp_path / "no_model.tflite"
    for out, message in [(tmp_path / "folder.mp4", "is a directory"),
                         (tmp_path / "missing" / "out.mp4", "does not exist; create it first"),
                         (tmp_path / "out.gif", "'.gif'")]:
        result = invoke(no_model, video, "--annotate", out)
        assert result.exit_code == 1, (out, result.output)
        assert message in result.stderr and "Traceback" not in result.output, (out, result.stderr)
    assert [p.name for p in tmp_path.iterdir()] == ["folder.mp4"]


@pytest.fixture
def small_disk(tmp_path):
    """A real filesystem of its own: a tmpfs mount (mount options as a function of the test)."""
    mounts = []

    def mount(options: str) -> Path:
        folder = tmp_path / f"disk{len(mounts)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
        mounts.append(folder)
        return folder

    yield mount
    for folder in mounts:
        subprocess.run(["umount", str(folder)], check=True)


def test_annotate_into_a_read_only_folder_is_refused_before_any_work(video, tmp_path, small_disk):
    folder = small_disk("ro,size=64k")
    result = invoke(tmp_path / "no_model.tflite", video, "--annotate", folder / "out.mp4")
    assert result.exit_code == 1
    assert "is not writable" in result.stderr and "Traceback" not in result.output


def test_a_full_disk_is_an_error_and_nothing_takes_the_name(models, photos, tmp_path, small_disk):
    disk = small_disk("size=64k")
    long_video = write_video(tmp_path / "long.mp4", photos, per_photo=40)  # 240 frames, ~0.5 MB annotated
    out = disk / "out.mp4"
    out.write_bytes(b"previous")
    result = invoke(models / "int8.tflite", long_video, "--annotate", out, "--overwrite")
    assert result.exit_code == 1, result.output
    assert "writing the annotated video failed" in result.stderr and "disk is full" in result.stderr
    assert "Wrote" not in result.stderr and "Traceback" not in result.output
    assert "240 frame(s) classified" in result.stderr  # the classification itself is reported
    assert files_in(disk) == {"out.mp4": b"previous"}  # the old file stays; no temp file is left


def test_a_video_that_does_not_verify_is_not_renamed(photos, tmp_path):
    from tlx.runtime.annotate import AnnotatedVideo, verify_video
    from tlx.runtime.stream import FrameResult
    from tlx.runtime.classifier import Prediction

    written = len(photos) * PER_PHOTO
    for suffix, fourcc in [(".mp4", "mp4v"), (".avi", "MJPG"), (".mkv", "mp4v"), (".mov", "mp4v")]:
        whole = write_video(tmp_path / f"whole{suffix}", photos, fourcc=fourcc)
        assert verify_video(whole, written) is None
        assert f"holds {written} of the {written + 1} frames" in verify_video(whole, written + 1)
        cut = tmp_path / f"cut{suffix}"  # what a full disk leaves: the first part
        cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
        problem = verify_video(cut, written)
        assert problem is not None and ("does not open" in problem or "holds" in problem
                                        or "does not decode" in problem), (suffix, problem)
        whole.unlink(), cut.unlink()
    # An output that appears while the video is written (another program) is not replaced.
    out = tmp_path / "late.mp4"
    result = FrameResult(0, 0.0, (Prediction(0, "cat", 0.9),), 1.0, 1.0, 1.0, 10.0, 0, photos[0])
    with pytest.raises(TlxError, match="appeared while the video was being written"):
        with AnnotatedVideo(out, 8.0) as video:
            video.write(result)
            out.write_bytes(b"theirs")
    assert files_in(tmp_path) == {"late.mp4": b"theirs"}


# --- Ctrl-C and SIGTERM ----------------------------------------------------------------------

#: Runs `tlx ARGS...` (the real entry point) with a signal sent from inside the work it
#: interrupts: HOOK names the point (none, an import, typer's set-up, the model load, the
#: opening of the source, the check of the finished video).
HARNESS = r"""
import os, signal, sys
hook, signame, args = sys.argv[1], sys.argv[2], sys.argv[3:]
signum, _, times = signame.partition("*")  # "SIGINT*2": two, back to back
signum = getattr(signal, signum)

def send():
    for _ in range(int(times or 1)):
        os.kill(os.getpid(), signum)

def before(module, name):
    original = getattr(module, name)
    def wrapper(*a, **k):
        send()
        return original(*a, **k)
    setattr(module, name, wrapper)

if hook.startswith("import:"):
    import importlib.abc
    wanted = hook.split(":", 1)[1]
    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == wanted:
                sys.meta_path.remove(self)
                send()
            return None
    sys.meta_path.insert(0, Finder())
elif hook == "model-load":
    from tlx.runtime import classifier
    load = classifier.Classifier.from_file.__func__
    def from_file(cls, *a, **k):
        send()
        return load(cls, *a, **k)
    classifier.Classifier.from_file = classmethod(from_file)
elif hook == "open-source":
    from tlx.runtime import stream
    before(stream, "open_source")
elif hook == "typer-eval":  # inside an eval() of a string, as typer reads annotations
    import typer.main
    params = typer.main.get_params_from_function
    def get_params(func):
        # The lambda's call is where Python runs the handler: still inside the eval().
        eval("(__import__('os').kill(__import__('os').getpid(), %d), (lambda: 0)())" % signum)
        return params(func)
    typer.main.get_params_from_function = get_params
elif hook == "verify":
    from tlx.runtime import annotate
    before(annotate, "verify_video")
sys.argv = ["tlx", *args]
from tlx.__main__ import main
if __name__ == "__main__":
    main()
"""


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("harness")
    (folder / "tlx_signal_harness.py").write_text(HARNESS)
    return folder


def tlx_process(harness: Path, hook: str, signame: str, *args) -> subprocess.Popen:
    # Run with -m, as `python -m tlx` is: CPython ends a -m run differently from -c (it
    # checks for an uncaught KeyboardInterrupt after the exit code was chosen).
    # Unbuffered bytes: readline() then takes exactly one line, and communicate() the rest
    # (a text-mode readline buffers ahead, and communicate() would never see those lines).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(harness)])}
    return subprocess.Popen([sys.executable, "-m", "tlx_signal_harness", hook, signame, *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0, env=env)


def finish(proc: subprocess.Popen, first: bytes = b"") -> tuple[str, str]:
    """stdout (after `first`) and stderr once the process ended; a process that does not end
    (it would read the endless stream for ever) is killed and the test fails."""
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return (first + stdout).decode(), stderr.decode()


@pytest.mark.parametrize("signame,code,message", [("SIGINT", 130, "Interrupted."),
                                                  ("SIGINT*2", 130, "Interrupted."),
                                                  ("SIGTERM", 143, "Terminated.")])
@pytest.mark.parametrize("hook", ["import:tlx.cli.predict_cmd", "typer-eval", "model-load", "open-source"])
def test_a_signal_during_start_up_is_a_clean_exit(models, video, harness, tmp_path, hook, signame, code,
                                                  message):
    out = tmp_path / "out" / "ann.mp4"
    out.parent.mkdir()
    proc = tlx_process(harness, hook, signame, "predict", models / "int8.tflite", video, "--annotate", out)
    stdout, stderr = finish(proc)
    assert proc.returncode == code, stderr  # -2 would be an end by SIGINT after the message
    assert message in stderr and "Traceback" not in stderr and stdout == ""
    assert list(out.parent.iterdir()) == []


@pytest.fixture
def endless_camera(photos):
    camera = MJPEGCamera(photos, endless=True)
    yield camera
    camera.close()


def stop_after_first_frame(proc: subprocess.Popen, *signals) -> tuple[list[dict], str]:
    """Wait until the process printed a classified frame, send `signals` back to back; its
    JSON lines and stderr once it ended."""
    first = proc.stdout.readline()
    assert first, finish(proc)[1]
    for signum in signals:
        proc.send_signal(signum)
    stdout, stderr = finish(proc, first)
    return json_lines(stdout), stderr


@pytest.mark.parametrize("signum,said", [(signal.SIGINT, "stopped by Ctrl-C"),
                                         (signal.SIGTERM, "stopped by SIGTERM")])
def test_ctrl_c_stops_cleanly_with_a_summary(models, endless_camera, harness, tmp_path, signum, said):
    # An endless stream: it is still running whenever the signal comes.
    out = tmp_path / "ann.mp4"
    proc = tlx_process(harness, "none", "SIGINT", "predict", models / "int8.tflite", endless_camera.url,
                       "--json", "--annotate", out)
    records, stderr = stop_after_first_frame(proc, signum)
    assert proc.returncode == 0, stderr
    assert said in stderr and "Traceback" not in stderr
    assert f"{len(records)} frame(s) classified" in stderr
    assert f"Wrote {len(records)} annotated frame(s)" in stderr
    assert len(decoded_frames(out)) == len(records)
    assert [p.name for p in tmp_path.iterdir()] == ["ann.mp4"]  # no temp file left


@pytest.mark.parametrize("hook", ["verify", "none"])
def test_a_second_ctrl_c_while_stopping_does_not_cut_the_cleanup_short(models, endless_camera, harness,
                                                                       tmp_path, hook):
    # "verify": the second Ctrl-C comes from inside the check of the finished video; "none":
    # two Ctrl-C back to back, wherever the second one lands.
    out = tmp_path / "ann.mp4"
    proc = tlx_process(harness, hook, "SIGINT", "predict", models / "int8.tflite", endless_camera.url,
                       "--json", "--annotate", out)
    signals = [signal.SIGINT] if hook == "verify" else [signal.SIGINT, signal.SIGINT]
    records, stderr = stop_after_first_frame(proc, *signals)
    assert proc.returncode == 0, stderr  # not killed by the signal (-2)
    assert "stopped by Ctrl-C" in stderr and "Traceback" not in stderr
    if hook == "verify":
        assert "Still stopping" in stderr
    assert len(decoded_frames(out)) == len(records)
    assert [p.name for p in tmp_path.iterdir()] == ["ann.mp4"]
