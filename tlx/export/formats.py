"""The one format table: name -> FormatSpec. CLI choices, the converter settings and the
docs all read it, so adding a format is one entry here.

TensorFlow-free: `tlx --help` lists the choices without importing it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from tlx.errors import TlxError


class Quantization(str, enum.Enum):
    """What the converter does to weights and activations."""

    #: No optimization: float32 weights and activations.
    NONE = "none"
    #: float16 weights, float32 activations (dequantized at load, or run in fp16 on GPUs).
    FLOAT16 = "float16"
    #: int8 weights, float32 activations quantized on the fly per op ("dynamic range").
    DYNAMIC = "dynamic"
    #: int8 weights and activations, calibrated on training images (TFLITE_BUILTINS_INT8).
    INT8 = "int8"


@dataclass(frozen=True)
class FormatSpec:
    """One exportable format."""

    #: The `--format` value.
    name: str
    #: File name inside the export directory.
    filename: str
    #: How the converter quantizes (drives the converter settings in convert.py).
    quantization: Quantization
    #: One line for help texts and the README.
    description: str

    @property
    def needs_calibration(self) -> bool:
        """Full-integer quantization needs representative images to set activation ranges."""
        return self.quantization is Quantization.INT8


FORMATS: dict[str, FormatSpec] = {
    spec.name: spec
    for spec in (
        FormatSpec("float32", "model_float32.tflite", Quantization.NONE,
                   "float32 weights and math; the reference, largest file"),
        FormatSpec("float16", "model_float16.tflite", Quantization.FLOAT16,
                   "float16 weights (about half the size), float32 math on CPU"),
        FormatSpec("dynamic", "model_dynamic.tflite", Quantization.DYNAMIC,
                   "int8 weights, activations quantized at run time; no calibration"),
        FormatSpec("int8", "model_int8.tflite", Quantization.INT8,
                   "full-integer int8, uint8 pixels in (scale 1, zero point 0); calibrated on "
                   "training images; smallest and fastest on a Raspberry Pi"),
    )
}

#: What `tlx export` writes when no --format is given.
DEFAULT_FORMATS: tuple[str, ...] = ("float32", "int8")

#: CLI choices, generated from the table so the two can never disagree.
ExportFormat = enum.Enum("ExportFormat", {name.upper(): name for name in FORMATS}, type=str)


class OutputType(str, enum.Enum):
    """Output tensor type of the int8 model (the other formats always output float32)."""

    UINT8 = "uint8"
    INT8 = "int8"
    FLOAT32 = "float32"


def get_format(name: str) -> FormatSpec:
    try:
        return FORMATS[str(getattr(name, "value", name))]
    except KeyError:
        raise TlxError(f"Unknown export format {name!r}. Choose from: {', '.join(FORMATS)}.") from None


def is_int8_model(name: str) -> bool:
    """Whether a bench row's model name is a full-integer int8 export: the format name (the
    .tflite's stem without "model_"), optionally followed by " (backend)"."""
    spec = FORMATS.get(name.split(" (", 1)[0])
    return spec is not None and spec.quantization is Quantization.INT8


def describe_formats() -> str:
    """A help text listing every format."""
    return "; ".join(f"{spec.name}: {spec.description}" for spec in FORMATS.values())
