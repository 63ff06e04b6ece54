"""The standard TFLite Metadata FlatBuffer ("TFLITE_METADATA"), written and read without
TensorFlow or tflite-support.

The layout follows the published `metadata_schema.fbs` of tflite-support (file identifier
"M001"). A FlatBuffer field is addressed by its slot: its position among the table's fields
in the .fbs, where a union takes two slots (its type, then its value). The SCHEMA table below
is the single place that knows those slots; the encoder and the decoder are both driven by it,
so what we write is what `tlx inspect` reads back.

Objects are plain dicts in the shape of tflite-support's `convert_to_json` output: enum values
by name ("RGB", "TENSOR_AXIS_LABELS"), a union as two keys ("options_type": "NormalizationOptions",
"options": {...}).

Needs only the `flatbuffers` package, imported inside the functions that use it.
"""

from __future__ import annotations

from typing import Any

#: The name of the model-level metadata entry that holds the ModelMetadata buffer.
METADATA_FIELD_NAME = "TFLITE_METADATA"
#: FlatBuffer file identifier of a ModelMetadata buffer.
METADATA_FILE_IDENTIFIER = b"M001"

# Enums, in declaration order of metadata_schema.fbs (value = list index).
ASSOCIATED_FILE_TYPE = ["UNKNOWN", "DESCRIPTIONS", "TENSOR_AXIS_LABELS", "TENSOR_VALUE_LABELS",
                        "TENSOR_AXIS_SCORE_CALIBRATION", "VOCABULARY", "SCANN_INDEX_FILE"]
COLOR_SPACE_TYPE = ["UNKNOWN", "RGB", "GRAYSCALE"]
BOUNDING_BOX_TYPE = ["UNKNOWN", "BOUNDARIES", "UPPER_LEFT", "CENTER"]
COORDINATE_TYPE = ["RATIO", "PIXEL"]
SCORE_TRANSFORMATION_TYPE = ["IDENTITY", "LOG", "INVERSE_LOGISTIC"]

# Unions: member table names by type value (0 is NONE). Members we have no table spec for
# (tokenizers, audio) still decode to their type name, with an empty value.
CONTENT_PROPERTIES = ["NONE", "FeatureProperties", "ImageProperties", "BoundingBoxProperties",
                      "AudioProperties"]
PROCESS_UNIT_OPTIONS = ["NONE", "NormalizationOptions", "ScoreCalibrationOptions",
                        "ScoreThresholdingOptions", "BertTokenizerOptions",
                        "SentencePieceTokenizerOptions", "RegexTokenizerOptions"]

# Field kinds: "string", scalar names ("uint8" enum storage, "uint32", "int32", "float32"),
# ("enum", names), ("table", Name), ("tables", Name) for a vector of tables,
# ("vector", scalar) for a vector of scalars, "strings" for a vector of strings,
# ("union", members) which occupies slots `slot` (type) and `slot + 1` (value).
SCHEMA: dict[str, list[tuple[str, int, Any]]] = {
    "AssociatedFile": [
        ("name", 0, "string"),
        ("description", 1, "string"),
        ("type", 2, ("enum", ASSOCIATED_FILE_TYPE)),
        ("locale", 3, "string"),
        ("version", 4, "string"),  # schema 1.4.1
    ],
    "FeatureProperties": [],
    "ImageSize": [("width", 0, "uint32"), ("height", 1, "uint32")],
    "ImageProperties": [
        ("color_space", 0, ("enum", COLOR_SPACE_TYPE)),
        ("default_size", 1, ("table", "ImageSize")),
    ],
    "BoundingBoxProperties": [
        ("index", 0, ("vector", "uint32")),
        ("type", 1, ("enum", BOUNDING_BOX_TYPE)),
        ("coordinate_type", 2, ("enum", COORDINATE_TYPE)),
    ],
    "ValueRange": [("min", 0, "int32"), ("max", 1, "int32")],
    "Content": [
        ("content_properties", 0, ("union", CONTENT_PROPERTIES)),
        ("range", 2, ("table", "ValueRange")),
    ],
    "NormalizationOptions": [("mean", 0, ("vector", "float32")), ("std", 1, ("vector", "float32"))],
    "ScoreCalibrationOptions": [
        ("score_transformation", 0, ("enum", SCORE_TRANSFORMATION_TYPE)),
        ("default_score", 1, "float32"),
    ],
    "ScoreThresholdingOptions": [("global_score_threshold", 0, "float32")],
    "ProcessUnit": [("options", 0, ("union", PROCESS_UNIT_OPTIONS))],
    "Stats": [("max", 0, ("vector", "float32")), ("min", 1, ("vector", "float32"))],
    "TensorMetadata": [
        ("name", 0, "string"),
        ("description", 1, "string"),
        ("dimension_names", 2, "strings"),
        ("content", 3, ("table", "Content")),
        ("process_units", 4, ("tables", "ProcessUnit")),
        ("stats", 5, ("table", "Stats")),
        ("associated_files", 6, ("tables", "AssociatedFile")),
    ],
    "SubGraphMetadata": [
        ("name", 0, "string"),
        ("description", 1, "string"),
        ("input_tensor_metadata", 2, ("tables", "TensorMetadata")),
        ("output_tensor_metadata", 3, ("tables", "TensorMetadata")),
        ("associated_files", 4, ("tables", "AssociatedFile")),
        ("input_process_units", 5, ("tables", "ProcessUnit")),  # schema 1.1.0
        ("output_process_units", 6, ("tables", "ProcessUnit")),  # schema 1.1.0
    ],
    "ModelMetadata": [
        ("name", 0, "string"),
        ("description", 1, "string"),
        ("version", 2, "string"),
        ("subgraph_metadata", 3, ("tables", "SubGraphMetadata")),
        ("author", 4, "string"),
        ("license", 5, "string"),
        ("associated_files", 6, ("tables", "AssociatedFile")),
        ("min_parser_version", 7, "string"),
    ],
}

_SCALAR_SIZE = {"uint8": 1, "int32": 4, "uint32": 4, "float32": 4}


def _slot_count(fields) -> int:
    return max((slot + (2 if isinstance(kind, tuple) and kind[0] == "union" else 1)
                for _, slot, kind in fields), default=0)


# ----------------------------------------------------------------------------- encoding

def encode(table: str, obj: dict) -> bytes:
    """A finished FlatBuffer whose root is `table` (normally "ModelMetadata")."""
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    root = _encode_table(builder, table, obj)
    builder.Finish(root, file_identifier=METADATA_FILE_IDENTIFIER)
    return bytes(builder.Output())


def _encode_table(builder, table: str, obj: dict) -> int:
    fields = SCHEMA[table]
    known = {name for name, _, _ in fields}
    for name, _, kind in fields:
        if isinstance(kind, tuple) and kind[0] == "union":
            known.add(f"{name}_type")
    unknown = set(obj) - known
    if unknown:
        raise ValueError(f"{table} has no field(s) {sorted(unknown)}; known: {sorted(known)}")

    # Children (strings, vectors, sub-tables) must be finished before the table starts.
    offsets: dict[str, int] = {}
    for name, _, kind in fields:
        value = obj.get(name)
        if value is None:
            continue
        if kind == "string":
            offsets[name] = builder.CreateString(value)
        elif kind == "strings":
            offsets[name] = _offset_vector(builder, [builder.CreateString(s) for s in value])
        elif isinstance(kind, tuple) and kind[0] == "table":
            offsets[name] = _encode_table(builder, kind[1], value)
        elif isinstance(kind, tuple) and kind[0] == "tables":
            offsets[name] = _offset_vector(builder, [_encode_table(builder, kind[1], v) for v in value])
        elif isinstance(kind, tuple) and kind[0] == "vector":
            offsets[name] = _scalar_vector(builder, kind[1], value)
        elif isinstance(kind, tuple) and kind[0] == "union":
            member = obj.get(f"{name}_type")
            if member not in kind[1][1:] or member not in SCHEMA:
                raise ValueError(f"{table}.{name}_type must be one of "
                                 f"{[m for m in kind[1][1:] if m in SCHEMA]}, got {member!r}")
            offsets[name] = _encode_table(builder, member, value)

    builder.StartObject(_slot_count(fields))
    for name, slot, kind in fields:
        value = obj.get(name)
        if value is None:
            continue
        if name in offsets:
            if isinstance(kind, tuple) and kind[0] == "union":
                builder.PrependUint8Slot(slot, kind[1].index(obj[f"{name}_type"]), 0)
                builder.PrependUOffsetTRelativeSlot(slot + 1, offsets[name], 0)
            else:
                builder.PrependUOffsetTRelativeSlot(slot, offsets[name], 0)
        elif isinstance(kind, tuple) and kind[0] == "enum":
            if value not in kind[1]:
                raise ValueError(f"{table}.{name} must be one of {kind[1]}, got {value!r}")
            builder.PrependInt8Slot(slot, kind[1].index(value), 0)
        elif kind == "uint32":
            builder.PrependUint32Slot(slot, int(value), 0)
        elif kind == "int32":
            builder.PrependInt32Slot(slot, int(value), 0)
        elif kind == "float32":
            builder.PrependFloat32Slot(slot, float(value), 0.0)
        else:  # pragma: no cover - a SCHEMA entry with a kind this encoder lacks
            raise AssertionError(f"unhandled kind {kind!r} for {table}.{name}")
    return builder.EndObject()


def _offset_vector(builder, offsets: list[int]) -> int:
    builder.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


def _scalar_vector(builder, scalar: str, values) -> int:
    prepend = {"float32": builder.PrependFloat32, "uint32": builder.PrependUint32,
               "int32": builder.PrependInt32, "uint8": builder.PrependUint8}[scalar]
    size = _SCALAR_SIZE[scalar]
    values = list(values)
    builder.StartVector(size, len(values), size)
    for v in reversed(values):
        prepend(float(v) if scalar == "float32" else int(v))
    return builder.EndVector()


# ----------------------------------------------------------------------------- decoding

def decode(buffer: bytes, table: str = "ModelMetadata") -> dict:
    """The dict form of a FlatBuffer whose root is `table`. Absent fields are left out."""
    from flatbuffers import encode as fb_encode, number_types as N
    from flatbuffers.table import Table

    buffer = bytes(buffer)
    if table == "ModelMetadata" and buffer[4:8] != METADATA_FILE_IDENTIFIER:
        raise ValueError("not a TFLite ModelMetadata buffer (file identifier is not 'M001')")
    root = fb_encode.Get(N.UOffsetTFlags.packer_type, buffer, 0)
    return _decode_table(Table(buffer, root), table)


def _decode_table(t, table: str) -> dict:
    from flatbuffers import number_types as N
    from flatbuffers.table import Table

    flags = {"uint8": N.Uint8Flags, "int32": N.Int32Flags, "uint32": N.Uint32Flags,
             "float32": N.Float32Flags}
    out: dict[str, Any] = {}
    for name, slot, kind in SCHEMA[table]:
        o = t.Offset(4 + 2 * slot)
        if isinstance(kind, tuple) and kind[0] == "union":
            member = kind[1][t.Get(N.Uint8Flags, o + t.Pos)] if o else "NONE"
            vo = t.Offset(4 + 2 * (slot + 1))
            if member == "NONE" or not vo:
                continue
            out[f"{name}_type"] = member
            sub = Table(t.Bytes, t.Indirect(vo + t.Pos))
            out[name] = _decode_table(sub, member) if member in SCHEMA else {}
            continue
        if not o:
            continue
        if kind == "string":
            out[name] = t.String(o + t.Pos).decode("utf-8")
        elif isinstance(kind, str) and kind in flags:
            out[name] = t.Get(flags[kind], o + t.Pos)
        elif kind[0] == "enum":
            value = t.Get(N.Int8Flags, o + t.Pos)
            out[name] = kind[1][value] if 0 <= value < len(kind[1]) else value
        elif kind == "strings":
            start, n = t.Vector(o), t.VectorLen(o)
            out[name] = [t.String(start + 4 * i).decode("utf-8") for i in range(n)]
        elif kind[0] == "vector":
            start, n, size = t.Vector(o), t.VectorLen(o), _SCALAR_SIZE[kind[1]]
            out[name] = [t.Get(flags[kind[1]], start + size * i) for i in range(n)]
        elif kind[0] == "table":
            out[name] = _decode_table(Table(t.Bytes, t.Indirect(o + t.Pos)), kind[1])
        elif kind[0] == "tables":
            start, n = t.Vector(o), t.VectorLen(o)
            out[name] = [_decode_table(Table(t.Bytes, t.Indirect(start + 4 * i)), kind[1])
                         for i in range(n)]
    return out


# ------------------------------------------------------------- the entry inside a .tflite

def metadata_buffer(model: bytes, name: str = METADATA_FIELD_NAME) -> bytes | None:
    """The bytes of the model's metadata entry `name`, or None when it has none.

    Reads the TFLite Model table directly (schema.fbs slots: buffers 4, metadata 6;
    Metadata: name 0, buffer 1; Buffer: data 0, offset 1, size 2), so no TensorFlow."""
    from flatbuffers import encode as fb_encode, number_types as N
    from flatbuffers.table import Table

    model = bytes(model)
    if len(model) < 8 or model[4:8] != b"TFL3":
        raise ValueError("not a TFLite model (file identifier is not 'TFL3')")
    t = Table(model, fb_encode.Get(N.UOffsetTFlags.packer_type, model, 0))
    meta_o, buffers_o = t.Offset(4 + 2 * 6), t.Offset(4 + 2 * 4)
    if not meta_o or not buffers_o:
        return None
    for i in range(t.VectorLen(meta_o)):
        entry = Table(model, t.Indirect(t.Vector(meta_o) + 4 * i))
        name_o = entry.Offset(4)
        if not name_o or entry.String(name_o + entry.Pos).decode("utf-8") != name:
            continue
        buf_o = entry.Offset(6)
        index = entry.Get(N.Uint32Flags, buf_o + entry.Pos) if buf_o else 0
        buffer = Table(model, t.Indirect(t.Vector(buffers_o) + 4 * index))
        data_o = buffer.Offset(4)
        if data_o:
            start = buffer.Vector(data_o)
            return model[start:start + buffer.VectorLen(data_o)]
        # Models over 2 GB keep buffer data after the FlatBuffer, addressed by offset/size.
        off_o, size_o = buffer.Offset(6), buffer.Offset(8)
        if off_o and size_o:
            offset = buffer.Get(N.Uint64Flags, off_o + buffer.Pos)
            return model[offset:offset + buffer.Get(N.Uint64Flags, size_o + buffer.Pos)]
        return b""
    return None


def read_model_metadata(model: bytes) -> dict | None:
    """The standard TFLITE_METADATA of a .tflite as a dict, or None when it has none."""
    buffer = metadata_buffer(model)
    return None if buffer is None else decode(buffer, "ModelMetadata")
