"""The standard TFLite Metadata FlatBuffer ("TFLITE_METADATA"), written and read without
TensorFlow or tflite-support.

Every table, slot, scalar type and enum comes from tlx.runtime.metadata_tables, generated
from the published `metadata_schema.fbs` (file identifier "M001"); the encoder and the
decoder below are driven by it, so what we write is what `tlx inspect` reads back.

Objects are plain dicts in the shape of tflite-support's `convert_to_json` output: enum values
by name ("RGB", "TENSOR_AXIS_LABELS"), a union as two keys ("options_type": "NormalizationOptions",
"options": {...}).

Reading uses tlx.runtime.flatbuffer (bounds-checked, standard library only); writing needs
the `flatbuffers` package, imported inside `encode`.
"""

from __future__ import annotations

import struct
from typing import Any

from tlx.runtime import flatbuffer
from tlx.runtime.metadata_tables import ENUMS, FIELDS, FILE_IDENTIFIER, UNIONS

#: The name of the model-level metadata entry that holds the ModelMetadata buffer.
METADATA_FIELD_NAME = flatbuffer.METADATA_NAME
#: FlatBuffer file identifier of a ModelMetadata buffer.
METADATA_FILE_IDENTIFIER = FILE_IDENTIFIER


def _union_of(table: str, type_field: str) -> str | None:
    """The union whose member type `type_field` holds ("options_type" -> its union)."""
    kind = FIELDS[table].get(type_field[:-len("_type")], (None, None))[1]
    if type_field.endswith("_type") and isinstance(kind, tuple) and kind[0] == "union":
        return kind[1]
    return None


# ----------------------------------------------------------------------------- encoding

def encode(table: str, obj: dict) -> bytes:
    """A finished FlatBuffer whose root is `table` (normally "ModelMetadata")."""
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    root = _encode_table(builder, table, obj)
    builder.Finish(root, file_identifier=METADATA_FILE_IDENTIFIER)
    return bytes(builder.Output())


def _encode_table(builder, table: str, obj: dict) -> int:
    fields = FIELDS[table]
    unknown = set(obj) - set(fields)
    if unknown:
        raise ValueError(f"{table} has no field(s) {sorted(unknown)}; known: {sorted(fields)}")

    # Children (strings, vectors, sub-tables) must be finished before the table starts.
    offsets: dict[str, int] = {}
    for name, (_, kind, _) in fields.items():
        value = obj.get(name)
        if value is None or isinstance(kind, str) and kind != "string" and kind != "strings":
            continue
        if kind == "string":
            offsets[name] = builder.CreateString(value)
        elif kind == "strings":
            offsets[name] = _offset_vector(builder, [builder.CreateString(s) for s in value])
        elif kind[0] == "table":
            offsets[name] = _encode_table(builder, kind[1], value)
        elif kind[0] == "tables":
            offsets[name] = _offset_vector(builder, [_encode_table(builder, kind[1], v) for v in value])
        elif kind[0] == "vector":
            offsets[name] = _scalar_vector(builder, kind[1], value)
        elif kind[0] == "union":
            member = obj.get(f"{name}_type")
            members = [m for m in UNIONS[kind[1]][1:] if m in FIELDS]
            if member not in members:
                raise ValueError(f"{table}.{name}_type must be one of {members}, got {member!r}")
            offsets[name] = _encode_table(builder, member, value)

    builder.StartObject(max((slot + 1 for slot, _, _ in fields.values()), default=0))
    for name, (slot, kind, default) in fields.items():
        value = obj.get(name)
        if value is None:
            continue
        if name in offsets:
            builder.PrependUOffsetTRelativeSlot(slot, offsets[name], 0)
        elif _union_of(table, name) is not None:
            builder.PrependUint8Slot(slot, UNIONS[_union_of(table, name)].index(value), 0)
        elif isinstance(kind, tuple) and kind[0] == "enum":
            names = ENUMS[kind[1]]
            if value not in names:
                raise ValueError(f"{table}.{name} must be one of {names}, got {value!r}")
            builder.PrependInt8Slot(slot, names.index(value), 0)
        else:
            prepend = getattr(builder, f"Prepend{kind}Slot")
            prepend(slot, float(value) if kind.startswith("Float") else int(value), default)
    return builder.EndObject()


def _offset_vector(builder, offsets: list[int]) -> int:
    builder.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


def _scalar_vector(builder, scalar: str, values) -> int:
    prepend = getattr(builder, f"Prepend{scalar}")
    size = struct.calcsize(flatbuffer.SCALAR_FORMATS[scalar])
    values = list(values)
    builder.StartVector(size, len(values), size)
    for v in reversed(values):
        prepend(float(v) if scalar.startswith("Float") else int(v))
    return builder.EndVector()


# ----------------------------------------------------------------------------- decoding

def decode(buffer: bytes, table: str = "ModelMetadata") -> dict:
    """The dict form of a FlatBuffer whose root is `table`. Absent fields are left out.
    Raises ValueError for a buffer that is not one (or is damaged)."""
    buffer = bytes(buffer)
    if table == "ModelMetadata" and buffer[4:8] != METADATA_FILE_IDENTIFIER:
        raise ValueError("not a TFLite ModelMetadata buffer (file identifier is not 'M001')")
    try:
        return _decode_table(flatbuffer.Reader(buffer).root(FIELDS, table))
    except flatbuffer.Corrupt as exc:
        raise ValueError(f"damaged TFLite ModelMetadata buffer ({exc})") from None


def _decode_table(t: flatbuffer.Table) -> dict:
    out: dict[str, Any] = {}
    for name, (_, kind, _) in t.fields.items():
        if not t.has(name) or _union_of(t.name, name) is not None:
            continue  # absent, or a union's type (read with its value below)
        if kind == "string":
            out[name] = t.string(name)
        elif kind == "strings":
            out[name] = t.strings(name)
        elif isinstance(kind, str):
            out[name] = t.scalar(name)
        elif kind[0] == "enum":
            value, names = t.scalar(name), ENUMS[kind[1]]
            out[name] = names[value] if 0 <= value < len(names) else value
        elif kind[0] == "union":
            members = UNIONS[kind[1]]
            index = t.scalar(f"{name}_type")
            member = members[index] if 0 <= index < len(members) else "NONE"
            if member != "NONE":
                out[f"{name}_type"] = member
                out[name] = _decode_table(t.union(name, member))
        elif kind[0] == "vector":
            out[name] = t.vector(name)
        elif kind[0] == "table":
            out[name] = _decode_table(t.table(name))
        elif kind[0] == "tables":
            out[name] = [_decode_table(child) for child in t.tables(name)]
    return out


# ------------------------------------------------------------- the entry inside a .tflite

def metadata_buffer(model: bytes, name: str = METADATA_FIELD_NAME) -> bytes | None:
    """The bytes of the model's metadata entry `name`, or None when it has none.
    Raises ValueError for a file that is not a sound TFLite model."""
    try:
        return flatbuffer.metadata_buffer(model, name)
    except flatbuffer.Corrupt as exc:
        raise ValueError(str(exc)) from None


def read_model_metadata(model: bytes) -> dict | None:
    """The standard TFLITE_METADATA of a .tflite as a dict, or None when it has none."""
    buffer = metadata_buffer(model)
    return None if buffer is None else decode(buffer, "ModelMetadata")
