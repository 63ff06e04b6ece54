"""The decoded-pixel cache: decoded once (in parallel) with load_image, read back on the
next run, refreshed for changed files, rebuilt (with a message) when damaged. No TensorFlow."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

try:  # tests/ imported as a package, or as a folder on sys.path
    from tests.conftest import make_image_folder
except ImportError:
    from conftest import make_image_folder
from tlx.imaging import load_image
from tlx.trainer import parallel_decode, pixel_cache
from tlx.trainer.pixel_cache import INDEX, prepare


@pytest.fixture
def folder(tmp_path):
    data = make_image_folder(tmp_path / "data", classes=("a", "b"), per_class=6, size=(30, 22), fmt="jpg")
    (data / "b" / "broken.jpg").write_bytes(b"not a jpeg")
    return data


def _paths(data):
    return sorted(data.rglob("*.jpg"))


def _prepare(data, cache_dir, messages=None, **kwargs):
    return prepare(_paths(data), 16, key={"folders": [str(data)]}, cache_dir=cache_dir,
                   log=(messages.append if messages is not None else lambda _: None), **kwargs)


def test_decoded_once_then_read_back_with_the_same_pixels(folder, tmp_path):
    first = _prepare(folder, tmp_path / "cache", workers=2)
    assert first.decoded == 13 and len(first.rows) == 12
    assert [p for p, _ in first.skipped] == [str(folder / "b" / "broken.jpg")]
    for path in _paths(folder)[:3]:
        np.testing.assert_array_equal(first.pixels[first.rows[str(path)]], load_image(path, 16))
    assert isinstance(first.pixels, np.memmap)

    second = _prepare(folder, tmp_path / "cache")
    # Nothing decoded: the rows, and the unreadable file's reason, come from the cache.
    assert second.decoded == 0 and second.rows == first.rows and second.skipped == first.skipped
    np.testing.assert_array_equal(second.pixels, first.pixels)
    # Another image size is another entry.
    assert prepare(_paths(folder), 12, key={"folders": [str(folder)]},
                   cache_dir=tmp_path / "cache").decoded == 13


def test_worker_processes_give_the_pixels_and_failures_of_one_process(folder, tmp_path, monkeypatch):
    one = _prepare(folder, tmp_path / "one", workers=1)
    # Small jobs stay in this process; here every chunk of 4 images goes to a worker.
    monkeypatch.setattr(parallel_decode, "PROCESS_MIN_IMAGES", 1)
    monkeypatch.setattr(parallel_decode, "CHUNK", 4)
    three = _prepare(folder, tmp_path / "three", workers=3)
    assert one.rows == three.rows and one.skipped == three.skipped and len(three.skipped) == 1
    np.testing.assert_array_equal(one.pixels, three.pixels)


# Run in a process of its own (a session of its own: the SIGINT of a terminal's Ctrl-C goes
# to every process of the group, workers included).
INTERRUPTED = """
import os, signal, sys
from pathlib import Path
from tlx.trainer import parallel_decode
from tlx.trainer.pixel_cache import prepare
parallel_decode.PROCESS_MIN_IMAGES, parallel_decode.CHUNK = 1, 2
paths = sorted(Path(sys.argv[1]).rglob("*.jpg"))
ACTION = sys.argv[3]

class Progress:
    def __init__(self, label, total):
        pass
    def __enter__(self):
        return self.advance
    def __exit__(self, *exc):
        return False
    def advance(self, n):
        if ACTION == "ctrl-c":
            os.killpg(os.getpgid(0), signal.SIGINT)
        elif not KILLED:  # a worker killed (as the out-of-memory killer would), once
            KILLED.append(children()[0])
            os.kill(KILLED[0], signal.SIGKILL)

KILLED = []

def children():
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "stat").read_text().rsplit(")", 1)[1].split()[1] == str(os.getpid()):
                found.append(int(entry.name))
        except OSError:  # a process that ended meanwhile
            pass
    return found

try:
    prepare(paths, 16, cache_dir=Path(sys.argv[2]), workers=2, progress=Progress)
except KeyboardInterrupt:
    print("interrupted")
"""


@pytest.mark.parametrize("action", ["ctrl-c", "worker-killed"])
def test_interrupted_or_broken_decoding_leaves_no_file_and_no_worker_traceback(folder, tmp_path, action):
    import subprocess
    import sys

    from tlx.errors import TlxError

    script = tmp_path / "decode.py"
    script.write_text(INTERRUPTED)
    cache = tmp_path / "cache"
    done = subprocess.run([sys.executable, str(script), str(folder), str(cache), action], capture_output=True,
                          text=True, timeout=120, start_new_session=True,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    if action == "ctrl-c":
        assert done.returncode == 0 and done.stdout.strip() == "interrupted", done.stderr
        assert "Traceback" not in done.stderr, done.stderr
    else:
        assert done.returncode == 1
        assert done.stderr.strip().splitlines()[-1].startswith(f"{TlxError.__module__}.TlxError: A process "
                                                               "decoding images stopped unexpectedly")
        assert "--workers 1" in done.stderr
    # Nothing half written: no pixels file, temporary or not, and no index.
    assert not [p for p in cache.rglob("*") if p.is_file()]


def test_only_new_or_changed_files_are_decoded_again(folder, tmp_path):
    first = _prepare(folder, tmp_path / "cache")
    changed = folder / "a" / "a_000.jpg"
    other = folder / "b" / "b_001.jpg"
    changed.write_bytes(other.read_bytes())
    os.utime(changed, ns=(1, 1))  # a different mtime for certain
    make_image_folder(folder, classes=("c",), per_class=1, size=(30, 22), fmt="jpg")
    messages = []
    second = _prepare(folder, tmp_path / "cache", messages)
    assert second.decoded == 2 and "2 of 14 images are new or changed" in messages[0]
    np.testing.assert_array_equal(second.pixels[second.rows[str(changed)]], load_image(other, 16))
    # Unchanged rows were carried over; the old pixel file is gone.
    path = str(folder / "a" / "a_003.jpg")
    np.testing.assert_array_equal(second.pixels[second.rows[path]], first.pixels[first.rows[path]])
    assert len(list(second.location.glob("pixels-*.npy"))) == 1


@pytest.mark.parametrize("damage", ["index_garbage", "npy_truncated", "npy_missing", "other_version"])
def test_a_damaged_or_stale_cache_is_rebuilt_with_a_message(folder, tmp_path, damage):
    first = _prepare(folder, tmp_path / "cache")
    index_path = first.location / INDEX
    index = json.loads(index_path.read_text())
    npy = first.location / index["pixels"]
    if damage == "index_garbage":
        index_path.write_text("{not json")
    elif damage == "npy_truncated":
        with open(npy, "r+b") as f:
            f.truncate(npy.stat().st_size - 100)
    elif damage == "npy_missing":
        npy.unlink()
    else:
        index_path.write_text(json.dumps({**index, "preprocessing": -1}))
    del first
    messages = []
    again = _prepare(folder, tmp_path / "cache", messages)
    assert again.decoded == 13, messages
    assert len(messages) == 1 and "not usable" in messages[0] and "decoding every image again" in messages[0]
    np.testing.assert_array_equal(again.pixels[0], load_image(_paths(folder)[0], 16))
    # And the rebuilt cache is trusted on the next run.
    assert _prepare(folder, tmp_path / "cache").decoded == 0


def test_decoding_reports_progress_per_image(folder, tmp_path):
    from contextlib import contextmanager

    seen = []

    @contextmanager
    def progress(label, total):
        seen.append((label, total))
        yield lambda n: seen.append(n)

    _prepare(folder, tmp_path / "cache", progress=progress)
    assert seen[0] == ("Decoding images", 13) and sum(seen[1:]) == 13


def test_default_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(pixel_cache.CACHE_DIR_ENV, str(tmp_path / "x"))
    assert pixel_cache.default_cache_dir() == tmp_path / "x"
    monkeypatch.delenv(pixel_cache.CACHE_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert pixel_cache.default_cache_dir() == tmp_path / "xdg" / "tlx" / "pixels"


def test_left_overs_of_killed_or_concurrent_writers_are_removed_when_old(folder, tmp_path):
    first = _prepare(folder, tmp_path / "cache")
    killed = first.location / ".pixels-dead.npy.tmp"
    orphan = first.location / "pixels-orphan.npy"
    recent = first.location / "pixels-recent.npy"
    for path in (killed, orphan, recent):
        path.write_bytes(b"x")
    for path in (killed, orphan):
        os.utime(path, (0, 0))
    (folder / "a" / "a_001.jpg").touch()  # one changed file: the entry is rewritten
    again = _prepare(folder, tmp_path / "cache")
    assert again.decoded == 1
    assert not killed.exists() and not orphan.exists() and recent.exists()
    assert len(list(again.location.glob("pixels-*.npy"))) == 2  # the new one and the recent one
