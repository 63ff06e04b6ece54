"""The classifier of the tutorial: augmentation, normalization, frozen base, pooled head,
and what each training phase does to it (loss, optimizer, which layers train).

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
    # keeps every BatchNormalization layer non-trainable (`unfreeze` below).
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name=POOL)(x)
    x = keras.layers.Dropout(dropout, name=DROPOUT)(x)
    outputs = keras.layers.Dense(num_outputs(num_classes), name=LOGITS)(x)
    return keras.Model(inputs, outputs, name="tlx_classifier")


# -- the model in its two training phases ------------------------------------------

def loss_and_metric(num_classes: int):
    import keras

    if num_classes == 2:
        # One logit: the accuracy threshold is 0 on the logit, not 0.5 on a probability.
        return (keras.losses.BinaryCrossentropy(from_logits=True),
                keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy"))
    return (keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            keras.metrics.SparseCategoricalAccuracy(name="accuracy"))


def compile_phase1(model, num_classes: int, learning_rate: float) -> None:
    import keras

    loss, metric = loss_and_metric(num_classes)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=[metric])


def unfreeze(model, fine_tune_at: int) -> None:
    """Train the backbone's layers from `fine_tune_at` on; the earlier ones stay frozen,
    and so do all BatchNormalization layers.

    Why BatchNorm too: the tutorial relies on `base(x, training=False)` to keep BatchNorm
    in inference mode, but in Keras 3 `fit()` calls the outer model with training=True and
    the functional graph passes that down, overriding the training=False recorded on the
    base's node (keras-team/keras#20285; seen with Keras 3.15). Keras 3 BatchNormalization
    runs in inference mode whenever the layer is not trainable, so freezing it is what
    actually keeps the pretrained moving statistics (the tutorial's "important note").
    The cost: BatchNorm's gamma/beta are not fine-tuned either.
    """
    import keras

    base = model.get_layer(BACKBONE)
    base.trainable = True
    for layer in _all_layers(base):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    for layer in base.layers[:fine_tune_at]:
        layer.trainable = False


def _all_layers(layer):
    """Every layer inside `layer`, descending into nested models."""
    for child in getattr(layer, "layers", []):
        yield child
        yield from _all_layers(child)


def compile_phase2(model, num_classes: int, learning_rate: float) -> None:
    import keras

    loss, metric = loss_and_metric(num_classes)
    model.compile(optimizer=keras.optimizers.RMSprop(learning_rate / 10), loss=loss, metrics=[metric])


def feature_model(model):
    """The full model up to the pooled backbone features (no augmentation in it: the
    caller made the model with augment=False)."""
    import keras

    return keras.Model(model.input, model.get_layer(POOL).output, name="features")


def build_head(feature_dim: int, num_classes: int, dropout: float):
    """Dropout + Dense on pooled features, named like the full model's layers so its
    weights go into the full model's "logits" layer unchanged."""
    import keras

    inputs = keras.Input(shape=(feature_dim,), name="features")
    x = keras.layers.Dropout(dropout, name=DROPOUT)(inputs)
    outputs = keras.layers.Dense(num_outputs(num_classes), name=LOGITS)(x)
    return keras.Model(inputs, outputs, name="head")


def copy_head(head, model) -> None:
    model.get_layer(LOGITS).set_weights(head.get_layer(LOGITS).get_weights())
