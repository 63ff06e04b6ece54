"""The one FlatBuffer reader of tlx: bounds-checked, schema-driven, standard library only.

TFLite interpreters trust the FlatBuffer they are given, so every offset this reader
follows is checked against the data first; anything wrong raises `Corrupt` (validate turns
it into a ModelError). Fields are addressed by their schema name; slot numbers, scalar
types, defaults and enum values come from the generated modules `tflite_tables` (the TFLite
model) and `metadata_tables` (TFLite Metadata), never from literals here.

It needs neither TensorFlow nor the `flatbuffers` package: it runs on the Raspberry Pi next
to tflite-runtime. Used by tlx.runtime.validate (before an interpreter sees a model),
tlx.inspect and tlx.metadata_codec.
"""

from __future__ import annotations

import struct
from typing import Optional

from tlx.runtime import tflite_tables

#: struct formats of the schemas' scalar kinds.
SCALAR_FORMATS = {"Int8": "<b", "Uint8": "<B", "Bool": "<?", "Int16": "<h", "Uint16": "<H",
                  "Int32": "<i", "Uint32": "<I", "Int64": "<q", "Uint64": "<Q",
                  "Float32": "<f", "Float64": "<d"}

#: Bytes per element of each TensorType (0: variable size or packed below a byte). Not in
#: the schema; every generated TensorType must have an entry (tests check it).
TENSOR_ITEM_SIZES = {
    "FLOAT32": 4, "FLOAT16": 2, "INT32": 4, "UINT8": 1, "INT64": 8, "STRING": 0, "BOOL": 1,
    "INT16": 2, "COMPLEX64": 8, "INT8": 1, "FLOAT64": 8, "COMPLEX128": 16, "UINT64": 8,
    "RESOURCE": 0, "VARIANT": 0, "UINT32": 4, "UINT16": 2, "INT4": 0, "BFLOAT16": 2, "INT2": 0,
    "UINT4": 0, "FLOAT8_E4M3FN": 1, "FLOAT8_E5M2": 1,
}


def _by_value(enum: dict[str, int]) -> dict[int, str]:
    return {value: name for name, value in enum.items()}


_TENSOR_TYPES = _by_value(tflite_tables.ENUMS["TensorType"])
_OPERATORS = _by_value(tflite_tables.ENUMS["BuiltinOperator"])
_CUSTOM = tflite_tables.ENUMS["BuiltinOperator"]["CUSTOM"]
#: Model-level metadata entry that holds the standard TFLite Metadata.
METADATA_NAME = "TFLITE_METADATA"


class Corrupt(Exception):
    """A bounds or structure check failed."""


class Reader:
    """Bounds-checked FlatBuffer primitives over a bytes object."""

    def __init__(self, data: bytes):
        self.data = bytes(data)
        self.n = len(self.data)

    def need(self, pos: int, size: int, what: str) -> None:
        if pos < 0 or size < 0 or pos + size > self.n:
            raise Corrupt(f"{what} at byte {pos} (+{size}) is outside the file ({self.n} bytes)")

    def unpack(self, fmt: str, pos: int, what: str):
        self.need(pos, struct.calcsize(fmt), what)
        return struct.unpack_from(fmt, self.data, pos)[0]

    def deref(self, pos: int, what: str) -> int:
        """Follow a uoffset stored at `pos`."""
        target = pos + self.unpack("<I", pos, what)
        if target >= self.n:
            raise Corrupt(f"{what}: offset points past the end of the file")
        return target

    def root(self, schema: dict = tflite_tables.FIELDS, table: str = "Model") -> "Table":
        """The root table of the buffer, read as `schema[table]`."""
        return self.table(self.deref(0, "root offset"), schema, table, table[0].lower() + table[1:])

    def table(self, pos: int, schema: dict, name: str, what: str) -> "Table":
        if pos % 4:
            raise Corrupt(f"{what}: table at byte {pos} is misaligned")
        vtable = pos - self.unpack("<i", pos, what)
        if vtable % 2:
            raise Corrupt(f"{what}: vtable at byte {vtable} is misaligned")
        vt_size = self.unpack("<H", vtable, f"{what} vtable")
        table_size = self.unpack("<H", vtable + 2, f"{what} vtable")
        if vt_size < 4 or vt_size % 2:
            raise Corrupt(f"{what}: bad vtable size {vt_size}")
        self.need(vtable, vt_size, f"{what} vtable")
        if table_size < 4:
            raise Corrupt(f"{what}: bad table size {table_size}")
        self.need(pos, table_size, what)
        return Table(self, pos, vtable, vt_size, table_size, schema, name, what)

    def vector(self, pos: int, elem_size: int, what: str) -> tuple[int, int]:
        """(start of elements, count) of a vector at `pos`."""
        if pos % 4:
            raise Corrupt(f"{what}: vector at byte {pos} is misaligned")
        count = self.unpack("<I", pos, what)
        self.need(pos + 4, count * elem_size, what)
        return pos + 4, count

    def string(self, pos: int, what: str) -> str:
        start, count = self.vector(pos, 1, what)
        self.need(start, count + 1, what)  # the terminating zero
        try:  # interpreters hand names to Python, which decodes them strictly
            return self.data[start:start + count].decode("utf-8")
        except UnicodeDecodeError:
            raise Corrupt(f"{what} is not valid UTF-8") from None


class Table:
    """One table of a known schema type; fields by name (see tflite_tables.FIELDS)."""

    def __init__(self, reader: Reader, pos, vtable, vt_size, table_size, schema: dict, name: str,
                 what: str):
        self.r, self.pos, self.vtable = reader, pos, vtable
        self.vt_size, self.table_size, self.what = vt_size, table_size, what
        self.schema, self.name = schema, name
        #: {field: (slot, kind, default)}; empty for a union member tlx has no schema for.
        self.fields = schema.get(name, {})

    def _field(self, field: str, size: int) -> int | None:
        entry = 4 + 2 * self.fields[field][0]
        if entry >= self.vt_size:
            return None
        offset = self.r.unpack("<H", self.vtable + entry, self.what)
        if offset == 0:
            return None
        if offset + size > self.table_size:
            raise Corrupt(f"{self.what}: field {field} lies outside its table")
        return self.pos + offset

    def has(self, field: str) -> bool:
        """Whether the buffer stores `field` (scalars equal to their default are often left out)."""
        return self._field(field, 0) is not None

    def check_fields(self) -> None:
        """Every field of the vtable lies inside the table (for tables read by kernels whose
        layout tlx does not read: their scalars are then in bounds)."""
        for entry in range(4, self.vt_size, 2):
            offset = self.r.unpack("<H", self.vtable + entry, self.what)
            if offset and offset >= self.table_size:
                raise Corrupt(f"{self.what}: a field lies outside its table")

    def scalar(self, field: str):
        """A scalar or enum field (its schema default when absent)."""
        _, kind, default = self.fields[field]
        fmt = SCALAR_FORMATS["Int8" if isinstance(kind, tuple) and kind[0] == "enum" else kind]
        pos = self._field(field, struct.calcsize(fmt))
        return default if pos is None else self.r.unpack(fmt, pos, f"{self.what}.{field}")

    def ref(self, field: str) -> int | None:
        """Position of the object a uoffset field points at, or None if absent."""
        pos = self._field(field, 4)
        return None if pos is None else self.r.deref(pos, f"{self.what}.{field}")

    def string(self, field: str) -> str | None:
        pos = self.ref(field)
        return None if pos is None else self.r.string(pos, f"{self.what}.{field}")

    def strings(self, field: str) -> list[str] | None:
        pos = self.ref(field)
        if pos is None:
            return None
        start, count = self.r.vector(pos, 4, f"{self.what}.{field}")
        return [self.r.string(self.r.deref(start + 4 * i, f"{self.what}.{field}"),
                              f"{self.what}.{field}[{i}]") for i in range(count)]

    def vector(self, field: str) -> list | None:
        """A vector of scalars, or None when absent."""
        kind = self.fields[field][1]
        fmt = SCALAR_FORMATS[kind[1]]
        pos = self.ref(field)
        if pos is None:
            return None
        size = struct.calcsize(fmt)
        start, count = self.r.vector(pos, size, f"{self.what}.{field}")
        return [struct.unpack_from(fmt, self.r.data, start + i * size)[0] for i in range(count)]

    def byte_span(self, field: str) -> tuple[int, int] | None:
        """(start, length) of a vector's bytes without decoding them (buffers, options)."""
        kind = self.fields[field][1]
        pos = self.ref(field)
        if pos is None:
            return None
        size = struct.calcsize(SCALAR_FORMATS[kind[1]])
        start, count = self.r.vector(pos, size, f"{self.what}.{field}")
        return start, count * size

    def table(self, field: str) -> Optional["Table"]:
        pos = self.ref(field)
        if pos is None:
            return None
        return self.r.table(pos, self.schema, self.fields[field][1][1], f"{self.what}.{field}")

    def tables(self, field: str) -> list["Table"]:
        pos = self.ref(field)
        if pos is None:
            return []
        what = f"{self.what}.{field}"
        start, count = self.r.vector(pos, 4, what)
        child = self.fields[field][1][1]
        return [self.r.table(self.r.deref(start + 4 * i, what), self.schema, child, f"{what}[{i}]")
                for i in range(count)]

    def union(self, field: str, member: str) -> Optional["Table"]:
        """The value of union `field`, read as table `member` (the caller resolves the
        member from the union's type field)."""
        pos = self.ref(field)
        return None if pos is None else self.r.table(pos, self.schema, member, f"{self.what}.{field}")


# -- TFLite models ------------------------------------------------------------------------

def tensor_type(code: int) -> tuple[str, int] | None:
    """(lower-case type name, bytes per element) of a TensorType code; None if unknown."""
    name = _TENSOR_TYPES.get(code)
    return None if name is None else (name.lower(), TENSOR_ITEM_SIZES[name])


def operator_code(code: Table) -> int:
    """The builtin operator code of an OperatorCode table. Old files set only the
    deprecated int8 field; codes over 127 leave a placeholder there and use builtinCode."""
    return max(code.scalar("builtinCode"), code.scalar("deprecatedBuiltinCode"))


def builtin_operator_name(number: int) -> str:
    """The schema name of a builtin operator code (3 -> "CONV_2D"); "BUILTIN_<n>" for a code
    newer than the generated schema."""
    return _OPERATORS.get(number, f"BUILTIN_{number}")


def operator_name(code: Table) -> str:
    """The name of an OperatorCode's operator: a builtin's schema name or a custom op's own."""
    number = operator_code(code)
    if number == _CUSTOM:
        return code.string("customCode") or "CUSTOM"
    return builtin_operator_name(number)


def buffer_size(buffer: Table) -> int:
    """Bytes held by a Buffer (inline data, or data after the FlatBuffer in models over 2 GB)."""
    span = buffer.byte_span("data")
    size = 0 if span is None else span[1]
    offset, length = buffer.scalar("offset"), buffer.scalar("size")
    if offset > 1:
        if offset + length > buffer.r.n:
            raise Corrupt(f"{buffer.what} points past the end of the file")
        size = length
    return size


def buffer_bytes(buffer: Table) -> bytes:
    span = buffer.byte_span("data")
    if span is not None:
        return buffer.r.data[span[0]:span[0] + span[1]]
    offset, length = buffer.scalar("offset"), buffer.scalar("size")
    if offset > 1:
        buffer_size(buffer)  # bounds
        return buffer.r.data[offset:offset + length]
    return b""


def model_root(data: bytes) -> Table:
    """The Model table of TFLite FlatBuffer bytes; Corrupt if the identifier is missing."""
    data = bytes(data)
    if len(data) < 8 or data[4:8] != tflite_tables.FILE_IDENTIFIER:
        raise Corrupt("not a TFLite model (file identifier is not 'TFL3')")
    return Reader(data).root()


def metadata_buffer(data: bytes, name: str = METADATA_NAME) -> bytes | None:
    """The bytes of the model-level metadata entry `name`, or None when there is none."""
    model = model_root(data)
    buffers = model.tables("buffers")
    for entry in model.tables("metadata"):
        if entry.string("name") != name:
            continue
        index = entry.scalar("buffer")
        if index >= len(buffers):
            raise Corrupt(f"metadata entry {name} uses buffer {index} of {len(buffers)}")
        return buffer_bytes(buffers[index])
    return None
