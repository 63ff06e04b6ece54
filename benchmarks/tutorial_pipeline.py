"""The tutorial's own input pipeline, for side-by-side rows against `tlx train`.

TensorFlow's "Transfer learning and fine-tuning" tutorial reads its photos with
`keras.utils.image_dataset_from_directory` (tf.data decoding and resizing the files in
parallel on every epoch) and prefetches with AUTOTUNE. These helpers build exactly that
over the files of a tlx split, and time epochs the way both benchmarks report them.
"""

from __future__ import annotations

import time
from pathlib import Path

from tlx import files


def link_split(split_json: Path, root: Path) -> Path:
    """root/{train,validation,test}/<class>/<n>_<name>: links to the files of a run's split.json."""
    from tlx.run_dir import Split

    split = Split.from_json(files.read_json(split_json))
    for part in ("train", "validation", "test"):
        for n, (path, label) in enumerate(getattr(split, part)):
            target = root / part / split.classes[label] / f"{n:06d}_{Path(path).name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    return root


def tutorial_dataset(folder: Path, image_size: int, shuffle: bool, seed: int = 0, batch_size: int = 32, **kwargs):
    """The tutorial's pipeline over a folder of class folders."""
    import keras
    import tensorflow as tf

    ds = keras.utils.image_dataset_from_directory(folder, shuffle=shuffle, seed=seed, batch_size=batch_size,
                                                  image_size=(image_size, image_size), **kwargs)
    return ds.prefetch(tf.data.AUTOTUNE)


def epoch_clock(times: list[float]):
    """A Keras callback appending each epoch's wall time (validation included) to `times`."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.started)

    return EpochClock()
