"""The bundle file: a zip archive, read and checked before anything in it is trusted.

A zip, not a tar: members are read one by one without unpacking (the device needs no
scratch space), every member carries a CRC, a truncated file fails at once (its central
directory is at the end), and any desktop can open it.

Layout:
    manifest.json          written last; describes everything else (see tlx.bundle.make)
    labels.txt             one class name per line
    models/<file>.tflite   the exported files, byte for byte
    images/<nnnn>-<name>   the run's held-out test photos, the original files

TensorFlow-free: this runs on the device.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tlx.errors import TlxError

#: What manifest.json's "format" says; anything else is not a tlx bench bundle.
FORMAT = "tlx-bench-bundle"
#: Bumped when a reader of the previous version could misread a new bundle. A reader refuses
#: newer bundles (with a message to upgrade) rather than guess.
FORMAT_VERSION = 1

MANIFEST = "manifest.json"
LABELS = "labels.txt"
MODELS = "models/"
IMAGES = "images/"


class BundleError(TlxError):
    """A bundle that cannot be trusted: not a bundle, damaged, or from a newer tlx."""


def _remake(path) -> str:
    return (f"Make it again on the host with `tlx bundle RUN_DIR -o {Path(path).name}` and copy "
            "the whole file (compare its size or sha256sum on both machines).")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Bundle:
    """An opened, checked bundle. Members are read on demand, each checked against the
    manifest's hash again (the file may change while it is open)."""

    path: Path
    manifest: dict
    _zip: zipfile.ZipFile

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["labels"])

    @property
    def image_size(self) -> tuple[int, int]:
        height, width = self.manifest["image_size"]
        return int(height), int(width)

    @property
    def preprocessing(self) -> int:
        """The tlx.imaging version the photos are read with (bundles without it: 1)."""
        from tlx.imaging import check_version

        return check_version(int(self.manifest.get("preprocessing", 1)), str(self.path))

    def read(self, name: str) -> bytes:
        try:
            data = self._zip.read(name)
        except (KeyError, zipfile.BadZipFile, OSError, EOFError) as exc:
            raise BundleError(f"{self.path}: cannot read {name} ({exc}). {_remake(self.path)}") from None
        if sha256_bytes(data) != self.manifest["files"][name]:
            raise BundleError(f"{self.path}: {name} does not match its hash in the manifest: the file "
                              f"was damaged or changed. {_remake(self.path)}")
        return data

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> "Bundle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_bundle(path: str | Path) -> Bundle:
    """Open `path` and check it whole: a zip, a tlx manifest of a version this tlx reads,
    every listed member present with the recorded SHA-256, labels.txt as the manifest says.
    Raises BundleError (a TlxError) with what to do."""
    import tlx

    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: no such file. Pass a bundle written by `tlx bundle RUN_DIR`.")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise BundleError(f"{path} is not a tlx bench bundle: not a zip archive, or truncated ({exc}). "
                          f"{_remake(path)}") from None
    try:
        try:
            manifest = json.loads(archive.read(MANIFEST).decode("utf-8"))
        except KeyError:
            raise BundleError(f"{path} is a zip archive but not a tlx bench bundle (it has no "
                              f"{MANIFEST}). Pass a file written by `tlx bundle RUN_DIR`.") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise BundleError(f"{path}: {MANIFEST} is not valid JSON ({exc}). {_remake(path)}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise BundleError(f"{path} is a zip archive but not a tlx bench bundle ({MANIFEST} does not "
                              f"say format {FORMAT!r}). Pass a file written by `tlx bundle RUN_DIR`.")
        version = manifest.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise BundleError(
                f"{path} was written by tlx {manifest.get('tlx', '?')} in bundle format {version}; this tlx "
                f"({tlx.__version__}) reads format {FORMAT_VERSION} and older. Upgrade tlx on this machine "
                "(pip install -U tlx-edge), or make the bundle with the tlx installed here.")
        bundle = Bundle(path, manifest, archive)
        _check_members(bundle)
        return bundle
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        archive.close()
        raise BundleError(f"{path} is damaged or truncated ({exc}). {_remake(path)}") from None
    except BaseException:
        archive.close()
        raise


def _check_members(bundle: Bundle) -> None:
    manifest, path = bundle.manifest, bundle.path
    try:
        listed = dict(manifest["files"])
        models = manifest["models"]
        images = manifest["images"]
        labels = [str(label) for label in manifest["labels"]]
        bundle.image_size  # noqa: B018  (checks its shape)
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{path}: {MANIFEST} lacks or garbles {exc}. {_remake(path)}") from None
    names = set(bundle._zip.namelist())
    missing = sorted(set(listed) - names)
    if missing:
        raise BundleError(f"{path} lacks {len(missing)} file(s) its manifest lists (first: {missing[0]}). "
                          f"{_remake(path)}")
    unlisted = [m["file"] for m in models] + [i["file"] for i in images] + [LABELS]
    if any(name not in listed for name in unlisted):
        raise BundleError(f"{path}: {MANIFEST} names files without a hash. {_remake(path)}")
    for name in listed:
        digest = hashlib.sha256()
        with bundle._zip.open(name) as member:
            for block in iter(lambda: member.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != listed[name]:
            raise BundleError(f"{path}: {name} does not match its hash in the manifest: the file was "
                              f"damaged or changed. {_remake(path)}")
    in_file = [line.strip() for line in bundle.read(LABELS).decode("utf-8").splitlines() if line.strip()]
    if in_file != labels:
        raise BundleError(f"{path}: {LABELS} ({in_file}) and the manifest ({labels}) list different "
                          f"classes. {_remake(path)}")
