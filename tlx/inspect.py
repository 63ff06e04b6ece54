"""`tlx inspect`: what is inside a .tflite file, without TensorFlow.

Operators and their counts (with the tensor type each one computes in, so a mixed int8/float
model from `--fallback auto` shows which ops stayed in float), the input and output tensors
with their quantization, the standard TFLite Metadata (labels, normalization, process units),
tlx's own tlx.json, and sizes.

The FlatBuffer is read with tlx.runtime.flatbuffer, the bounds-checked reader that also
guards the interpreter, after tlx.runtime.validate has checked the whole file, so a corrupt
file is a clear ModelError, never a crash. Operator names come from the generated schema
module (tlx.runtime.tflite_tables); the standard metadata is decoded by tlx.metadata_codec.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from tlx.runtime import flatbuffer
from tlx.runtime.associated_files import associated_files, read_labels, read_tlx_metadata
from tlx.runtime.validate import ModelError, TensorInfo, validate_model
from tlx.text import printable


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
    """Everything `tlx inspect` shows; `to_json` is its --json form."""

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
    #: The decoded TFLITE_METADATA (dict form of tlx.metadata_codec), or None.
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

    def to_json(self) -> dict:
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
        structure = _structure(flatbuffer.Reader(data))
    except (flatbuffer.Corrupt, ValueError, IndexError) as exc:  # validate_model passed: unlikely
        raise ModelError(source, f"corrupt or truncated TFLite model ({exc})") from None

    files = associated_files(data)
    flatbuffer_size = len(data)
    if files:
        flatbuffer_size = _zip_start(data) or len(data)

    metadata = None
    try:
        from tlx.metadata_codec import read_model_metadata

        metadata = read_model_metadata(data)
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


def _detail(t: TensorInfo) -> TensorDetail:
    scale, zero_point = t.quantization if t.quantization is not None else (None, None)
    return TensorDetail(name=t.name, shape=list(t.shape), dtype=t.dtype, scale=scale,
                        zero_point=zero_point)


def _structure(r: flatbuffer.Reader) -> dict:
    """Op kinds and counts, constant bytes and model-level fields (the file is already
    validated, so this walk only reads)."""
    model = r.root()
    names = [flatbuffer.operator_name(code) for code in model.tables("operatorCodes")]
    buffer_sizes = [flatbuffer.buffer_size(b) for b in model.tables("buffers")]
    counts: dict[str, dict[str, int]] = {}
    constant_buffers: set[int] = set()
    for subgraph in model.tables("subgraphs"):
        types = []
        for tensor in subgraph.tables("tensors"):
            types.append(flatbuffer.tensor_type(tensor.scalar("type"))[0])
            buffer = tensor.scalar("buffer")
            if buffer and buffer_sizes[buffer]:
                constant_buffers.add(buffer)
        for op in subgraph.tables("operators"):
            name = names[op.scalar("opcodeIndex")]
            outputs = [i for i in (op.vector("outputs") or []) if i >= 0]
            dtype = types[outputs[0]] if outputs else "none"
            by_type = counts.setdefault(name, {})
            by_type[dtype] = by_type.get(dtype, 0) + 1

    entries = []
    for entry in model.tables("metadata"):
        entries.append(entry.string("name") or "")
        constant_buffers.discard(entry.scalar("buffer"))

    ops = [OpCount(op=name, count=sum(by_type.values()), dtypes=dict(sorted(by_type.items())))
           for name, by_type in counts.items()]
    ops.sort(key=lambda o: (-o.count, o.op))
    return {
        "ops": ops,
        "weights_size": sum(buffer_sizes[b] for b in constant_buffers),
        "version": model.scalar("version"),
        "description": model.string("description") or "",
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
    # Everything above may come from the file (names, labels, metadata): escape control
    # characters, line by line, so none reaches the terminal.
    return "\n".join(printable(line) for line in lines)


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
