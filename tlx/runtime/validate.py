"""Check a .tflite file before a native interpreter sees it.

TFLite interpreters trust the FlatBuffer they are given: a truncated or corrupted file
can make them read out of bounds and kill the whole Python process. This module walks
the parts of the TFLite schema an interpreter follows (root table, subgraphs, tensors,
operators, operator codes, buffers) with every offset bounds-checked, and turns anything
wrong into a `ModelError` that names the file and the problem.

It is a hand-written reader on purpose: tflite-runtime does not ship the generated
schema module, and the runtime must not need the `flatbuffers` package. Field slots
follow tensorflow/lite/schema/schema.fbs (the slot numbers are stable by FlatBuffers'
compatibility rules).

It also reads what the runtime needs before loading (input and output tensor shape,
type and quantization), which makes "not an image classifier" a clear message rather
than an interpreter error.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tlx.errors import TlxError

#: Bytes 4..8 of every TFLite FlatBuffer.
FILE_IDENTIFIER = b"TFL3"

#: Anything smaller cannot hold a root offset, the identifier and a root table.
MIN_MODEL_BYTES = 16

#: A single tensor bigger than this is refused: no image classifier for a small device
#: needs it, and huge shapes from a corrupt file would make the interpreter try to
#: allocate them.
MAX_TENSOR_BYTES = 1 << 31

#: schema.fbs TensorType -> (name, bytes per element; 0 = variable or sub-byte).
TENSOR_TYPES = {
    0: ("float32", 4), 1: ("float16", 2), 2: ("int32", 4), 3: ("uint8", 1), 4: ("int64", 8),
    5: ("string", 0), 6: ("bool", 1), 7: ("int16", 2), 8: ("complex64", 8), 9: ("int8", 1),
    10: ("float64", 8), 11: ("complex128", 16), 12: ("uint64", 8), 13: ("resource", 0),
    14: ("variant", 0), 15: ("uint32", 4), 16: ("uint16", 2), 17: ("int4", 0),
    18: ("bfloat16", 2), 19: ("int2", 0), 20: ("uint4", 0), 21: ("float8_e4m3fn", 1),
    22: ("float8_e5m2", 1),
}

# Vtable slots (schema.fbs field order).
_MODEL_OPERATOR_CODES, _MODEL_SUBGRAPHS, _MODEL_BUFFERS = 1, 2, 4
_SUBGRAPH_TENSORS, _SUBGRAPH_INPUTS, _SUBGRAPH_OUTPUTS, _SUBGRAPH_OPERATORS = 0, 1, 2, 3
_TENSOR_SHAPE, _TENSOR_TYPE, _TENSOR_BUFFER, _TENSOR_NAME, _TENSOR_QUANT = 0, 1, 2, 3, 4
_TENSOR_SHAPE_SIGNATURE = 7
_TENSOR_SPARSITY, _TENSOR_VARIANT_TENSORS = 6, 9
_QUANT_MIN, _QUANT_MAX, _QUANT_SCALE, _QUANT_ZERO_POINT, _QUANT_DETAILS, _QUANT_DIMENSION = 0, 1, 2, 3, 5, 6
_OPERATOR_OPCODE, _OPERATOR_INPUTS, _OPERATOR_OUTPUTS, _OPERATOR_INTERMEDIATES = 0, 1, 2, 8
_OPERATOR_BUILTIN_OPTIONS_TYPE, _OPERATOR_BUILTIN_OPTIONS, _OPERATOR_CUSTOM_OPTIONS = 3, 4, 5
_OPERATOR_MUTATING_VARIABLE_INPUTS = 7
_OPERATOR_LARGE_CUSTOM_OFFSET, _OPERATOR_LARGE_CUSTOM_SIZE = 9, 10
_OPERATOR_BUILTIN_OPTIONS_2_TYPE, _OPERATOR_BUILTIN_OPTIONS_2 = 11, 12
_OPCODE_DEPRECATED_BUILTIN_CODE, _OPCODE_CUSTOM_CODE, _OPCODE_BUILTIN_CODE = 0, 1, 3
_MODEL_DESCRIPTION, _MODEL_METADATA_BUFFER, _MODEL_METADATA, _MODEL_SIGNATURE_DEFS = 3, 5, 6, 7
_SUBGRAPH_NAME = 4
#: BuiltinOptions union members whose first field is an int vector (ReshapeOptions.new_shape,
#: SqueezeOptions.squeeze_dims): kernels read them.
_OPTIONS_WITH_INT_VECTOR = (17, 30)
#: Builtin operator codes are far below this (schema.fbs has about 210).
_MAX_BUILTIN_CODE = 1024
_BUFFER_DATA, _BUFFER_OFFSET, _BUFFER_SIZE = 0, 1, 2


class ModelError(TlxError):
    """A model file that is not a usable TFLite image classifier."""

    def __init__(self, source, reason: str):
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


class _Corrupt(Exception):
    """Internal: a bounds or structure check failed (becomes ModelError)."""


@dataclass(frozen=True)
class TensorInfo:
    """What the runtime needs to know about an input or output tensor."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    #: Per-tensor quantization (scale, zero point); None for float tensors.
    quantization: tuple[float, int] | None


@dataclass(frozen=True)
class ModelInfo:
    """The result of a successful check."""

    size: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    num_subgraphs: int
    num_tensors: int
    num_operators: int


class _Reader:
    """Bounds-checked FlatBuffer primitives over a bytes object."""

    def __init__(self, data: bytes):
        self.data = data
        self.n = len(data)

    def _need(self, pos: int, size: int, what: str) -> None:
        if pos < 0 or size < 0 or pos + size > self.n:
            raise _Corrupt(f"{what} at byte {pos} (+{size}) is outside the file ({self.n} bytes)")

    def u8(self, pos: int) -> int:
        self._need(pos, 1, "byte")
        return self.data[pos]

    def i8(self, pos: int) -> int:
        self._need(pos, 1, "byte")
        return struct.unpack_from("<b", self.data, pos)[0]

    def u16(self, pos: int) -> int:
        self._need(pos, 2, "uint16")
        return struct.unpack_from("<H", self.data, pos)[0]

    def i32(self, pos: int) -> int:
        self._need(pos, 4, "int32")
        return struct.unpack_from("<i", self.data, pos)[0]

    def u32(self, pos: int) -> int:
        self._need(pos, 4, "uint32")
        return struct.unpack_from("<I", self.data, pos)[0]

    def u64(self, pos: int) -> int:
        self._need(pos, 8, "uint64")
        return struct.unpack_from("<Q", self.data, pos)[0]

    def deref(self, pos: int, what: str) -> int:
        """Follow a uoffset stored at `pos`."""
        target = pos + self.u32(pos)
        if target >= self.n:
            raise _Corrupt(f"{what}: offset points past the end of the file")
        return target

    def table(self, pos: int, what: str) -> "_Table":
        if pos % 4:
            raise _Corrupt(f"{what}: table at byte {pos} is misaligned")
        vtable = pos - self.i32(pos)
        if vtable % 2:
            raise _Corrupt(f"{what}: vtable at byte {vtable} is misaligned")
        vt_size = self.u16(vtable)
        table_size = self.u16(vtable + 2)
        if vt_size < 4 or vt_size % 2:
            raise _Corrupt(f"{what}: bad vtable size {vt_size}")
        self._need(vtable, vt_size, f"{what} vtable")
        if table_size < 4:
            raise _Corrupt(f"{what}: bad table size {table_size}")
        self._need(pos, table_size, what)
        return _Table(self, pos, vtable, vt_size, table_size, what)

    def vector(self, pos: int, elem_size: int, what: str) -> tuple[int, int]:
        """(start of elements, count) of a vector at `pos`."""
        if pos % 4:
            raise _Corrupt(f"{what}: vector at byte {pos} is misaligned")
        count = self.u32(pos)
        self._need(pos + 4, count * elem_size, what)
        return pos + 4, count

    def string(self, pos: int, what: str) -> str:
        start, count = self.vector(pos, 1, what)
        self._need(start, count + 1, what)  # the terminating zero
        try:  # interpreters hand names to Python, which decodes them strictly
            return bytes(self.data[start:start + count]).decode("utf-8")
        except UnicodeDecodeError:
            raise _Corrupt(f"{what} is not valid UTF-8") from None

    def int_vector(self, pos: int, what: str, fmt: str = "<i", size: int = 4) -> list[int]:
        start, count = self.vector(pos, size, what)
        return [struct.unpack_from(fmt, self.data, start + i * size)[0] for i in range(count)]


class _Table:
    def __init__(self, reader: _Reader, pos, vtable, vt_size, table_size, what):
        self.r, self.pos, self.vtable = reader, pos, vtable
        self.vt_size, self.table_size, self.what = vt_size, table_size, what

    def _field(self, slot: int, size: int) -> int | None:
        entry = 4 + 2 * slot
        if entry >= self.vt_size:
            return None
        offset = self.r.u16(self.vtable + entry)
        if offset == 0:
            return None
        if offset + size > self.table_size:
            raise _Corrupt(f"{self.what}: field {slot} lies outside its table")
        return self.pos + offset

    def check_fields(self) -> None:
        """Every field of the vtable lies inside the table (for tables read by kernels whose
        layout this reader does not spell out: their scalars are then in bounds)."""
        for entry in range(4, self.vt_size, 2):
            offset = self.r.u16(self.vtable + entry)
            if offset and offset >= self.table_size:
                raise _Corrupt(f"{self.what}: a field lies outside its table")

    def scalar(self, slot: int, fmt: str, default=0):
        size = struct.calcsize(fmt)
        pos = self._field(slot, size)
        if pos is None:
            return default
        self.r._need(pos, size, self.what)
        return struct.unpack_from(fmt, self.r.data, pos)[0]

    def ref(self, slot: int) -> int | None:
        """Position of the object a uoffset field points at, or None if absent."""
        pos = self._field(slot, 4)
        return None if pos is None else self.r.deref(pos, f"{self.what} field {slot}")

    def tables(self, slot: int, what: str) -> list["_Table"]:
        pos = self.ref(slot)
        if pos is None:
            return []
        start, count = self.r.vector(pos, 4, what)
        return [self.r.table(self.r.deref(start + 4 * i, what), f"{what}[{i}]") for i in range(count)]

    def ints(self, slot: int, what: str, fmt: str = "<i", size: int = 4) -> list[int] | None:
        pos = self.ref(slot)
        return None if pos is None else self.r.int_vector(pos, what, fmt, size)

    def floats(self, slot: int, what: str) -> list[float] | None:
        return self.ints(slot, what, "<f", 4)

    def string(self, slot: int, what: str) -> str | None:
        pos = self.ref(slot)
        return None if pos is None else self.r.string(pos, what)


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
    if data[4:8] != FILE_IDENTIFIER:
        hint = ""
        if data[:2] == b"PK":
            hint = " (it is a zip archive; a Keras .keras file? export it with `tlx export` first)"
        elif data[:8] == b"\x89HDF\r\n\x1a\n":
            hint = " (it is an HDF5 file, probably Keras .h5 weights)"
        raise ModelError(source, "not a TFLite model: the 'TFL3' identifier is missing" + hint)
    try:
        return _walk(_Reader(data), source)
    except _Corrupt as exc:
        raise ModelError(source, f"corrupt or truncated TFLite model ({exc})") from None
    except (struct.error, OverflowError, MemoryError, RecursionError) as exc:
        raise ModelError(source, f"corrupt or truncated TFLite model ({exc})") from None


def _walk(r: _Reader, source) -> ModelInfo:
    model = r.table(r.deref(0, "root offset"), "model")
    opcodes = model.tables(_MODEL_OPERATOR_CODES, "operator_codes")
    for i, code in enumerate(opcodes):
        code.string(_OPCODE_CUSTOM_CODE, f"operator_codes[{i}].custom_code")
        builtin = max(code.scalar(_OPCODE_BUILTIN_CODE, "<i"),
                      code.scalar(_OPCODE_DEPRECATED_BUILTIN_CODE, "<b"))
        if not 0 <= builtin < _MAX_BUILTIN_CODE:
            raise _Corrupt(f"operator_codes[{i}] has an invalid builtin code {builtin}")
    buffers = model.tables(_MODEL_BUFFERS, "buffers")
    buffer_sizes = [_buffer_size(r, b, i) for i, b in enumerate(buffers)]
    subgraphs = model.tables(_MODEL_SUBGRAPHS, "subgraphs")
    if not subgraphs:
        raise _Corrupt("the model has no subgraphs")
    model.string(_MODEL_DESCRIPTION, "description")
    _check_indices(model.ints(_MODEL_METADATA_BUFFER, "metadata_buffer") or [], len(buffers),
                   "metadata_buffer", what_kind="buffer")
    for i, meta in enumerate(model.tables(_MODEL_METADATA, "metadata")):
        meta.string(0, f"metadata[{i}].name")
        if meta.scalar(1, "<I") >= len(buffers):
            raise _Corrupt(f"metadata[{i}] uses a buffer out of range")
    tensor_counts = [len(sg.tables(_SUBGRAPH_TENSORS, f"subgraphs[{s}].tensors"))
                     for s, sg in enumerate(subgraphs)]
    for i, sig in enumerate(model.tables(_MODEL_SIGNATURE_DEFS, "signature_defs")):
        where = f"signature_defs[{i}]"
        sig.string(2, f"{where}.signature_key")
        index = sig.scalar(4, "<I")
        if index >= len(subgraphs):
            raise _Corrupt(f"{where} refers to subgraph {index} of {len(subgraphs)}")
        for slot, name in ((0, "inputs"), (1, "outputs")):
            for j, tmap in enumerate(sig.tables(slot, f"{where}.{name}")):
                tmap.string(0, f"{where}.{name}[{j}].name")
                _check_indices([tmap.scalar(1, "<I")], tensor_counts[index],
                               f"{where}.{name}[{j}]")

    main_tensors = None
    num_tensors = num_operators = 0
    for s, subgraph in enumerate(subgraphs):
        where = f"subgraphs[{s}]"
        tensors = [_tensor(t, f"{where}.tensors[{i}]", buffer_sizes)
                   for i, t in enumerate(subgraph.tables(_SUBGRAPH_TENSORS, f"{where}.tensors"))]
        n = len(tensors)
        num_tensors += n
        for slot, name in ((_SUBGRAPH_INPUTS, "inputs"), (_SUBGRAPH_OUTPUTS, "outputs")):
            _check_indices(subgraph.ints(slot, f"{where}.{name}") or [], n, f"{where}.{name}")
        subgraph.string(_SUBGRAPH_NAME, f"{where}.name")
        operators = subgraph.tables(_SUBGRAPH_OPERATORS, f"{where}.operators")
        num_operators += len(operators)
        for o, op in enumerate(operators):
            what = f"{where}.operators[{o}]"
            index = op.scalar(_OPERATOR_OPCODE, "<I")
            if index >= len(opcodes):
                raise _Corrupt(f"{what} uses operator code {index} of {len(opcodes)}")
            _options(op, what)
            for slot, name in ((_OPERATOR_INPUTS, "inputs"), (_OPERATOR_OUTPUTS, "outputs"),
                               (_OPERATOR_INTERMEDIATES, "intermediates")):
                # -1 marks an optional input that is not given.
                _check_indices(op.ints(slot, f"{what}.{name}") or [], n, f"{what}.{name}",
                               allow_minus_one=True)
        if s == 0:
            main_tensors = tensors
            inputs = subgraph.ints(_SUBGRAPH_INPUTS, "inputs") or []
            outputs = subgraph.ints(_SUBGRAPH_OUTPUTS, "outputs") or []
    return ModelInfo(
        size=r.n,
        inputs=tuple(main_tensors[i] for i in inputs),
        outputs=tuple(main_tensors[i] for i in outputs),
        num_subgraphs=len(subgraphs),
        num_tensors=num_tensors,
        num_operators=num_operators,
    )


def _options(op: _Table, what: str) -> None:
    """Operator fields besides inputs/outputs: option tables and byte vectors."""
    for slot, type_slot in ((_OPERATOR_BUILTIN_OPTIONS, _OPERATOR_BUILTIN_OPTIONS_TYPE),
                            (_OPERATOR_BUILTIN_OPTIONS_2, _OPERATOR_BUILTIN_OPTIONS_2_TYPE)):
        pos = op.ref(slot)
        if pos is None:
            continue
        options = op.r.table(pos, f"{what}.builtin_options")
        options.check_fields()
        kind = op.scalar(type_slot, "<B")
        if slot == _OPERATOR_BUILTIN_OPTIONS and kind in _OPTIONS_WITH_INT_VECTOR:
            options.ints(0, f"{what}.builtin_options vector")
    custom = op.ref(_OPERATOR_CUSTOM_OPTIONS)
    if custom is not None:
        op.r.vector(custom, 1, f"{what}.custom_options")
    mutating = op.ref(_OPERATOR_MUTATING_VARIABLE_INPUTS)
    if mutating is not None:
        op.r.vector(mutating, 1, f"{what}.mutating_variable_inputs")
    offset = op.scalar(_OPERATOR_LARGE_CUSTOM_OFFSET, "<Q")
    size = op.scalar(_OPERATOR_LARGE_CUSTOM_SIZE, "<Q")
    if offset > 1 and offset + size > op.r.n:
        raise _Corrupt(f"{what}: large custom options point past the end of the file")


def _buffer_size(r: _Reader, buffer: _Table, index: int) -> int:
    data = buffer.ref(_BUFFER_DATA)
    size = 0
    if data is not None:
        _, size = r.vector(data, 1, f"buffers[{index}].data")
    offset = buffer.scalar(_BUFFER_OFFSET, "<Q")
    length = buffer.scalar(_BUFFER_SIZE, "<Q")
    if offset > 1:  # models over 2 GB keep weights after the FlatBuffer
        if offset + length > r.n:
            raise _Corrupt(f"buffers[{index}] points past the end of the file")
        size = length
    return size


def _check_indices(indices, n, what, allow_minus_one=False, what_kind="tensor"):
    for i in indices:
        if not (0 <= i < n or (allow_minus_one and i == -1)):
            raise _Corrupt(f"{what} refers to {what_kind} {i} of {n}")


def _tensor(t: _Table, what: str, buffer_sizes: list[int]) -> TensorInfo:
    shape = tuple(t.ints(_TENSOR_SHAPE, f"{what}.shape") or ())
    t.ints(_TENSOR_SHAPE_SIGNATURE, f"{what}.shape_signature")
    type_code = t.scalar(_TENSOR_TYPE, "<b")
    if type_code not in TENSOR_TYPES:
        raise _Corrupt(f"{what} has unknown type {type_code}")
    dtype, item = TENSOR_TYPES[type_code]
    if any(d < 0 for d in shape) or len(shape) > 16:
        raise _Corrupt(f"{what} has an invalid shape {shape}")
    elements = 1
    for d in shape:
        elements *= d
    if elements * max(item, 1) > MAX_TENSOR_BYTES:
        raise _Corrupt(f"{what} of shape {shape} is implausibly large")
    buffer = t.scalar(_TENSOR_BUFFER, "<I")
    if buffer >= len(buffer_sizes):
        raise _Corrupt(f"{what} uses buffer {buffer} of {len(buffer_sizes)}")
    if item and buffer_sizes[buffer] not in (0, elements * item):
        raise _Corrupt(f"{what}: buffer {buffer} holds {buffer_sizes[buffer]} bytes, "
                       f"shape {shape} of {dtype} needs {elements * item}")
    name = t.string(_TENSOR_NAME, f"{what}.name") or ""
    quantization = None
    qpos = t.ref(_TENSOR_QUANT)
    if qpos is not None:
        q = t.r.table(qpos, f"{what}.quantization")
        q.floats(_QUANT_MIN, f"{what}.quantization.min")
        q.floats(_QUANT_MAX, f"{what}.quantization.max")
        scales = q.floats(_QUANT_SCALE, f"{what}.quantization.scale") or []
        zero_points = q.ints(_QUANT_ZERO_POINT, f"{what}.quantization.zero_point", "<q", 8) or []
        if scales and len(zero_points) != len(scales):
            # Interpreters read one zero point per scale without checking.
            raise _Corrupt(f"{what}: {len(scales)} quantization scales but "
                           f"{len(zero_points)} zero points")
        dim = q.scalar(_QUANT_DIMENSION, "<i")
        if len(scales) > 1 and not 0 <= dim < len(shape):
            raise _Corrupt(f"{what}: quantized dimension {dim} outside shape {shape}")
        if len(scales) > 1 and shape and shape[dim] != len(scales):
            raise _Corrupt(f"{what}: {len(scales)} scales for dimension {dim} of size {shape[dim]}")
        details = q.ref(_QUANT_DETAILS)
        if details is not None:
            q.r.table(details, f"{what}.quantization.details").check_fields()
        if scales:
            quantization = (float(scales[0]), int(zero_points[0]))
    if t.ref(_TENSOR_SPARSITY) is not None:
        raise _Corrupt(f"{what} is sparse; sparse tensors are not supported by tlx")
    return TensorInfo(name=name, shape=shape, dtype=dtype, quantization=quantization)


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
    if tensor.dtype not in IMAGE_INPUT_TYPES:
        raise ModelError(source, f"the input tensor is {tensor.dtype}; expected one of "
                                 f"{', '.join(IMAGE_INPUT_TYPES)}")
    if tensor.dtype != "float32" and tensor.quantization is None:
        raise ModelError(source, f"the {tensor.dtype} input tensor has no quantization parameters")
    if len(info.outputs) < 1:
        raise ModelError(source, "the model has no outputs")
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
