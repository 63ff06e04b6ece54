"""`tlx inspect`: what is inside a .tflite file, without TensorFlow.

Operators and their counts (with the tensor type each one computes in, so a mixed int8/float
model from `--fallback auto` shows which ops stayed in float), the input and output tensors
with their quantization, the standard TFLite Metadata (labels, normalization, process units),
tlx's own tlx.json, and sizes.

The FlatBuffer is read with the bounds-checked reader of tlx.runtime.validate (the same one
that guards the interpreter), so a corrupt file is a clear ModelError, never a crash. The
standard metadata is decoded with tlx.metadata_schema, which needs the `flatbuffers` package
(ai-edge-litert depends on it); without it the rest is still reported.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from tlx.runtime import validate as _v
from tlx.runtime.model_metadata import associated_files, read_labels, read_tlx_metadata
from tlx.runtime.validate import ModelError, validate_model

#: schema.fbs BuiltinOperator names, indexed by code. Generated once from the BuiltinOperator
#: class of ai_edge_litert's schema_py_generated (2.3.0); a code past the end of this table
#: (a newer schema) is shown as "BUILTIN_<code>".
BUILTIN_OPERATORS = (
    'ADD', 'AVERAGE_POOL_2D', 'CONCATENATION', 'CONV_2D', 'DEPTHWISE_CONV_2D', 'DEPTH_TO_SPACE',
    'DEQUANTIZE', 'EMBEDDING_LOOKUP', 'FLOOR', 'FULLY_CONNECTED', 'HASHTABLE_LOOKUP',
    'L2_NORMALIZATION', 'L2_POOL_2D', 'LOCAL_RESPONSE_NORMALIZATION', 'LOGISTIC',
    'LSH_PROJECTION', 'LSTM', 'MAX_POOL_2D', 'MUL', 'RELU', 'RELU_N1_TO_1', 'RELU6', 'RESHAPE',
    'RESIZE_BILINEAR', 'RNN', 'SOFTMAX', 'SPACE_TO_DEPTH', 'SVDF', 'TANH', 'CONCAT_EMBEDDINGS',
    'SKIP_GRAM', 'CALL', 'CUSTOM', 'EMBEDDING_LOOKUP_SPARSE', 'PAD',
    'UNIDIRECTIONAL_SEQUENCE_RNN', 'GATHER', 'BATCH_TO_SPACE_ND', 'SPACE_TO_BATCH_ND',
    'TRANSPOSE', 'MEAN', 'SUB', 'DIV', 'SQUEEZE', 'UNIDIRECTIONAL_SEQUENCE_LSTM',
    'STRIDED_SLICE', 'BIDIRECTIONAL_SEQUENCE_RNN', 'EXP', 'TOPK_V2', 'SPLIT', 'LOG_SOFTMAX',
    'DELEGATE', 'BIDIRECTIONAL_SEQUENCE_LSTM', 'CAST', 'PRELU', 'MAXIMUM', 'ARG_MAX', 'MINIMUM',
    'LESS', 'NEG', 'PADV2', 'GREATER', 'GREATER_EQUAL', 'LESS_EQUAL', 'SELECT', 'SLICE', 'SIN',
    'TRANSPOSE_CONV', 'SPARSE_TO_DENSE', 'TILE', 'EXPAND_DIMS', 'EQUAL', 'NOT_EQUAL', 'LOG',
    'SUM', 'SQRT', 'RSQRT', 'SHAPE', 'POW', 'ARG_MIN', 'FAKE_QUANT', 'REDUCE_PROD',
    'REDUCE_MAX', 'PACK', 'LOGICAL_OR', 'ONE_HOT', 'LOGICAL_AND', 'LOGICAL_NOT', 'UNPACK',
    'REDUCE_MIN', 'FLOOR_DIV', 'REDUCE_ANY', 'SQUARE', 'ZEROS_LIKE', 'FILL', 'FLOOR_MOD',
    'RANGE', 'RESIZE_NEAREST_NEIGHBOR', 'LEAKY_RELU', 'SQUARED_DIFFERENCE', 'MIRROR_PAD', 'ABS',
    'SPLIT_V', 'UNIQUE', 'CEIL', 'REVERSE_V2', 'ADD_N', 'GATHER_ND', 'COS', 'WHERE', 'RANK',
    'ELU', 'REVERSE_SEQUENCE', 'MATRIX_DIAG', 'QUANTIZE', 'MATRIX_SET_DIAG', 'ROUND',
    'HARD_SWISH', 'IF', 'WHILE', 'NON_MAX_SUPPRESSION_V4', 'NON_MAX_SUPPRESSION_V5',
    'SCATTER_ND', 'SELECT_V2', 'DENSIFY', 'SEGMENT_SUM', 'BATCH_MATMUL',
    'PLACEHOLDER_FOR_GREATER_OP_CODES', 'CUMSUM', 'CALL_ONCE', 'BROADCAST_TO', 'RFFT2D',
    'CONV_3D', 'IMAG', 'REAL', 'COMPLEX_ABS', 'HASHTABLE', 'HASHTABLE_FIND', 'HASHTABLE_IMPORT',
    'HASHTABLE_SIZE', 'REDUCE_ALL', 'CONV_3D_TRANSPOSE', 'VAR_HANDLE', 'READ_VARIABLE',
    'ASSIGN_VARIABLE', 'BROADCAST_ARGS', 'RANDOM_STANDARD_NORMAL', 'BUCKETIZE',
    'RANDOM_UNIFORM', 'MULTINOMIAL', 'GELU', 'DYNAMIC_UPDATE_SLICE', 'RELU_0_TO_1',
    'UNSORTED_SEGMENT_PROD', 'UNSORTED_SEGMENT_MAX', 'UNSORTED_SEGMENT_SUM', 'ATAN2',
    'UNSORTED_SEGMENT_MIN', 'SIGN', 'BITCAST', 'BITWISE_XOR', 'RIGHT_SHIFT',
    'STABLEHLO_LOGISTIC', 'STABLEHLO_ADD', 'STABLEHLO_DIVIDE', 'STABLEHLO_MULTIPLY',
    'STABLEHLO_MAXIMUM', 'STABLEHLO_RESHAPE', 'STABLEHLO_CLAMP', 'STABLEHLO_CONCATENATE',
    'STABLEHLO_BROADCAST_IN_DIM', 'STABLEHLO_CONVOLUTION', 'STABLEHLO_SLICE',
    'STABLEHLO_CUSTOM_CALL', 'STABLEHLO_REDUCE', 'STABLEHLO_ABS', 'STABLEHLO_AND',
    'STABLEHLO_COSINE', 'STABLEHLO_EXPONENTIAL', 'STABLEHLO_FLOOR', 'STABLEHLO_LOG',
    'STABLEHLO_MINIMUM', 'STABLEHLO_NEGATE', 'STABLEHLO_OR', 'STABLEHLO_POWER',
    'STABLEHLO_REMAINDER', 'STABLEHLO_RSQRT', 'STABLEHLO_SELECT', 'STABLEHLO_SUBTRACT',
    'STABLEHLO_TANH', 'STABLEHLO_SCATTER', 'STABLEHLO_COMPARE', 'STABLEHLO_CONVERT',
    'STABLEHLO_DYNAMIC_SLICE', 'STABLEHLO_DYNAMIC_UPDATE_SLICE', 'STABLEHLO_PAD',
    'STABLEHLO_IOTA', 'STABLEHLO_DOT_GENERAL', 'STABLEHLO_REDUCE_WINDOW', 'STABLEHLO_SORT',
    'STABLEHLO_WHILE', 'STABLEHLO_GATHER', 'STABLEHLO_TRANSPOSE', 'DILATE',
    'STABLEHLO_RNG_BIT_GENERATOR', 'REDUCE_WINDOW', 'STABLEHLO_COMPOSITE',
    'STABLEHLO_SHIFT_LEFT', 'STABLEHLO_CBRT', 'STABLEHLO_CASE'
)

#: BuiltinOperator.CUSTOM: the op is named by its custom_code string.
_CUSTOM = 32

# schema.fbs slots the validator does not name (OperatorCode, Model, Metadata).
_OPCODE_DEPRECATED_BUILTIN, _OPCODE_VERSION, _OPCODE_BUILTIN = 0, 2, 3
_MODEL_VERSION, _MODEL_DESCRIPTION, _MODEL_METADATA = 0, 3, 6
_METADATA_NAME, _METADATA_BUFFER = 0, 1
# BuiltinOperator codes above 127 do not fit the deprecated int8 field, which then holds
# this placeholder (PLACEHOLDER_FOR_GREATER_OP_CODES) and the real code is in builtin_code.
_PLACEHOLDER_FOR_GREATER_OP_CODES = 127


def builtin_operator_name(code: int) -> str:
    """The schema name of a builtin operator code (e.g. 3 -> "CONV_2D")."""
    if 0 <= code < len(BUILTIN_OPERATORS):
        return BUILTIN_OPERATORS[code]
    return f"BUILTIN_{code}"


@dataclass(frozen=True)
class TensorDetail:
    """An input or output tensor of the main subgraph."""

    name: str
    shape: list[int]
    dtype: str
    #: Per-tensor (first) scale and zero point; None for float tensors.
    scale: float | None = None
    zero_point: int | None = None


@dataclass(frozen=True)
class OpCount:
    """One operator kind and how many times the model uses it."""

    op: str
    count: int
    #: How many of them compute in each type (the type of the op's first output), e.g.
    #: {"int8": 5, "float32": 1}: float entries in an int8 model are the float fallbacks.
    dtypes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelReport:
    """Everything `tlx inspect` shows; `to_dict` is its --json form."""

    path: str
    #: File size in bytes (FlatBuffer plus any appended associated-files zip).
    size: int
    #: Bytes of the FlatBuffer alone (size minus the appended zip).
    flatbuffer_size: int
    #: Bytes held by constant tensors (weights, biases, quantization tables).
    weights_size: int
    schema_version: int
    description: str
    num_subgraphs: int
    num_tensors: int
    num_operators: int
    ops: list[OpCount]
    inputs: list[TensorDetail]
    outputs: list[TensorDetail]
    #: Names of the model-level metadata entries (e.g. TFLITE_METADATA, min_runtime_version).
    metadata_entries: list[str]
    #: Files packed after the FlatBuffer (labels.txt, tlx.json).
    associated_files: list[str]
    labels: list[str] | None
    #: Input normalization from the standard metadata: {"mean": [...], "std": [...]}.
    normalization: dict | None
    #: The decoded TFLITE_METADATA (dict form of tlx.metadata_schema), or None.
    metadata: dict | None
    #: tlx's own tlx.json, or None.
    tlx: dict | None
    #: Things that could not be read (the rest of the report is still valid).
    notes: list[str] = field(default_factory=list)

    @property
    def quantized(self) -> bool:
        """True when any operator computes in an integer type."""
        return any(d in ("int8", "uint8", "int16") for op in self.ops for d in op.dtypes)

    @property
    def float_ops(self) -> int:
        """Ops computing in float32 (excluding QUANTIZE/DEQUANTIZE, which only convert)."""
        return sum(n for op in self.ops if op.op not in ("QUANTIZE", "DEQUANTIZE")
                   for d, n in op.dtypes.items() if d == "float32")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["quantized"] = self.quantized
        out["float_ops"] = self.float_ops
        return out


def inspect_model(path: str | os.PathLike) -> ModelReport:
    """Read and describe the .tflite at `path`; ModelError if it is not a sound TFLite model."""
    from tlx.runtime.classifier import read_model_file

    return inspect_bytes(read_model_file(path), source=str(path))


def inspect_bytes(data: bytes, source: str = "<model>") -> ModelReport:
    """Describe TFLite model bytes (see inspect_model)."""
    info = validate_model(data, source)  # every offset checked before the walk below
    data = bytes(data)
    notes: list[str] = []
    try:
        structure = _structure(_v._Reader(data))
    except (_v._Corrupt, ValueError, IndexError) as exc:  # validate_model passed: unlikely
        raise ModelError(source, f"corrupt or truncated TFLite model ({exc})") from None

    files = associated_files(data)
    flatbuffer_size = len(data)
    if files:
        flatbuffer_size = _zip_start(data) or len(data)

    metadata = None
    try:
        from tlx.metadata_schema import read_model_metadata

        metadata = read_model_metadata(data)
    except ImportError:
        notes.append("standard metadata not decoded: the 'flatbuffers' package is not installed "
                     "(pip install flatbuffers)")
    except Exception as exc:  # a damaged metadata buffer must not hide the rest
        notes.append(f"standard metadata could not be decoded ({exc})")

    labels = tlx_info = None
    try:
        labels = read_labels(data)
    except Exception as exc:
        notes.append(f"labels.txt could not be read ({exc})")
    try:
        tlx_info = read_tlx_metadata(data)
    except Exception as exc:
        notes.append(str(exc))

    return ModelReport(
        path=source,
        size=len(data),
        flatbuffer_size=flatbuffer_size,
        weights_size=structure["weights_size"],
        schema_version=structure["version"],
        description=structure["description"],
        num_subgraphs=info.num_subgraphs,
        num_tensors=info.num_tensors,
        num_operators=info.num_operators,
        ops=structure["ops"],
        inputs=[_detail(t) for t in info.inputs],
        outputs=[_detail(t) for t in info.outputs],
        metadata_entries=structure["metadata_entries"],
        associated_files=files,
        labels=labels,
        normalization=_normalization(metadata),
        metadata=metadata,
        tlx=tlx_info,
        notes=notes,
    )


def _detail(t: _v.TensorInfo) -> TensorDetail:
    scale, zero_point = t.quantization if t.quantization is not None else (None, None)
    return TensorDetail(name=t.name, shape=list(t.shape), dtype=t.dtype, scale=scale,
                        zero_point=zero_point)


def _structure(r: _v._Reader) -> dict:
    """Op kinds and counts, constant bytes and model-level fields (the file is already
    validated, so this walk only reads)."""
    model = r.table(r.deref(0, "root offset"), "model")
    names = []
    for i, code in enumerate(model.tables(_v._MODEL_OPERATOR_CODES, "operator_codes")):
        deprecated = code.scalar(_OPCODE_DEPRECATED_BUILTIN, "<b")
        builtin = code.scalar(_OPCODE_BUILTIN, "<i")
        # Old files set only the deprecated field; new ones both (or the placeholder).
        number = max(deprecated, builtin)
        if number == _CUSTOM:
            names.append(code.string(_v._OPCODE_CUSTOM_CODE, f"operator_codes[{i}].custom_code")
                         or "CUSTOM")
        else:
            names.append(builtin_operator_name(number))

    buffers = model.tables(_v._MODEL_BUFFERS, "buffers")
    buffer_sizes = [_v._buffer_size(r, b, i) for i, b in enumerate(buffers)]
    counts: dict[str, dict[str, int]] = {}
    constant_buffers: set[int] = set()
    for s, subgraph in enumerate(model.tables(_v._MODEL_SUBGRAPHS, "subgraphs")):
        tensors = subgraph.tables(_v._SUBGRAPH_TENSORS, f"subgraphs[{s}].tensors")
        types = []
        for tensor in tensors:
            type_code = tensor.scalar(_v._TENSOR_TYPE, "<b")
            types.append(_v.TENSOR_TYPES.get(type_code, (str(type_code), 0))[0])
            buffer = tensor.scalar(_v._TENSOR_BUFFER, "<I")
            if buffer and buffer_sizes[buffer]:
                constant_buffers.add(buffer)
        for o, op in enumerate(subgraph.tables(_v._SUBGRAPH_OPERATORS, f"subgraphs[{s}].operators")):
            name = names[op.scalar(_v._OPERATOR_OPCODE, "<I")]
            outputs = [i for i in (op.ints(_v._OPERATOR_OUTPUTS, "outputs") or []) if i >= 0]
            dtype = types[outputs[0]] if outputs else "none"
            by_type = counts.setdefault(name, {})
            by_type[dtype] = by_type.get(dtype, 0) + 1

    entries = []
    for i, entry in enumerate(model.tables(_MODEL_METADATA, "metadata")):
        entries.append(entry.string(_METADATA_NAME, f"metadata[{i}].name") or "")
        buffer = entry.scalar(_METADATA_BUFFER, "<I")
        constant_buffers.discard(buffer)

    ops = [OpCount(op=name, count=sum(by_type.values()), dtypes=dict(sorted(by_type.items())))
           for name, by_type in counts.items()]
    ops.sort(key=lambda o: (-o.count, o.op))
    return {
        "ops": ops,
        "weights_size": sum(buffer_sizes[b] for b in constant_buffers),
        "version": model.scalar(_MODEL_VERSION, "<I"),
        "description": model.string(_MODEL_DESCRIPTION, "description") or "",
        "metadata_entries": entries,
    }


def _zip_start(data: bytes) -> int | None:
    """Offset of the first local file header of the appended zip (the end of the FlatBuffer)."""
    import io
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            offsets = [i.header_offset for i in archive.infolist()]
    except zipfile.BadZipFile:
        return None
    return min(offsets) if offsets else None


def _normalization(metadata: dict | None) -> dict | None:
    try:
        tensor = metadata["subgraph_metadata"][0]["input_tensor_metadata"][0]
    except (TypeError, KeyError, IndexError):
        return None
    for unit in tensor.get("process_units", []):
        if unit.get("options_type") == "NormalizationOptions":
            options = unit.get("options", {})
            return {"mean": options.get("mean", []), "std": options.get("std", [])}
    return None


def format_report(report: ModelReport) -> str:
    """The human-readable form of a report (what `tlx inspect` prints without --json)."""
    lines = [f"{report.path}",
             f"  size         {_human(report.size)} ({report.size} bytes; FlatBuffer "
             f"{_human(report.flatbuffer_size)}, constants {_human(report.weights_size)})",
             f"  schema       version {report.schema_version}"
             + (f", {report.description}" if report.description else ""),
             f"  graph        {report.num_subgraphs} subgraph(s), {report.num_operators} ops, "
             f"{report.num_tensors} tensors"
             + (f"; {report.float_ops} op(s) in float" if report.quantized else ""),
             "", "Inputs"]
    lines += [_tensor_line(t) for t in report.inputs]
    lines += ["", "Outputs"]
    lines += [_tensor_line(t) for t in report.outputs]
    lines += ["", "Operators"]
    width = max([4] + [len(op.op) for op in report.ops])
    for op in report.ops:
        types = ", ".join(f"{n} {d}" for d, n in op.dtypes.items())
        lines.append(f"  {op.op:<{width}}  {op.count:>4}  ({types})")
    lines += ["", "Metadata"]
    if report.metadata is not None:
        md = report.metadata
        for key in ("name", "version", "author", "description"):
            if md.get(key):
                lines.append(f"  {key:<13}{md[key]}")
        if report.normalization is not None:
            lines.append(f"  normalization mean {report.normalization['mean']} "
                         f"std {report.normalization['std']}")
        for unit_kind, units in _process_units(md):
            lines.append(f"  {unit_kind:<13}{units}")
    else:
        lines.append("  no standard TFLite Metadata")
    if report.metadata_entries:
        lines.append(f"  entries      {', '.join(report.metadata_entries)}")
    if report.associated_files:
        lines.append(f"  files        {', '.join(report.associated_files)}")
    if report.labels is not None:
        shown = ", ".join(report.labels[:10]) + (", ..." if len(report.labels) > 10 else "")
        lines.append(f"  labels       {len(report.labels)}: {shown}")
    if report.tlx is not None:
        lines += ["", "tlx.json"]
        for key, value in report.tlx.items():
            if key == "labels":
                continue
            lines.append(f"  {key:<13}{value}")
    for note in report.notes:
        lines.append(f"Note: {note}")
    return "\n".join(lines)


def _process_units(md: dict):
    for graph in md.get("subgraph_metadata", []):
        for side in ("input_tensor_metadata", "output_tensor_metadata"):
            for tensor in graph.get(side, []):
                units = [u.get("options_type") for u in tensor.get("process_units", [])]
                if units:
                    yield f"{tensor.get('name', side)} units", ", ".join(units)


def _tensor_line(t: TensorDetail) -> str:
    quant = f"  scale {t.scale:.6g} zero point {t.zero_point}" if t.scale is not None else ""
    return f"  {t.name or '(unnamed)'}  {t.shape}  {t.dtype}{quant}"


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
