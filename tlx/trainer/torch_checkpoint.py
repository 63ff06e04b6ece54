"""Read a PyTorch checkpoint (a state dict of tensors) with numpy only: torch is not needed.

Unpickling runs code: a pickle can name any importable callable (`os.system`, say) and
have it called while loading. So this reader never imports what a checkpoint names.
`_RestrictedUnpickler` resolves only the globals that rebuild tensors and storages
(`torch._utils._rebuild_tensor_v2`, `torch.FloatStorage`, ...) plus
`collections.OrderedDict`, each to a harmless stand-in defined here, and refuses any
other global with a TlxError naming it.

Two container formats exist:

- legacy (torch < 1.6, and what `_use_new_zipfile_serialization=False` writes), which the
  EfficientNet-Lite0 package ships: a sequence of pickles in one file -- a magic number, the
  protocol version, sys info (endianness, type sizes), the main pickle whose tensors point to
  storages by persistent id ('storage', storage_type, key, location, numel[, view_metadata]),
  a pickle of the storage keys, then for each key in that order an int64 element count and the
  storage's raw bytes;
- zip (torch >= 1.6): `<root>/data.pkl` with persistent ids ('storage', storage_type, key,
  location, numel) and each storage's raw bytes in `<root>/data/<key>`.

Everything is checked before a single array is returned: a truncated or corrupted file is a
TlxError, never a partial state dict.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Optional

import numpy as np

from tlx.errors import TlxError

#: The legacy format's first pickle (torch.serialization.MAGIC_NUMBER).
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
#: The legacy format's second pickle (torch.serialization.PROTOCOL_VERSION).
LEGACY_PROTOCOL_VERSION = 1001

#: torch storage classes -> little-endian numpy dtype of one element.
STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class CheckpointError(TlxError):
    """The checkpoint cannot be read safely or completely."""


@dataclass(frozen=True)
class _StorageType:
    """Stands in for `torch.FloatStorage` & co: only its element dtype matters.
    Not callable, so a pickle that tries to call it fails."""

    name: str
    dtype: np.dtype


@dataclass
class _Storage:
    key: str
    dtype: np.dtype
    numel: int
    data: Optional[np.ndarray] = None


@dataclass(frozen=True)
class _StorageView:
    """A slice of a root storage (the legacy format's view_metadata)."""

    root: _Storage
    offset: int
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    """What `_rebuild_tensor_v2` returns here: where the tensor's elements are, not the elements."""

    storage: object  # _Storage or _StorageView
    offset: int
    shape: tuple
    stride: tuple


def _as_int_tuple(value, what) -> tuple:
    if isinstance(value, int):
        value = (value,)
    if not isinstance(value, tuple) or not all(isinstance(v, int) and v >= 0 for v in value):
        raise CheckpointError(f"corrupted checkpoint: bad tensor {what} {value!r}")
    return value


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    """torch._utils._rebuild_tensor(_v2)(storage, offset, size, stride, requires_grad,
    backward_hooks[, metadata]): only the first four matter for the numbers."""
    if not isinstance(storage, (_Storage, _StorageView)):
        raise CheckpointError(f"corrupted checkpoint: a tensor's storage is a {type(storage).__name__}")
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise CheckpointError(f"corrupted checkpoint: bad storage offset {storage_offset!r}")
    return _TensorRef(storage, storage_offset, _as_int_tuple(size, "size"), _as_int_tuple(stride, "stride"))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *_ignored):
    """torch._utils._rebuild_parameter: an nn.Parameter is its data here."""
    if not isinstance(data, _TensorRef):
        raise CheckpointError("corrupted checkpoint: a parameter without tensor data")
    return data


#: The only globals a checkpoint may name, each mapped to a stand-in defined in this module.
ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name, np.dtype(dtype)) for name, dtype in STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """A pickle.Unpickler that resolves only ALLOWED_GLOBALS and storage persistent ids."""

    def __init__(self, file: BinaryIO, source: str, storages: dict[str, _Storage]):
        super().__init__(file)
        self._source = source
        self._storages = storages

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise CheckpointError(
                f"{self._source}: refused to load: the checkpoint names the global "
                f"'{module}.{name}', which is not one of the tensor-rebuilding globals this "
                "reader allows. A weights file has no reason to name it; it may be malicious."
            ) from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise CheckpointError(f"{self._source}: refused to load: unsupported persistent id {pid!r:.80}")
        storage_type, key, _location, numel = pid[1:5]
        view_metadata = pid[5] if len(pid) == 6 else None
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"{self._source}: corrupted checkpoint: storage type {storage_type!r:.80}")
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise CheckpointError(f"{self._source}: corrupted checkpoint: storage id {pid!r:.80}")
        storage = self._storages.get(key)
        if storage is None:
            storage = self._storages[key] = _Storage(key, storage_type.dtype, numel)
        elif storage.dtype != storage_type.dtype or storage.numel != numel:
            raise CheckpointError(f"{self._source}: corrupted checkpoint: storage {key} declared twice differently")
        if view_metadata is None:
            return storage
        try:
            _view_key, offset, view_size = view_metadata
        except (TypeError, ValueError):
            raise CheckpointError(f"{self._source}: corrupted checkpoint: view {view_metadata!r:.80}") from None
        if not (isinstance(offset, int) and isinstance(view_size, int)
                and 0 <= offset and offset + view_size <= numel):
            raise CheckpointError(f"{self._source}: corrupted checkpoint: view {view_metadata!r:.80}")
        return _StorageView(storage, offset, view_size)


def _load_pickle(f: BinaryIO, source: str, storages: dict[str, _Storage]):
    try:
        return _RestrictedUnpickler(f, source, storages).load()
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, struct.error, MemoryError, RecursionError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{source}: truncated or corrupted checkpoint ({type(exc).__name__}: {exc})."
            " Reinstall the package or download the file again."
        ) from None


def read_state_dict(path: str | Path) -> "collections.OrderedDict[str, np.ndarray]":
    """The checkpoint's state dict as numpy arrays (contiguous copies), keys in file order.

    Raises CheckpointError (a TlxError) for a missing, truncated, corrupted or unsafe file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file.")
    source = str(path)
    if zipfile.is_zipfile(path):
        obj, storages = _read_zip(path, source)
    else:
        with open(path, "rb") as f:
            obj, storages = _read_legacy(f, source, path.stat().st_size)
    return _materialize(obj, storages, source)


def _read_legacy(f: BinaryIO, source: str, file_size: int):
    storages: dict[str, _Storage] = {}
    magic = _load_pickle(f, source, storages)
    if magic != LEGACY_MAGIC_NUMBER:
        raise CheckpointError(f"{source}: not a PyTorch checkpoint (bad magic number).")
    protocol = _load_pickle(f, source, storages)
    if protocol != LEGACY_PROTOCOL_VERSION:
        raise CheckpointError(f"{source}: unsupported PyTorch legacy protocol version {protocol!r}.")
    sys_info = _load_pickle(f, source, storages)
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise CheckpointError(f"{source}: only little-endian checkpoints are supported.")
    obj = _load_pickle(f, source, storages)
    keys = _load_pickle(f, source, storages)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise CheckpointError(f"{source}: corrupted checkpoint: bad storage key list.")
    if set(keys) != set(storages) or len(keys) != len(storages):
        raise CheckpointError(f"{source}: corrupted checkpoint: storage key list does not match the tensors.")
    for key in keys:
        storage = storages[key]
        header = f.read(8)
        if len(header) < 8:
            raise _truncated(source, f"before storage {key}")
        (count,) = struct.unpack("<q", header)
        if count != storage.numel:
            raise CheckpointError(
                f"{source}: corrupted checkpoint: storage {key} holds {count} elements, "
                f"its tensors declare {storage.numel}.")
        nbytes = count * storage.dtype.itemsize
        if f.tell() + nbytes > file_size:
            raise _truncated(source, f"in storage {key}")
        data = f.read(nbytes)
        if len(data) < nbytes:
            raise _truncated(source, f"in storage {key}")
        storage.data = np.frombuffer(data, dtype=storage.dtype)
    if f.read(1):
        raise CheckpointError(f"{source}: corrupted checkpoint: unexpected data after the last storage.")
    return obj, storages


def _read_zip(path: Path, source: str):
    storages: dict[str, _Storage] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(pickles) != 1:
                raise CheckpointError(f"{source}: a zip file but not a PyTorch checkpoint (no data.pkl).")
            root = pickles[0][: -len("data.pkl")]
            byteorder = root + "byteorder"
            if byteorder in names and archive.read(byteorder).strip() != b"little":
                raise CheckpointError(f"{source}: only little-endian checkpoints are supported.")
            obj = _load_pickle(io.BytesIO(archive.read(pickles[0])), source, storages)
            for key, storage in storages.items():
                member = f"{root}data/{key}"
                if member not in names:
                    raise CheckpointError(f"{source}: corrupted checkpoint: storage {key} is missing.")
                # The declared size first: reading a member allocates its whole content.
                if archive.getinfo(member).file_size != storage.numel * storage.dtype.itemsize:
                    raise CheckpointError(f"{source}: corrupted checkpoint: storage {key} has the wrong size.")
                data = archive.read(member)
                if len(data) != storage.numel * storage.dtype.itemsize:
                    raise CheckpointError(f"{source}: corrupted checkpoint: storage {key} has the wrong size.")
                storage.data = np.frombuffer(data, dtype=storage.dtype)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:  # CRC errors are BadZipFile
        raise CheckpointError(f"{source}: truncated or corrupted checkpoint ({exc}).") from None
    return obj, storages


def _truncated(source: str, where: str) -> CheckpointError:
    return CheckpointError(
        f"{source}: truncated checkpoint (file ends {where}). "
        "Reinstall the package or download the file again."
    )


def _materialize(obj, storages, source):
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: not a state dict (a {type(obj).__name__}).")
    result = collections.OrderedDict()
    for name, ref in obj.items():
        if not isinstance(name, str):
            raise CheckpointError(f"{source}: corrupted checkpoint: a key is {name!r:.80}")
        if not isinstance(ref, _TensorRef):
            continue  # e.g. metadata; only tensors are weights
        result[name] = _tensor(ref, name, source)
    if not result:
        raise CheckpointError(f"{source}: the checkpoint holds no tensors.")
    return result


def _tensor(ref: _TensorRef, name: str, source: str) -> np.ndarray:
    storage = ref.storage
    base_offset = 0
    if isinstance(storage, _StorageView):
        base_offset, limit, storage = storage.offset, storage.numel, storage.root
    else:
        limit = storage.numel
    if storage.data is None:
        raise _truncated(source, f"before the data of {name}")
    if len(ref.shape) != len(ref.stride):
        raise CheckpointError(f"{source}: corrupted checkpoint: {name} has shape {ref.shape}, stride {ref.stride}")
    # Python integers (no int64 overflow), and checked against the elements actually read
    # before anything is allocated: the copy below allocates `count` elements, and a crafted
    # shape with stride 0 would otherwise make a few bytes of storage into gigabytes.
    count = math.prod(ref.shape)
    if count > limit - ref.offset:
        raise CheckpointError(f"{source}: corrupted checkpoint: {name} declares {count:,} elements "
                              f"(shape {ref.shape}) but its storage holds {max(0, limit - ref.offset):,} "
                              "from its offset.")
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride)) if count else ref.offset - 1
    if last >= limit:
        raise CheckpointError(f"{source}: corrupted checkpoint: {name} reaches past its storage.")
    flat = storage.data[base_offset:base_offset + limit]
    itemsize = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[ref.offset:], shape=ref.shape, strides=tuple(s * itemsize for s in ref.stride), writeable=False)
    return np.array(view, dtype=flat.dtype.newbyteorder("="), copy=True)
