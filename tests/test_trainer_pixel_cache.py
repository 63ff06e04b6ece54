"""The decoded-pixel cache: decoded once (in parallel) with load_image, read back on the
next run, refreshed for changed files, rebuilt (with a message) when damaged. No TensorFlow."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

try:  # tests/ imported as a package, or as a folder on sys.path
    from tests.conftest import make_image_folder
except ImportError:
    from conftest import make_image_folder
from tlx.imaging import load_image
from tlx.pixels import cache as pixel_cache
from tlx.pixels import parallel_decode
from tlx.pixels.cache import INDEX, prepare


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
# to every process of the group, workers included). The last "image" is a FIFO that nobody
# writes: reading it blocks forever, so decoding is provably still running when the signal,
# sent from inside the work once a chunk is done, arrives.
INTERRUPTED = """
import os, signal, sys
from pathlib import Path
from tlx.pixels import parallel_decode
from tlx.pixels.cache import prepare
ACTION = sys.argv[3]
parallel_decode.PROCESS_MIN_IMAGES = 10**6 if ACTION == "ctrl-c-one-process" else 1
parallel_decode.CHUNK = 2
paths = sorted(Path(sys.argv[1]).rglob("*.jpg"))
assert paths[-1].name == "zz-never-written.jpg"

class Progress:
    def __init__(self, label, total):
        pass
    def __enter__(self):
        return self.advance
    def __exit__(self, *exc):
        return False
    def advance(self, n):
        if ACTION.startswith("ctrl-c"):
            os.killpg(os.getpgid(0), signal.SIGINT)
        else:  # the workers killed (as the out-of-memory killer would)
            for pid in children():
                os.kill(pid, signal.SIGKILL)

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


@pytest.mark.parametrize("action", ["ctrl-c", "ctrl-c-one-process", "worker-killed"])
def test_interrupted_or_broken_decoding_leaves_no_file_and_no_worker_traceback(folder, tmp_path, action):
    import subprocess
    import sys

    from tlx.errors import TlxError

    os.mkfifo(folder / "b" / "zz-never-written.jpg")
    script = tmp_path / "decode.py"
    script.write_text(INTERRUPTED)
    cache = tmp_path / "cache"
    done = subprocess.run([sys.executable, str(script), str(folder), str(cache), action], capture_output=True,
                          text=True, timeout=120, start_new_session=True,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    if action.startswith("ctrl-c"):
        assert done.returncode == 0 and done.stdout.strip() == "interrupted", done.stderr
        assert "Traceback" not in done.stderr, done.stderr
    else:
        assert done.returncode == 1, done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith(f"{TlxError.__module__}.TlxError: A process "
                                                               "decoding images stopped unexpectedly")
        assert "--workers 1" in done.stderr
    # Nothing half written: no pixels file, temporary or not, no index, no empty entry folder.
    assert not list(cache.iterdir())


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


# --- A full disk: a real small filesystem (tmpfs), not a mock --------------------------------

FULL_DISK = """
import sys
from pathlib import Path
from tlx.errors import TlxError
from tlx.pixels import parallel_decode
from tlx.pixels.cache import prepare
parallel_decode.PROCESS_MIN_IMAGES = int(sys.argv[3])
if sys.argv[4] == "no-fallocate":  # as on macOS: the blocks are reserved by writing zeros
    import os
    del os.posix_fallocate
try:
    prepare(sorted(Path(sys.argv[1]).rglob("*.jpg")), 96, cache_dir=Path(sys.argv[2]), workers=2)
except TlxError as exc:
    print(exc)
    sys.exit(1)
"""


@pytest.fixture
def small_disk(tmp_path):
    """A 192 KiB tmpfs: room for a few rows of 96 px pixels, not for 13."""
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()}): needs root")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize("where", ["this-process", "worker-processes", "no-fallocate"])
def test_a_full_disk_is_an_error_with_a_message_and_leaves_nothing(folder, tmp_path, small_disk, where):
    import subprocess
    import sys

    script = tmp_path / "fill.py"
    script.write_text(FULL_DISK)
    cache = small_disk / "cache"
    done = subprocess.run([sys.executable, str(script), str(folder), str(cache),
                           "1" if where == "worker-processes" else "100000", where], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": os.getcwd()})
    # Not SIGBUS (-7, exit 135 in a shell): the error, with what to do.
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "Cannot write the pixel cache" in done.stdout and "No space left on device" in done.stdout
    assert "--cache-dir" in done.stdout and "--workers 1" not in done.stdout
    assert not list(cache.iterdir())  # not even the entry's folder
    assert os.statvfs(small_disk).f_bfree == os.statvfs(small_disk).f_blocks  # every block free again


# --- Damage a user can do with ordinary tools: found, rebuilt with a message -------------------

def _reference(data):
    """What every readable file must be served as."""
    out = {}
    for path in _paths(data):
        try:
            out[str(path)] = load_image(path, 16)
        except Exception:  # the broken one
            pass
    return out


def _assert_no_stale_pixels(cache, reference):
    assert set(cache.rows) == set(reference)
    for path, pixels in reference.items():
        np.testing.assert_array_equal(cache.pixels[cache.rows[path]], pixels, err_msg=path)


def test_an_image_replaced_with_its_size_and_mtime_restored_is_decoded_again(folder, tmp_path):
    _prepare(folder, tmp_path / "cache")
    by_size = sorted(_paths(folder)[:12], key=lambda p: p.stat().st_size)
    small, large = by_size[0], by_size[-1]
    st = large.stat()
    # Another photo under the same name, padded to the same size (JPEG readers stop at the
    # end-of-image marker), its modification time set back.
    large.write_bytes(small.read_bytes().ljust(st.st_size, b"\0"))
    os.utime(large, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (large.stat().st_size, large.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    messages = []
    again = _prepare(folder, tmp_path / "cache", messages)
    assert again.decoded == 1 and "1 of 13 images are new or changed" in messages[0]
    _assert_no_stale_pixels(again, _reference(folder))


def test_pixel_bytes_changed_with_size_and_mtime_restored_are_found(folder, tmp_path):
    first = _prepare(folder, tmp_path / "cache")
    npy = next(first.location.glob("pixels-*.npy"))
    st = npy.stat()
    with open(npy, "r+b") as f:
        f.seek(st.st_size - 500)
        f.write(bytes(100))
    os.utime(npy, ns=(st.st_atime_ns, st.st_mtime_ns))
    del first
    messages = []
    again = _prepare(folder, tmp_path / "cache", messages)
    assert again.decoded == 13 and "changed after its index was written" in messages[0], messages
    _assert_no_stale_pixels(again, _reference(folder))


def test_two_rows_swapped_in_the_index_fail_their_checksums_and_are_decoded_again(folder, tmp_path):
    first = _prepare(folder, tmp_path / "cache")
    index_path = first.location / INDEX
    index = json.loads(index_path.read_text())
    a, b = str(_paths(folder)[0]), str(_paths(folder)[7])
    index["files"][a][0], index["files"][b][0] = index["files"][b][0], index["files"][a][0]
    index_path.write_text(json.dumps(index))
    messages = []
    again = _prepare(folder, tmp_path / "cache", messages)
    assert again.decoded == 2 and "2 row(s) of its pixel file do not match their checksums" in messages[0]
    _assert_no_stale_pixels(again, _reference(folder))
    assert _prepare(folder, tmp_path / "cache").decoded == 0


@pytest.mark.parametrize("field, value", [("rows", "13"), ("files", []), ("pixels_stamp", [1, 2]),
                                          ("skipped", {"x": [None, 5]}), ("image_size", None),
                                          ("pixels", "../../etc/passwd")])
def test_an_index_with_a_field_of_the_wrong_type_is_rebuilt_once(folder, tmp_path, field, value):
    first = _prepare(folder, tmp_path / "cache")
    index_path = first.location / INDEX
    index_path.write_text(json.dumps({**json.loads(index_path.read_text()), field: value}))
    messages = []
    again = _prepare(folder, tmp_path / "cache", messages)
    assert again.decoded == 13 and "not usable" in messages[0], messages
    _assert_no_stale_pixels(again, _reference(folder))
    assert _prepare(folder, tmp_path / "cache").decoded == 0  # fixed for good, no hand deletion


def _json_values():
    from hypothesis import strategies as st

    leaves = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
              | st.text(max_size=12) | st.sampled_from(["0" * 64, "f" * 64, "pixels-000000000000.npy"]))
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


def _mutate(index, data):
    """One random change somewhere in the genuine index: a value replaced, removed or swapped
    with a sibling's."""
    from hypothesis import strategies as st

    parent, key = None, None
    node = index
    while isinstance(node, (dict, list)) and node and data.draw(st.booleans(), label="descend"):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        parent, key = node, data.draw(st.sampled_from(keys), label="key")
        node = parent[key]
    if parent is None:
        return data.draw(_json_values(), label="whole index")
    action = data.draw(st.sampled_from(["replace", "remove", "swap"]), label="action")
    if action == "replace":
        parent[key] = data.draw(_json_values(), label="value")
    elif action == "remove":
        del parent[key]
    else:
        keys = list(parent) if isinstance(parent, dict) else list(range(len(parent)))
        other = data.draw(st.sampled_from(keys), label="other")
        parent[key], parent[other] = parent[other], parent[key]
    return index


def test_any_change_to_a_genuine_index_gives_a_rebuild_never_a_traceback_or_stale_pixels(folder, tmp_path):
    import shutil
    import tempfile

    from hypothesis import HealthCheck, given, settings, strategies as st

    reference = _reference(folder)
    skipped = [str(folder / "b" / "broken.jpg")]

    @settings(max_examples=60, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.data())
    def check(data):
        cache_dir = Path(tempfile.mkdtemp(dir=tmp_path))
        try:
            first = _prepare(folder, cache_dir, workers=1)
            index_path = first.location / INDEX
            mutated = _mutate(json.loads(index_path.read_text()), data)
            index_path.write_text(json.dumps(mutated))
            messages = []
            again = _prepare(folder, cache_dir, messages, workers=1)
            _assert_no_stale_pixels(again, reference)
            # Whatever was decoded again was said (a rebuild is never silent).
            assert bool(messages) == bool(again.decoded), messages
            assert [p for p, _ in again.skipped] == skipped
        finally:
            shutil.rmtree(cache_dir)

    check()


def test_tlx_train_on_a_full_cache_disk_exits_with_the_message(folder, tmp_path, small_disk):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "tlx", "train", str(folder), "--out", str(tmp_path / "run"),
                           "--weights", "none", "--image-size", "96", "--workers", "1",
                           "--cache-dir", str(small_disk / "cache")], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])  # not 135 (SIGBUS)
    assert "Cannot write the pixel cache" in done.stderr and "No space left on device" in done.stderr
    assert "Traceback" not in done.stderr
    assert not [p for p in (small_disk / "cache").rglob("*") if p.is_file()]
