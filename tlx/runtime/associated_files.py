"""Read tlx's metadata and labels from an exported .tflite alone (no sidecar file).

The exporter appends the associated files as a zip after the FlatBuffer (tflite-support's
layout), so zipfile reads them from the model bytes. Standard library only: this module runs
on the Raspberry Pi, where TensorFlow is never installed.
"""

from __future__ import annotations

import io
import json
import zipfile

from tlx.errors import TlxError

LABELS_FILE = "labels.txt"
TLX_FILE = "tlx.json"


def _read_member(model: bytes, name: str) -> bytes | None:
    """The bytes of associated file `name`, or None when the model has no such file."""
    try:
        with zipfile.ZipFile(io.BytesIO(bytes(model))) as archive:
            try:
                return archive.read(name)
            except KeyError:
                return None
    except zipfile.BadZipFile:
        # A model exported without metadata has no zip after it.
        return None


def associated_files(model: bytes) -> list[str]:
    """Names of the files packed into the model (empty when there are none)."""
    try:
        with zipfile.ZipFile(io.BytesIO(bytes(model))) as archive:
            return archive.namelist()
    except zipfile.BadZipFile:
        return []


def read_tlx_metadata(model: bytes) -> dict | None:
    """tlx's own metadata (labels, input height and width, backbone, preprocessing, run_id,
    tlx_version, ...) from the model's tlx.json, or None when the model carries none."""
    data = _read_member(model, TLX_FILE)
    if data is None:
        return None
    try:
        info = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TlxError(f"The model's {TLX_FILE} is not valid JSON ({e}); "
                       f"export the model again with `tlx export`.") from None
    if not isinstance(info, dict):
        raise TlxError(f"The model's {TLX_FILE} is not a JSON object; "
                       f"export the model again with `tlx export`.")
    return info


def read_labels(model: bytes) -> list[str] | None:
    """The labels in output order from the model's labels.txt, or None when it has none."""
    data = _read_member(model, LABELS_FILE)
    if data is None:
        return None
    return [line.strip("\r") for line in data.decode("utf-8").split("\n") if line.strip()]
