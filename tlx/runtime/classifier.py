"""`Classifier`: a .tflite image classifier run with numpy, pillow and one interpreter.

Pixels come from `tlx.imaging.load_image`, the same function the trainer and the
exporter's calibration use, with the preprocessing version the model's tlx.json names
(version 1 for models without it), so the device sees the pixels the model was trained on.
Labels and tlx information come from the metadata zip appended to the model file;
input size and quantization come from the model's own tensors.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from tlx.errors import TlxError
from tlx.imaging import ImageInput, check_version, is_image_file, load_image, version_of
from tlx.runtime import backends
from tlx.runtime.validate import ModelError, check_image_classifier, validate_model

#: JPEG files are recognised by their first bytes, not their suffix.
_JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass(frozen=True)
class Prediction:
    """One class and its score."""

    #: Position in the model's output vector.
    index: int
    #: Class name from the model's labels, or None for a model without labels.
    label: str | None
    #: Probability (dequantized for quantized outputs), 0..1 for a softmax head.
    score: float

    @property
    def name(self) -> str:
        """The label, or the index as text when the model has no labels."""
        return self.label if self.label is not None else str(self.index)

    def to_json(self) -> dict:
        return {"index": self.index, "label": self.label, "score": self.score}


@dataclass(frozen=True)
class FileResult:
    """The outcome for one file of `Classifier.classify_files`: predictions or an error."""

    path: str
    predictions: tuple[Prediction, ...] | None = None
    error: TlxError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict:
        if self.error is not None:
            reason = getattr(self.error, "reason", None) or str(self.error)
            return {"path": self.path, "error": reason}
        return {"path": self.path, "predictions": [p.to_json() for p in self.predictions]}


class Classifier:
    """A TFLite image classifier. Not thread-safe: use one per thread.

    >>> clf = Classifier.from_file("model_int8.tflite", num_threads=4)
    >>> clf.classify("cat.jpg", top_k=3)[0].label
    """

    def __init__(self, model: bytes, *, num_threads: int | None = None,
                 backend: str | None = None, source: str = "<model>",
                 fast_decode: bool = False):
        """Load model bytes. See `from_file` for the arguments.

        `fast_decode` matters for models trained with preprocessing version 1 (the exact
        path; models exported before versions existed): it decodes large JPEGs at a reduced
        scale (JPEG DCT scaling, never below the model's input size) before the shared
        resize: several times faster for camera photos, with pixels close to, not identical
        with, what the model was trained on (tested: mean absolute difference under 2 levels
        of 255). Version 2 models always reduce in the decoder the same way (never below the
        input size): they were trained so, it is exact for them and the flag changes nothing.
        """
        self.source = str(source)
        info = validate_model(model, self.source)
        check_image_classifier(info, self.source)
        self.model_info = info
        self.backend, self._interpreter = backends.create_interpreter(model, num_threads, backend)
        self.num_threads = num_threads
        self.fast_decode = fast_decode

        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        _, height, width, _ = (int(d) for d in self._input["shape"])
        #: (height, width) the model takes.
        self.input_size = (height, width)
        self.input_dtype = np.dtype(self._input["dtype"])
        self.output_dtype = np.dtype(self._output["dtype"])
        self.input_quantization = _quantization(self._input)
        self.output_quantization = _quantization(self._output)
        self._to_input = _input_converter(self.input_dtype, self.input_quantization, self.source)
        self.num_classes = int(np.prod(self._output["shape"]))

        from tlx.runtime.associated_files import read_labels, read_tlx_metadata
        try:
            #: The exporter's tlx.json (dict), or None for a model without tlx metadata.
            self.metadata = read_tlx_metadata(model)
            labels = read_labels(model)
        except TlxError:
            raise
        except Exception as exc:  # a damaged metadata zip must not hide the model
            raise ModelError(self.source, f"unreadable metadata ({exc})") from None
        if labels is not None and len(labels) != self.num_classes:
            raise ModelError(self.source, f"the model has {self.num_classes} outputs but its "
                                          f"labels list {len(labels)} classes")
        #: Class names, or None when the model carries none.
        self.labels: list[str] | None = list(labels) if labels is not None else None
        #: tlx.imaging preprocessing version the model was trained with.
        self.preprocessing = check_version(version_of(self.metadata), self.source)

    @classmethod
    def from_file(cls, path: str | os.PathLike, num_threads: int | None = None,
                  backend: str | None = None, fast_decode: bool = False) -> "Classifier":
        """Load a .tflite file.

        `num_threads`: interpreter threads (None: the backend's default).
        `backend`: 'litert', 'tflite-runtime' or 'tensorflow'; None or 'auto' takes the first
        installed of ai-edge-litert and tflite-runtime (TensorFlow only when named).
        Raises ModelError / TlxError with a readable message for a bad file or setup.
        """
        return cls(read_model_file(path), num_threads=num_threads, backend=backend,
                   source=str(path), fast_decode=fast_decode)

    def __repr__(self) -> str:
        return (f"Classifier({self.source!r}, backend={self.backend!r}, "
                f"input={self.input_size[0]}x{self.input_size[1]} {self.input_dtype}, "
                f"classes={self.num_classes})")

    # --- the pipeline, step by step ---------------------------------------------------

    def preprocess(self, image: ImageInput) -> np.ndarray:
        """uint8 RGB pixels (height, width, 3) at the model's input size, via load_image with
        the model's preprocessing version."""
        if self.fast_decode and self.preprocessing == 1 and isinstance(image, (str, os.PathLike)):
            pixels = _load_jpeg_reduced(image, self.input_size)
            if pixels is not None:
                return pixels
        return load_image(image, self.input_size, version=self.preprocessing)

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """Scores (float32, one per class) for preprocessed uint8 pixels."""
        try:
            self._interpreter.set_tensor(self._input["index"], self._to_input(pixels)[np.newaxis])
            self._interpreter.invoke()
            raw = self._interpreter.get_tensor(self._output["index"]).reshape(-1)
        except (RuntimeError, ValueError) as exc:
            raise ModelError(self.source, f"the {self.backend} interpreter cannot run the model: "
                                          f"{backends.interpreter_message(exc)}") from None
        if self.output_quantization is not None:
            scale, zero_point = self.output_quantization
            return (raw.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)
        scores = raw.astype(np.float32, copy=False)
        if not np.isfinite(scores).all():
            # A NaN has no rank: reporting a "top" class for it would be a made-up answer.
            raise ModelError(self.source, "the model's output holds NaN or infinite scores for this image")
        return scores

    def top(self, scores: np.ndarray, top_k: int | None = 5) -> list[Prediction]:
        """The `top_k` best classes (all for None), highest score first; ties by index."""
        order = np.argsort(-scores, kind="stable")
        if top_k is not None:
            if top_k < 1:
                raise TlxError(f"top_k must be 1 or more, not {top_k}")
            order = order[:top_k]
        labels = self.labels
        return [Prediction(int(i), labels[i] if labels is not None else None, float(scores[i]))
                for i in order]

    # --- the API ----------------------------------------------------------------------

    def classify(self, image: ImageInput, top_k: int | None = 5) -> list[Prediction]:
        """Classify one image (path, encoded bytes, PIL image or uint8 array).

        Raises ImageError for an unusable image.
        """
        return self.top(self.run(self.preprocess(image)), top_k)

    def classify_files(self, paths: Iterable[str | os.PathLike],
                       top_k: int | None = 5) -> Iterator[FileResult]:
        """Classify many files; a file that fails gives a FileResult with its error and the
        rest go on. Directories expand to the image files inside them (sorted, recursive)."""
        for path in expand_paths(paths):
            try:
                yield FileResult(str(path), predictions=tuple(self.classify(path, top_k)))
            except TlxError as exc:
                yield FileResult(str(path), error=exc)

    def classify_stream(self, source, every: int = 1, top_k: int | None = 5,
                        camera_size: tuple[int, int] | None = None, **options):
        """Classify frames as they arrive; iterate to get one `FrameResult` per frame.

        `source`: a video file, an rtsp:// or http:// URL, a camera index or /dev/videoN
        (OpenCV: the `camera` extra), 'picamera2', or any iterable of uint8 HxWx3 RGB arrays.
        `every`: classify every Nth frame. `camera_size`: (width, height) to ask a camera for;
        None: `camera_frame_size`, what this model needs. `options`: the other `StreamConfig`
        fields (max_frames, duration, realtime). See tlx.runtime.stream.
        """
        from tlx.runtime.sources import open_source
        from tlx.runtime.stream import FrameStream, StreamConfig

        config = StreamConfig(every=every, top_k=top_k, **options)
        return FrameStream(self, open_source(source, camera_size=camera_size or self.camera_frame_size),
                           config)

    @property
    def camera_frame_size(self) -> tuple[int, int]:
        """(width, height) a camera is asked for by default: twice the model's input in each
        direction at least, 4:3 (448x320 for a 160 px model): no more pixels than preprocessing
        uses, so the camera (the Pi's ISP, or a USB camera's smallest such mode) does the
        reduction and the CPU copies a small frame."""
        from tlx.runtime.sources import camera_frame_size

        return camera_frame_size(self.input_size)

    def close(self) -> None:
        """Release the interpreter (also happens when the object is garbage collected)."""
        self._interpreter = None

    def __enter__(self) -> "Classifier":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_model_file(path: str | os.PathLike) -> bytes:
    """The bytes of a model file, with readable errors."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ModelError(path, "no such file") from None
    except IsADirectoryError:
        raise ModelError(path, "is a directory, not a .tflite file") from None
    except OSError as exc:
        raise ModelError(path, f"cannot read ({exc.strerror or exc})") from None


def expand_paths(paths: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """Files as given (in order); directories replaced by their image files, sorted."""
    for path in paths:
        path = Path(path)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
        else:
            yield path


def _quantization(details: dict) -> tuple[float, int] | None:
    dtype = np.dtype(details["dtype"])
    if dtype.kind == "f":
        return None
    scale, zero_point = details.get("quantization", (0.0, 0))
    return (float(scale), int(zero_point))


def _input_converter(dtype: np.dtype, quantization, source):
    """A function uint8 pixels -> the input tensor's dtype, using the tensor's own
    scale and zero point for quantized inputs."""
    if dtype == np.float32:
        return lambda pixels: pixels.astype(np.float32)
    if dtype not in (np.uint8, np.int8):
        raise ModelError(source, f"input tensor type {dtype} is not supported")
    scale, zero_point = quantization
    if scale <= 0:
        raise ModelError(source, f"the {dtype} input tensor has no quantization scale")
    if scale == 1.0 and dtype == np.uint8 and zero_point == 0:
        return lambda pixels: pixels  # the exporter's contract: raw pixels, no arithmetic
    if scale == 1.0 and dtype == np.int8 and zero_point == -128:
        return lambda pixels: (pixels ^ np.uint8(0x80)).view(np.int8)  # x - 128, exactly
    info = np.iinfo(dtype)

    def convert(pixels):
        q = np.rint(pixels.astype(np.float32) / np.float32(scale) + np.float32(zero_point))
        return np.clip(q, info.min, info.max).astype(dtype)
    return convert


def _load_jpeg_reduced(path, size: tuple[int, int]) -> np.ndarray | None:
    """A JPEG decoded at the smallest DCT scale still at least the target size in both
    directions (whatever the EXIF rotation), then through load_image; None if not a JPEG
    or on any problem (the caller then takes the normal path, with its normal errors)."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            if f.read(3) != _JPEG_MAGIC:
                return None
        image = Image.open(path)
        side = max(size)
        image.draft(None, (side, side))
        return load_image(image, size, version=1)
    except Exception:
        return None


# --- crash isolation ---------------------------------------------------------------------

_PROBE = (
    "import sys\n"
    "from tlx.errors import TlxError\n"
    "from tlx.runtime.classifier import Classifier\n"
    "try:\n"
    "    c = Classifier.from_file(sys.argv[1], backend=sys.argv[2] or None, num_threads=1)\n"
    "    c.run(__import__('numpy').zeros(c.input_size + (3,), 'uint8'))\n"
    "except TlxError as e:\n"
    "    print(e); sys.exit(1)\n"
)


@dataclass(frozen=True)
class ProbeResult:
    """What happened when a child process loaded a model and ran it once."""

    #: 'ok', 'error' (a clear TlxError), 'crash' (killed by a signal), 'exception'
    #: (a Python traceback: a bug) or 'timeout'.
    outcome: str
    message: str = ""
    returncode: int | None = None


def probe_model(path: str | os.PathLike, backend: str | None = None,
                timeout: float = 60.0) -> ProbeResult:
    """Load and run `path` once in a child Python, so a crash in native code cannot take
    the caller down. Used before trusting an unknown file, and by the fuzz test."""
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE, str(path), backend or ""],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return ProbeResult("timeout", f"no answer within {timeout:g} s")
    if proc.returncode == 0:
        return ProbeResult("ok", returncode=0)
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        return ProbeResult("crash", f"the interpreter crashed ({name})", proc.returncode)
    if proc.returncode == 1 and "Traceback" not in proc.stderr:
        return ProbeResult("error", proc.stdout.strip(), 1)
    return ProbeResult("exception", (proc.stderr or proc.stdout).strip()[-2000:], proc.returncode)


def check_model_isolated(path: str | os.PathLike, backend: str | None = None) -> None:
    """Raise ModelError if loading `path` fails or crashes in a child process."""
    result = probe_model(path, backend)
    if result.outcome == "ok":
        return
    if result.outcome == "error":
        raise TlxError(result.message)
    raise ModelError(path, result.message.splitlines()[-1] if result.message else result.outcome)
