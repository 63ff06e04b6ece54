"""Offline datasets prepared as class folders."""

from __future__ import annotations

import pytest

from tlx import datasets
from tlx.errors import TlxError


def test_lfw_subset_prepares_two_balanced_classes(tmp_path):
    prepared = datasets.prepare("lfw-subset", tmp_path / "lfw")
    counts = {d.name: len(list(d.iterdir())) for d in prepared.data_dir.iterdir() if d.is_dir()}
    assert counts == {"face": 100, "non-face": 100}


def test_interrupted_preparation_is_redone(tmp_path):
    out = tmp_path / "lfw"
    (out / "face").mkdir(parents=True)
    (out / "face" / "half-written.png").write_bytes(b"")
    prepared = datasets.prepare("lfw-subset", out, limit=3)
    assert not (out / "face" / "half-written.png").exists()
    assert len(list((prepared.data_dir / "face").iterdir())) == 3


@pytest.mark.skipif(not datasets.TUXPAINT_ROOT.is_dir(), reason="tuxpaint-stamps-default not installed")
def test_tuxpaint_keeps_photos_and_leaves_out_cartoons():
    found = datasets.tuxpaint_files()
    assert set(found) == {"animals", "food", "plants"}
    assert all(len(paths) >= 30 for paths in found.values())
    every = [p for paths in found.values() for p in paths]
    assert not any("cartoon" in p.parts for p in every)
    assert len(every) == len(set(every)) >= 200


def test_missing_debian_package_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "TUXPAINT_ROOT", tmp_path / "absent")
    with pytest.raises(TlxError, match="apt-get install .*tuxpaint-stamps-default"):
        datasets.tuxpaint_files(datasets.TUXPAINT_ROOT)


def test_unknown_dataset_lists_the_valid_ones(tmp_path):
    with pytest.raises(TlxError, match="fashion-mnist"):
        datasets.prepare("imagenet", tmp_path)


def test_read_idx_roundtrip(tmp_path):
    import gzip
    import struct

    import numpy as np

    pixels = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 8, 3) + struct.pack(">3I", 2, 3, 4) + pixels.tobytes())
    assert (datasets.read_idx(path) == pixels).all()
