"""The classifier of the tutorial: augmentation, normalization, frozen base, pooled head.

Layer names are a contract with the exporter, which rebuilds an inference model
from the trained layers: "augmentation", "normalization", "backbone", "pool",
"dropout", "logits".
"""

from __future__ import annotations

from tlx.trainer.backbones import BackboneSpec

AUGMENTATION = "augmentation"
NORMALIZATION = "normalization"
BACKBONE = "backbone"
POOL = "pool"
DROPOUT = "dropout"
LOGITS = "logits"


def num_outputs(num_classes: int) -> int:
    """Two classes: one logit (binary cross-entropy), as the tutorial does. Else one per class."""
    return 1 if num_classes == 2 else num_classes


def build_augmentation(rotation: float = 0.2):
    import keras

    return keras.Sequential(
        [keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(rotation)],
        name=AUGMENTATION,
    )


def build_classifier(backbone: BackboneSpec, num_classes: int, image_size: tuple[int, int],
                     weights: str | None, augment: bool = True, dropout: float = 0.2,
                     base=None):
    """The functional model. Input: float32 raw pixels 0..255, shape (H, W, 3). Output: logits.

    `base` lets a caller pass an already-built feature extractor (e.g. to share it).
    """
    import keras

    height, width = image_size
    inputs = keras.Input(shape=(height, width, 3), name="pixels")
    x = inputs
    if augment:
        x = build_augmentation()(x)
    norm = backbone.normalization
    x = keras.layers.Rescaling(norm.scale, norm.offset, name=NORMALIZATION)(x)
    if base is None:
        base = backbone.build((height, width, 3), weights)
    base.name = BACKBONE
    base.trainable = False
    # The tutorial's "important note": BatchNorm must stay in inference mode when the base
    # is unfrozen, or batch statistics replace the pretrained moving averages and wreck
    # what the base has learned. training=False is the tutorial's way; under Keras 3,
    # fit() overrides it for a nested model (keras-team/keras#20285), so phase 2 also
    # keeps every BatchNormalization layer non-trainable (tlx.trainer.train.unfreeze).
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name=POOL)(x)
    x = keras.layers.Dropout(dropout, name=DROPOUT)(x)
    outputs = keras.layers.Dense(num_outputs(num_classes), name=LOGITS)(x)
    return keras.Model(inputs, outputs, name=f"tlx_{backbone.name}")
