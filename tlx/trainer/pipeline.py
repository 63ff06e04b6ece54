"""Pixel rows -> tf.data: the batches training, evaluation and feature passes read.

Only row numbers go through tf.data; each batch gathers its rows from the memory-mapped
pixel cache (tlx.pixels.cache), so no copy of all pixels is ever held in memory.
"""

from __future__ import annotations

from typing import Optional

import numpy as np


def label_dtype(num_classes: int):
    """float32 labels for the binary (one logit) head, int32 for the sparse softmax head."""
    return np.float32 if num_classes == 2 else np.int32


def epoch_batches(count: int, batch_size: int, workers: int = 1) -> int:
    """Batches in one pass over `count` rows. With several workers a last batch too small
    to give each of them a row is left out (make_dataset)."""
    remainder = count % batch_size
    if 0 < remainder < workers:
        count -= remainder
    return -(-count // batch_size)


def make_dataset(pixels: np.ndarray, rows: np.ndarray, labels: np.ndarray, num_classes: int,
                 batch_size: int, shuffle: bool = False, seed: int = 0, with_labels: bool = True,
                 shard: Optional[tuple[int, int]] = None, repeat: bool = False):
    """A batched tf.data pipeline of (float32 raw pixels 0..255, label) read from `pixels`
    (the memory-mapped cache) at `rows`.

    Only the row numbers go through tf.data; a fresh shuffle of them each epoch, then
    each batch gathers its rows from the memory map (a numpy copy of batch_size images,
    on tf.data's parallel threads). Pixels stay uint8 on disk and become float32 per
    batch; the model's own Rescaling layer maps them to what the backbone expects.

    `shard` (index, count): this worker's share of every batch, rows index, index +
    count, ... of it (tlx.trainer.distribute). The shuffle is seeded alike on every
    worker, so the shares make up the batch one machine would train on; a last batch
    too small to give each worker a row is left out.

    `repeat`: endless, a new shuffle each pass, for fit(steps_per_epoch=epoch_batches(...)).
    Keras then keeps one iterator for all epochs; a new one per epoch made the first
    batch of some epochs wait 1-5 s (seen on 2 cores, benchmarks/results/train_scale_64k.md),
    a fixed cost per epoch that is not the data's.
    """
    import tensorflow as tf

    labels = labels.astype(label_dtype(num_classes))
    height, width = pixels.shape[1:3]

    def gather(batch_rows):
        return np.asarray(pixels[batch_rows])

    def load(batch_rows, batch_labels):
        images = tf.numpy_function(gather, [batch_rows], tf.uint8, stateful=False)
        images = tf.cast(tf.ensure_shape(images, (None, height, width, 3)), tf.float32)
        return (images, batch_labels) if with_labels else images

    ds = tf.data.Dataset.from_tensor_slices((np.asarray(rows, np.int64), labels))
    if shuffle:
        ds = ds.shuffle(max(1, len(labels)), seed=seed, reshuffle_each_iteration=True)
    if shard is not None:
        index, count = shard
        kept = min(len(labels), epoch_batches(len(labels), batch_size, count) * batch_size)
        if kept < len(labels):
            ds = ds.take(kept)
        ds = ds.batch(batch_size).map(lambda r, y: (r[index::count], y[index::count]))
    else:
        ds = ds.batch(batch_size)
    if repeat:
        ds = ds.repeat()
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
