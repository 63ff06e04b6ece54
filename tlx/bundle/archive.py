"""The bundle file: a zip archive, read and checked before anything in it is trusted.

A zip, not a tar: members are read one by one without unpacking (the device needs no
scratch space), every member carries a CRC, a truncated file fails at once (its central
directory is at the end), and any desktop can open it.

Layout:
    manifest.json                 written last; describes everything else (tlx.bundle.manifest)
    labels.txt                    one class name per line
    models/model_<name>.tflite    the exported files, byte for byte (a sweep's bundle:
                                  models/<backbone>-<size>/model_<name>.tflite per candidate)
    images/<nnnn>-<name>          the run's held-out test photos, the original files

Nothing is read whole before its size is known and bounded: the central directory's size
and entry count, each member's size against the manifest and a cap for its kind, and the
bytes actually inflated against that size (a member that inflates further is refused).
Hashes are computed while streaming.

TensorFlow-free: this runs on the device.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from tlx.bundle.manifest import (  # noqa: F401  (re-exported: the names a bundle is made of)
    FORMAT, FORMAT_VERSION, IMAGES, LABELS, MANIFEST, MAX_IMAGE_BYTES, MAX_IMAGES, MAX_LABELS_BYTES,
    MAX_MANIFEST_BYTES, MAX_MODEL_BYTES, MAX_MODELS, MAX_SWEEP_MODELS, MODELS, BundleError, Manifest,
    ModelEntry, SweepManifest, parse_manifest, remake)
from tlx.errors import TlxError
from tlx.text import printable

#: Members a bundle may have at most, and the bytes its central directory may take.
MAX_MEMBERS = MAX_IMAGES + MAX_SWEEP_MODELS + 2
MAX_DIRECTORY_BYTES = 4 << 20
_BLOCK = 1 << 20

#: models/<run>/<file>: a sweep's bundle, one folder per candidate.
_EXPECTED_NAME = re.compile(r"manifest\.json|labels\.txt|models/([^/\\]+/)?[^/\\]+|images/[^/\\]+")
#: Errors zipfile and zlib raise on a damaged or crafted archive.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError,
               ValueError, struct.error, OverflowError)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _size_cap(name: str) -> int:
    if name == MANIFEST:
        return MAX_MANIFEST_BYTES
    if name == LABELS:
        return MAX_LABELS_BYTES
    return MAX_MODEL_BYTES if name.startswith(MODELS) else MAX_IMAGE_BYTES


@dataclass
class Bundle:
    """An opened, checked bundle. Members are read on demand, each bounded by its checked size
    and checked against the manifest's hash again (the file may change while it is open)."""

    path: Path
    #: A single run's manifest, or a sweep's (its parts(): one Manifest per candidate).
    manifest: "Manifest | SweepManifest"
    _zip: zipfile.ZipFile

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.labels)

    @property
    def image_size(self) -> tuple[int, int]:
        """A single run's bundle's input size (a sweep's: each of manifest.parts() has its own)."""
        return self.manifest.image_size

    @property
    def preprocessing(self) -> int:
        """The tlx.imaging version the photos are read with (bundles without it: 1)."""
        return self.manifest.preprocessing

    def read(self, name: str) -> bytes:
        """Member `name`, whole (a model or a photo: at most its kind's cap), hash checked."""
        digest, data = hashlib.sha256(), bytearray()
        for block in self._stream(name):
            digest.update(block)
            data += block
        self._check_digest(name, digest)
        return bytes(data)

    def _stream(self, name: str) -> Iterator[bytes]:
        return _stream(self._zip, self.path, name)

    def _check_digest(self, name: str, digest) -> None:
        if digest.hexdigest() != self.manifest.files[name]:
            raise BundleError(f"{self.path}: {name} does not match its hash in the manifest: the file "
                              f"was damaged or changed. {remake(self.path)}")

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> "Bundle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _stream(archive: zipfile.ZipFile, path: Path, name: str) -> Iterator[bytes]:
    """Member `name`'s bytes in blocks; BundleError when it holds more than its directory entry
    says (zipfile stops there, but a member must never be trusted to) or is damaged."""
    try:
        info = archive.getinfo(name)
        left = info.file_size
        with archive.open(info) as member:
            while block := member.read(min(_BLOCK, left + 1)):
                left -= len(block)
                if left < 0:
                    raise BundleError(f"{path}: {name} holds more than its recorded size. {remake(path)}")
                yield block
    except BundleError:
        raise
    except (KeyError, *_ZIP_ERRORS) as exc:
        raise BundleError(f"{path}: cannot read {name} ({str(exc)[:200]}). {remake(path)}") from None


def open_bundle(path: str | Path) -> Bundle:
    """Open `path` and check it whole: a zip of bounded size and member count, no member name
    twice or outside the layout, a manifest that passes tlx.bundle.manifest, every member listed
    there with its recorded SHA-256 and no other, labels.txt as the manifest says, and each
    model's own metadata (format, labels, model hash, input size, output quantization) agreeing
    with the manifest. Raises BundleError (a TlxError) with what to do."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: no such file. Pass a bundle written by `tlx bundle RUN_DIR`.")
    try:
        _check_directory_size(path)
        archive = zipfile.ZipFile(path)
    except BundleError:
        raise
    except _ZIP_ERRORS as exc:
        raise BundleError(f"{path} is not a tlx bench bundle: not a zip archive, or truncated "
                          f"({str(exc)[:200]}). {remake(path)}") from None
    try:
        manifest = _read_manifest(archive, path)
        bundle = Bundle(path, manifest, archive)
        _check_members(bundle)
        return bundle
    except _ZIP_ERRORS as exc:
        archive.close()
        raise BundleError(f"{path} is damaged or truncated ({str(exc)[:200]}). {remake(path)}") from None
    except BaseException:
        archive.close()
        raise


def _check_directory_size(path: Path) -> None:
    """Refuse before zipfile reads the central directory into memory: a few MB of file can
    list millions of entries. Bundles never need zip64 (tlx writes them under its limits)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        tail_start = max(0, size - (22 + 0xFFFF))
        f.seek(tail_start)
        tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return  # not a zip: zipfile says so
    entries, directory_bytes = struct.unpack("<HI", tail[at + 10:at + 16])
    if at >= 20 and tail[at - 20:at - 16] == b"PK\x06\x07" or entries == 0xFFFF or directory_bytes == 0xFFFFFFFF:
        raise BundleError(f"{path} is a zip64 archive: far larger, or with far more members, than a tlx "
                          f"bench bundle. {remake(path)}")
    if entries > MAX_MEMBERS or directory_bytes > MAX_DIRECTORY_BYTES:
        raise BundleError(f"{path} lists {entries} members in {directory_bytes} bytes; a tlx bench bundle "
                          f"has at most {MAX_MEMBERS} in {MAX_DIRECTORY_BYTES >> 20} MB. {remake(path)}")


def _read_manifest(archive: zipfile.ZipFile, path: Path) -> Manifest:
    infos = archive.infolist()
    names = [info.filename for info in infos]
    if MANIFEST not in names:
        raise BundleError(f"{path} is a zip archive but not a tlx bench bundle (it has no "
                          f"{MANIFEST}). Pass a file written by `tlx bundle RUN_DIR`.")
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise BundleError(f"{path} holds two members named {twice[:80]!r}: zip readers disagree on which "
                          f"one counts, so neither is trusted. {remake(path)}")
    if len(infos) > MAX_MEMBERS:
        raise BundleError(f"{path} holds {len(infos)} members; a tlx bench bundle has at most "
                          f"{MAX_MEMBERS}. {remake(path)}")
    for info in infos:
        name = info.filename
        if not _EXPECTED_NAME.fullmatch(name) or ".." in name.split("/"):
            raise BundleError(f"{path} holds a member named {name[:80]!r}, outside a bundle's layout "
                              f"({MANIFEST}, {LABELS}, {MODELS}..., {IMAGES}...). {remake(path)}")
        if info.file_size > _size_cap(name):
            raise BundleError(f"{path}: {name[:80]} inflates to {info.file_size} bytes, more than the "
                              f"{_size_cap(name) >> 20} MB a bundle's member of its kind may hold. "
                              f"{remake(path)}")
        if info.flag_bits & 0x1:
            raise BundleError(f"{path}: {name[:80]} is encrypted. {remake(path)}")
    return parse_manifest(b"".join(_stream(archive, path, MANIFEST)), str(path))


def _check_members(bundle: Bundle) -> None:
    manifest, path, archive = bundle.manifest, bundle.path, bundle._zip
    members = {info.filename: info for info in archive.infolist()}
    unlisted = sorted(set(members) - set(manifest.files) - {MANIFEST})
    if unlisted:
        raise BundleError(f"{path} holds {unlisted[0][:80]!r}, which its manifest does not list. "
                          f"{remake(path)}")
    missing = sorted(set(manifest.files) - set(members))
    if missing:
        raise BundleError(f"{path} lacks {len(missing)} file(s) its manifest lists (first: "
                          f"{missing[0][:80]}). {remake(path)}")
    for model in manifest.models:  # of every candidate in a sweep's bundle
        if members[model.file].file_size != model.size_bytes:
            raise BundleError(f"{path}: {model.file} holds {members[model.file].file_size} bytes, the "
                              f"manifest says {model.size_bytes}. {remake(path)}")
    for name in manifest.files:
        if name.startswith(MODELS):
            continue  # read whole and checked below
        digest = hashlib.sha256()
        for block in bundle._stream(name):
            digest.update(block)
        bundle._check_digest(name, digest)
    in_file = [line.strip() for line in bundle.read(LABELS).decode("utf-8", "replace").splitlines()
               if line.strip()]
    if in_file != list(manifest.labels):
        raise BundleError(f"{path}: {LABELS} ({printable(_short(in_file))}) and the manifest "
                          f"({printable(_short(list(manifest.labels)))}) list different classes. {remake(path)}")
    for part in manifest.parts():
        for model in part.models:
            check_model(bundle, model, bundle.read(model.file), part)


def _short(labels) -> str:
    shown = ", ".join(str(label)[:40] for label in list(labels or [])[:10])
    return f"[{shown}{', ...' if len(labels or []) > 10 else ''}]"


def check_model(bundle: Bundle, entry: ModelEntry, content: bytes, part: Optional[Manifest] = None) -> None:
    """The model's own records agree with the manifest (`part`: its candidate's, in a sweep's
    bundle): its structure (bounds-checked, no interpreter), its tlx.json (format, labels,
    model hash, preprocessing), its input size and output quantization. A model swapped for
    another with the hashes recomputed fails here."""
    from tlx.imaging import version_of
    from tlx.runtime.associated_files import read_labels, read_tlx_metadata
    from tlx.runtime.validate import check_image_classifier, validate_model

    manifest, source = part or bundle.manifest, f"{bundle.path}:{entry.file}"
    fix = remake(bundle.path)
    try:
        info = validate_model(content, source)
        check_image_classifier(info, source)
        meta = read_tlx_metadata(content)
        labels = (meta or {}).get("labels") or read_labels(content)
        preprocessing = version_of(meta)
    except TlxError as exc:
        raise BundleError(f"{exc} {fix}") from None
    except Exception as exc:  # a crafted metadata zip inside the model
        raise BundleError(f"{source}: unreadable metadata ({str(exc)[:200]}). {fix}") from None
    if not isinstance(meta, dict):
        raise BundleError(f"{source} carries no tlx.json: nothing ties it to the bundle's run. {fix}")
    problems = []
    if meta.get("format") != entry.name:
        problems.append(f"it says it is the {str(meta.get('format'))[:40]!r} export, the manifest "
                        f"{entry.name!r}")
    if labels != list(manifest.labels):
        problems.append(f"it lists the labels {printable(_short(labels))}, the manifest "
                        f"{printable(_short(list(manifest.labels)))}")
    if meta.get("model_sha256") != manifest.model_sha256:
        problems.append("it was made from another model.keras than the manifest names")
    if preprocessing != manifest.preprocessing:
        problems.append(f"its preprocessing version is {preprocessing}, the manifest's "
                        f"{manifest.preprocessing}")
    problems += _tensor_problems(info, entry, manifest)
    if problems:
        raise BundleError(f"{source} does not match the bundle's manifest: " + "; ".join(problems)
                          + f". {fix}")


def _tensor_problems(info, entry: ModelEntry, manifest: Manifest) -> list[str]:
    if len(info.inputs) != 1 or len(info.outputs) != 1:
        return ["it is not a one-input, one-output image classifier"]
    shape, out = info.inputs[0].shape, info.outputs[0]
    problems = []
    if len(shape) != 4 or tuple(shape[1:3]) != manifest.image_size:
        problems.append(f"it takes input {tuple(shape)}, the manifest says {manifest.image_size}")
    if math.prod(out.shape) != len(manifest.labels):
        problems.append(f"it has {math.prod(out.shape)} outputs, the manifest {len(manifest.labels)} labels")
    found, said = out.quantization, entry.output_quantization
    if (found is None) != (said is None) or found is not None and (
            found[1] != said[1] or not math.isclose(found[0], said[0], rel_tol=1e-6)):
        problems.append(f"its output quantization is {found}, the manifest says {said}")
    return problems
