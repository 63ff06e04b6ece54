"""Live classification: video files, stream URLs and cameras (tlx.runtime.stream, `tlx predict`).

The videos are real: real photos (Tux Paint's, else scikit-image's) written with OpenCV's
VideoWriter, several frames per photo, decoded again by OpenCV. The camera path runs
through the same FrameSource interface with an injected source (CI has no camera).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.runtime_support import models_folder
from tlx.cli.app import app
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


def paced(frames, seconds: float):
    """Frames as a camera gives them: one every `seconds`."""
    for frame in frames:
        time.sleep(seconds)
        yield frame


class CameraLike(FrameSource):
    """An injected camera: live, real photos as frames, and a camera's end (an error)
    after the given frames, like a USB camera pulled out."""

    live = True
    name = "injected camera"

    def __init__(self, frames, delay: float = 0.0):
        self._frames = list(frames)
        self._delay = delay
        self._start = time.monotonic()
        self.closed = False

    def read(self):
        if not self._frames:
            return None
        time.sleep(self._delay)
        return self._frames.pop(0), time.monotonic() - self._start

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
    camera = CameraLike(photos, delay=0.02)
    results = []
    with pytest.raises(StreamError, match="stopped delivering frames after 6"):
        for result in clf.classify_stream(camera, top_k=3):
            results.append(result)
    # Every frame classified before the camera stopped is kept, and is the frame its index
    # says (a live source may drop frames when the machine stalls; the last one always comes).
    assert results[-1].index == len(photos) - 1 and len(results) >= len(photos) // 2
    for result in results:
        assert list(result.predictions) == clf.classify(photos[result.index], top_k=3)
    assert camera.closed


def test_a_slow_consumer_drops_live_frames_but_not_file_frames(clf, photos, video):
    live = CameraLike(photos * 10, delay=0.004)  # 60 frames at ~250 fps
    seen = []
    with pytest.raises(StreamError):
        for result in clf.classify_stream(live):
            seen.append(result)
            time.sleep(0.03)  # a model at ~30 FPS
    indices = [r.index for r in seen]
    assert indices == sorted(indices) and len(indices) < 40
    assert seen[-1].dropped > 0 and seen[-1].dropped + len(seen) <= 60
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
        assert record["predictions"] == [p.to_dict() for p in clf.classify(frame, top_k=2)]
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


def test_cli_camera_with_an_injected_source(models, photos, clf, monkeypatch):
    opened = []

    def open_camera(spec):
        opened.append(spec)
        return IterableSource(paced(photos, 0.02), name=f"camera {spec}", live=True)

    monkeypatch.setitem(sources_mod.SOURCES, "camera", open_camera)
    result = invoke(models / "int8.tflite", "--camera", "1", "--json")
    assert result.exit_code == 0, result.output
    assert opened == [sources_mod.CameraSpec(1, clf.camera_frame_size)]  # asked for what the model needs
    records = json_lines(result.stdout)
    # A live source drops frames the model has no time for (none at this pace, unless the
    # machine stalls): every record is the frame its index says.
    assert len(records) >= len(photos) // 2 and records[-1]["frame"] == len(photos) - 1
    for record in records:
        assert record["predictions"] == [p.to_dict() for p in
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


def test_ctrl_c_stops_cleanly_with_a_summary(models, photos, tmp_path):
    long_video = write_video(tmp_path / "long.mp4", photos, per_photo=40)  # 240 frames, 30 s at 8 fps
    out = tmp_path / "ann.mp4"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "tlx", "predict", str(models / "int8.tflite"),
                             str(long_video), "--realtime", "--annotate", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    first = proc.stdout.readline()  # the first classified frame
    assert "#0" in first
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "stopped by Ctrl-C" in stderr and "Traceback" not in stderr
    printed = 1 + len(stdout.splitlines())
    assert 1 < printed < 240
    assert len(decoded_frames(out)) == printed


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
    HTTP, what network cameras send), one every 30 ms, then hangs up."""

    def __init__(self, photos):
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
                    for jpeg in jpegs:
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
        return cv2.cvtColor(cv2.imdecode(np.frombuffer(self.jpegs[index], np.uint8), cv2.IMREAD_COLOR),
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
            assert record["predictions"] == [p.to_dict() for p in
                                             clf.classify(camera.frame(record["frame"]), top_k=3)]
        assert "Traceback" not in result.output
    finally:
        camera.close()
