"""Check a .tflite file before a native interpreter sees it.

TFLite interpreters trust the FlatBuffer they are given: a truncated or corrupted file
can make them read out of bounds and kill the whole Python process. This module walks
the parts of the TFLite schema an interpreter follows (root table, subgraphs, tensors,
operators, operator codes, buffers) with tlx.runtime.flatbuffer's bounds-checked reader,
and turns anything wrong into a `ModelError` that names the file and the problem.

It also reads what the runtime needs before loading (input and output tensor shape,
type and quantization), which makes "not an image classifier" a clear message rather
than an interpreter error.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tlx.errors import TlxError
from tlx.runtime import tflite_tables
from tlx.runtime.flatbuffer import Corrupt, Reader, Table, buffer_size, operator_code, tensor_type

#: Anything smaller cannot hold a root offset, the identifier and a root table.
MIN_MODEL_BYTES = 16

#: A single tensor bigger than this is refused: no image classifier for a small device
#: needs it, and huge shapes from a corrupt file would make the interpreter try to
#: allocate them.
MAX_TENSOR_BYTES = 1 << 31

#: BuiltinOptions members whose vector kernels read (ReshapeOptions.newShape,
#: SqueezeOptions.squeezeDims): {union type value: (member table, vector field)}.
_OPTIONS_WITH_INT_VECTOR = {
    tflite_tables.ENUMS["BuiltinOptions"]["ReshapeOptions"]: ("ReshapeOptions", "newShape"),
    tflite_tables.ENUMS["BuiltinOptions"]["SqueezeOptions"]: ("SqueezeOptions", "squeezeDims"),
}
#: Builtin operator codes are far below this (schema.fbs has about 210).
_MAX_BUILTIN_CODE = 1024


class ModelError(TlxError):
    """A model file that is not a usable TFLite image classifier."""

    def __init__(self, source, reason: str):
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


@dataclass(frozen=True)
class TensorInfo:
    """What the runtime needs to know about an input or output tensor."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    #: Per-tensor quantization (scale, zero point); None for float tensors.
    quantization: tuple[float, int] | None
    #: The shape with -1 for each dimension only known when the model runs (None: all fixed).
    shape_signature: tuple[int, ...] | None = None


@dataclass(frozen=True)
class ModelInfo:
    """The result of a successful check."""

    size: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    num_subgraphs: int
    num_tensors: int
    num_operators: int


def validate_model(data: bytes, source="<model>") -> ModelInfo:
    """Check `data` is a structurally sound TFLite model and describe its inputs and outputs.

    Raises ModelError (a TlxError) with a readable reason otherwise. Does not check that the
    model is an image classifier: see `check_image_classifier`.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ModelError(source, f"model content must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) == 0:
        raise ModelError(source, "the file is empty (0 bytes)")
    if len(data) < MIN_MODEL_BYTES:
        raise ModelError(source, f"only {len(data)} bytes: too small to be a TFLite model")
    if data[4:8] != tflite_tables.FILE_IDENTIFIER:
        hint = ""
        if data[:2] == b"PK":
            hint = " (it is a zip archive; a Keras .keras file? export it with `tlx export` first)"
        elif data[:8] == b"\x89HDF\r\n\x1a\n":
            hint = " (it is an HDF5 file, probably Keras .h5 weights)"
        raise ModelError(source, "not a TFLite model: the 'TFL3' identifier is missing" + hint)
    try:
        return _walk(Reader(data), source)
    except Corrupt as exc:
        raise ModelError(source, f"corrupt or truncated TFLite model ({exc})") from None
    except (struct.error, OverflowError, MemoryError, RecursionError) as exc:
        raise ModelError(source, f"corrupt or truncated TFLite model ({exc})") from None


def _walk(r: Reader, source) -> ModelInfo:
    model = r.root()
    opcodes = model.tables("operatorCodes")
    for i, code in enumerate(opcodes):
        code.string("customCode")
        if not 0 <= operator_code(code) < _MAX_BUILTIN_CODE:
            raise Corrupt(f"operator_codes[{i}] has an invalid builtin code {operator_code(code)}")
    buffers = model.tables("buffers")
    buffer_sizes = [buffer_size(b) for b in buffers]
    subgraphs = model.tables("subgraphs")
    if not subgraphs:
        raise Corrupt("the model has no subgraphs")
    model.string("description")
    _check_indices(model.vector("metadataBuffer") or [], len(buffers), "metadata_buffer",
                   what_kind="buffer")
    for i, meta in enumerate(model.tables("metadata")):
        meta.string("name")
        if meta.scalar("buffer") >= len(buffers):
            raise Corrupt(f"metadata[{i}] uses a buffer out of range")
    tensor_counts = [len(sg.tables("tensors")) for sg in subgraphs]
    for i, sig in enumerate(model.tables("signatureDefs")):
        where = f"signature_defs[{i}]"
        sig.string("signatureKey")
        index = sig.scalar("subgraphIndex")
        if index >= len(subgraphs):
            raise Corrupt(f"{where} refers to subgraph {index} of {len(subgraphs)}")
        for name in ("inputs", "outputs"):
            for j, tmap in enumerate(sig.tables(name)):
                tmap.string("name")
                _check_indices([tmap.scalar("tensorIndex")], tensor_counts[index], f"{where}.{name}[{j}]")

    main_tensors = None
    num_tensors = num_operators = 0
    for s, subgraph in enumerate(subgraphs):
        where = f"subgraphs[{s}]"
        tensors = [_tensor(t, buffer_sizes) for t in subgraph.tables("tensors")]
        n = len(tensors)
        num_tensors += n
        for name in ("inputs", "outputs"):
            _check_indices(subgraph.vector(name) or [], n, f"{where}.{name}")
        subgraph.string("name")
        operators = subgraph.tables("operators")
        num_operators += len(operators)
        for o, op in enumerate(operators):
            what = f"{where}.operators[{o}]"
            index = op.scalar("opcodeIndex")
            if index >= len(opcodes):
                raise Corrupt(f"{what} uses operator code {index} of {len(opcodes)}")
            _options(op)
            for name in ("inputs", "outputs", "intermediates"):
                # -1 marks an optional input that is not given.
                _check_indices(op.vector(name) or [], n, f"{what}.{name}", allow_minus_one=True)
        if s == 0:
            main_tensors = tensors
            inputs = subgraph.vector("inputs") or []
            outputs = subgraph.vector("outputs") or []
    return ModelInfo(
        size=r.n,
        inputs=tuple(main_tensors[i] for i in inputs),
        outputs=tuple(main_tensors[i] for i in outputs),
        num_subgraphs=len(subgraphs),
        num_tensors=num_tensors,
        num_operators=num_operators,
    )


def _options(op: Table) -> None:
    """Operator fields besides inputs/outputs: option tables and byte vectors."""
    for field in ("builtinOptions", "builtinOptions2"):
        options = op.union(field, "")  # read as an opaque table: only its bounds matter
        if options is None:
            continue
        options.check_fields()
        member = _OPTIONS_WITH_INT_VECTOR.get(op.scalar("builtinOptionsType"))
        if field == "builtinOptions" and member is not None:
            op.union(field, member[0]).vector(member[1])
    for field in ("customOptions", "mutatingVariableInputs"):
        op.byte_span(field)
    offset, size = op.scalar("largeCustomOptionsOffset"), op.scalar("largeCustomOptionsSize")
    if offset > 1 and offset + size > op.r.n:
        raise Corrupt(f"{op.what}: large custom options point past the end of the file")


def _check_indices(indices, n, what, allow_minus_one=False, what_kind="tensor"):
    for i in indices:
        if not (0 <= i < n or (allow_minus_one and i == -1)):
            raise Corrupt(f"{what} refers to {what_kind} {i} of {n}")


def _tensor(t: Table, buffer_sizes: list[int]) -> TensorInfo:
    what = t.what
    shape = tuple(t.vector("shape") or ())
    signature = tuple(t.vector("shapeSignature") or ()) or None
    type_code = t.scalar("type")
    if tensor_type(type_code) is None:
        raise Corrupt(f"{what} has unknown type {type_code}")
    dtype, item = tensor_type(type_code)
    if any(d < 0 for d in shape) or len(shape) > 16:
        raise Corrupt(f"{what} has an invalid shape {shape}")
    elements = 1
    for d in shape:
        elements *= d
    if elements * max(item, 1) > MAX_TENSOR_BYTES:
        raise Corrupt(f"{what} of shape {shape} is implausibly large")
    buffer = t.scalar("buffer")
    if buffer >= len(buffer_sizes):
        raise Corrupt(f"{what} uses buffer {buffer} of {len(buffer_sizes)}")
    if item and buffer_sizes[buffer] not in (0, elements * item):
        raise Corrupt(f"{what}: buffer {buffer} holds {buffer_sizes[buffer]} bytes, "
                      f"shape {shape} of {dtype} needs {elements * item}")
    name = t.string("name") or ""
    quantization = None
    q = t.table("quantization")
    if q is not None:
        q.vector("min")
        q.vector("max")
        scales = q.vector("scale") or []
        zero_points = q.vector("zeroPoint") or []
        if scales and len(zero_points) != len(scales):
            # Interpreters read one zero point per scale without checking.
            raise Corrupt(f"{what}: {len(scales)} quantization scales but "
                          f"{len(zero_points)} zero points")
        dim = q.scalar("quantizedDimension")
        if len(scales) > 1 and not 0 <= dim < len(shape):
            raise Corrupt(f"{what}: quantized dimension {dim} outside shape {shape}")
        if len(scales) > 1 and shape and shape[dim] != len(scales):
            raise Corrupt(f"{what}: {len(scales)} scales for dimension {dim} of size {shape[dim]}")
        details = q.union("details", "")
        if details is not None:
            details.check_fields()
        if scales:
            quantization = (float(scales[0]), int(zero_points[0]))
    if t.ref("sparsity") is not None:
        raise Corrupt(f"{what} is sparse; sparse tensors are not supported by tlx")
    return TensorInfo(name=name, shape=shape, dtype=dtype, quantization=quantization,
                      shape_signature=signature)


#: Input tensor types the runtime can feed pixels to.
IMAGE_INPUT_TYPES = ("float32", "uint8", "int8")
#: Output tensor types the runtime can turn into scores.
SCORE_OUTPUT_TYPES = ("float32", "uint8", "int8")


def check_image_classifier(info: ModelInfo, source="<model>") -> None:
    """Raise ModelError unless the model takes one [1, H, W, 3] image and gives [1, N] scores."""
    if len(info.inputs) != 1:
        raise ModelError(source, f"the model has {len(info.inputs)} inputs; an image "
                                 "classifier has exactly one [1, height, width, 3] input")
    tensor = info.inputs[0]
    shape = tensor.shape
    if len(shape) != 4 or shape[0] != 1 or shape[3] != 3 or shape[1] < 1 or shape[2] < 1:
        raise ModelError(source, f"the input tensor '{tensor.name}' has shape {list(shape)}; "
                                 "expected a 4-D image tensor [1, height, width, 3]")
    if tensor.shape_signature is not None and any(d < 0 for d in tensor.shape_signature[1:]):
        # The interpreter reports such a model as [1, 1, 1, 3]: it would be fed 1x1 images.
        raise ModelError(source, f"the input tensor '{tensor.name}' has a dynamic shape "
                                 f"{list(tensor.shape_signature)}; tlx needs a fixed [1, height, width, 3] "
                                 "input (convert the model with a fixed input size)")
    if tensor.dtype not in IMAGE_INPUT_TYPES:
        raise ModelError(source, f"the input tensor is {tensor.dtype}; expected one of "
                                 f"{', '.join(IMAGE_INPUT_TYPES)}")
    if tensor.dtype != "float32" and tensor.quantization is None:
        raise ModelError(source, f"the {tensor.dtype} input tensor has no quantization parameters")
    if len(info.outputs) != 1:
        # Several outputs: which one holds the class scores is anyone's guess.
        raise ModelError(source, f"the model has {len(info.outputs)} outputs; an image classifier has "
                                 "exactly one [1, number_of_classes] output")
    out = info.outputs[0]
    count = 1
    for d in out.shape:
        count *= d
    if len(out.shape) not in (1, 2) or (len(out.shape) == 2 and out.shape[0] != 1) or count < 1:
        raise ModelError(source, f"the output tensor '{out.name}' has shape {list(out.shape)}; "
                                 "expected [1, number_of_classes]")
    if out.dtype not in SCORE_OUTPUT_TYPES:
        raise ModelError(source, f"the output tensor is {out.dtype}; expected one of "
                                 f"{', '.join(SCORE_OUTPUT_TYPES)}")
