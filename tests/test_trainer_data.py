"""Folders -> splits: layouts, determinism, no leaks, bad files, clear errors. No TensorFlow
except the two tf.data tests at the end."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

try:  # tests/ imported as a package, or as a folder on sys.path
    from tests.conftest import make_image_folder
except ImportError:
    from conftest import make_image_folder
from tlx.errors import TlxError
from tlx.run_dir import Split
from tlx.trainer.data import check_split, load_data, split_files


def _all(split: Split):
    return [p for name in ("train", "validation", "test") for p, _ in getattr(split, name)]


def _assert_disjoint(split: Split):
    sets = [set(p for p, _ in getattr(split, name)) for name in ("train", "validation", "test")]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert len(_all(split)) == len(set(_all(split)))


def test_class_folder_layout_split_is_disjoint_complete_and_seeded(tmp_path):
    data = make_image_folder(tmp_path / "data", classes=("a", "b", "c"), per_class=15)
    images = load_data(data, image_size=16, seed=1)
    split = images.split
    assert split.classes == ("a", "b", "c")
    _assert_disjoint(split)
    every = sorted(str(p) for p in data.rglob("*.png"))
    assert sorted(_all(split)) == every
    # Stratified: each class gives round(15 * 0.2) = 3 to validation+test; 20% of 9 -> 2 to test.
    assert len(split.train) == 36 and len(split.validation) + len(split.test) == 9 and len(split.test) == 2
    assert {label for _, label in split.validation} == {0, 1, 2}
    # Labels follow the folder names.
    for path, label in _all_items(split):
        assert os.path.basename(os.path.dirname(path)) == split.classes[label]
    # Same seed, same split; another seed, another split.
    assert load_data(data, image_size=16, seed=1).split == split
    assert load_data(data, image_size=16, seed=2).split.test != split.test
    # Decoded once, to the requested size, uint8 RGB.
    x, y = images.arrays("train")
    assert x.shape == (36, 16, 16, 3) and x.dtype == np.uint8 and y.shape == (36,)


def _all_items(split):
    return [item for name in ("train", "validation", "test") for item in getattr(split, name)]


@pytest.mark.parametrize("seed", range(20))
def test_no_file_in_two_splits_for_any_seed(seed):
    files = {c: [f"/d/{c}/{i}.png" for i in range(n)] for c, n in (("x", 7), ("y", 23), ("z", 2))}
    train, val, test = split_files(("x", "y", "z"), files, seed=seed, validation_fraction=0.3,
                                   test_fraction=0.4)
    paths = [p for p, _ in train + val + test]
    assert len(paths) == len(set(paths)) == 32
    assert test and val


def test_test_set_keeps_the_class_mix_of_validation():
    files = {c: [f"/d/{c}/{i}.png" for i in range(n)] for c, n in (("a", 125), ("b", 50), ("c", 37))}
    train, val, test = split_files(("a", "b", "c"), files, seed=0, validation_fraction=0.4,
                                   test_fraction=0.5)
    per_class = lambda items: [sum(1 for _, label in items if label == k) for k in range(3)]  # noqa: E731
    assert per_class(val) == [25, 10, 8] and per_class(test) == [25, 10, 7]


def test_tutorial_take_on_reshuffled_dataset_leaks_and_ours_does_not(tmp_path):
    """The tutorial: test = val.take(k); val = val.skip(k) on a dataset reshuffled every
    iteration. Two passes give different 'test' sets, so images drift between them. Our
    split is a fixed file list written to split.json."""
    import tensorflow as tf

    ds = tf.data.Dataset.range(50).shuffle(50, seed=0, reshuffle_each_iteration=True)
    test, val = ds.take(10), ds.skip(10)
    test_once = {int(v) for v in test}
    val_once = {int(v) for v in val}
    assert test_once & val_once, "the tutorial's pattern leaks (the bug we avoid)"

    data = make_image_folder(tmp_path / "data", per_class=25)
    split = load_data(data, image_size=8, seed=0).split
    _assert_disjoint(split)
    round_trip = Split.from_json(json.loads(json.dumps(split.to_json())))
    assert round_trip == split


def test_presplit_layout_and_test_from_validation(tmp_path):
    make_image_folder(tmp_path / "d" / "train", per_class=8)
    make_image_folder(tmp_path / "d" / "validation", per_class=5, seed=1)
    split = load_data(tmp_path / "d", image_size=8, seed=0, test_fraction=0.2).split
    assert split.classes == ("cat", "dog")
    assert all("/train/" in p for p, _ in split.train) and len(split.train) == 16
    assert all("/validation/" in p for p, _ in split.validation + split.test)
    assert len(split.test) == 2 and len(split.validation) == 8
    _assert_disjoint(split)


def test_test_dir_is_the_test_set_and_may_not_overlap(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=10)
    test_dir = make_image_folder(tmp_path / "test", per_class=3, seed=5)
    split = load_data(data, image_size=8, seed=0, test_dir=test_dir).split
    assert sorted(p for p, _ in split.test) == sorted(str(p) for p in test_dir.rglob("*.png"))
    assert len(split.validation) == 4 and len(split.train) == 16
    with pytest.raises(TlxError, match="both the .* split"):
        load_data(data, image_size=8, seed=0, test_dir=data)
    make_image_folder(tmp_path / "test2", classes=("cat", "horse"), per_class=2)
    with pytest.raises(TlxError, match="horse"):
        load_data(data, image_size=8, seed=0, test_dir=tmp_path / "test2")


def _save_modes(folder):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("L").save(folder / "gray.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    Image.fromarray(np.dstack([rgb, np.full((20, 24), 128, np.uint8)])).save(folder / "rgba.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257).save(folder / "deep16.png")
    assert Image.open(folder / "deep16.png").mode.startswith("I")


def test_bad_files_are_skipped_and_listed_odd_modes_become_rgb(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=10)
    cat = data / "cat"
    (cat / "corrupt.jpg").write_bytes(os.urandom(300))
    good = (cat / "cat_000.png").read_bytes()
    (cat / "truncated.png").write_bytes(good[: len(good) // 2])
    (cat / "notes.txt").write_text("not an image")
    (cat / "text.jpg").write_text("a text file with an image name")
    Image.new("RGB", (200, 200)).save(cat / "bomb.png")
    (cat / ".DS_Store").write_bytes(b"\0\1")  # hidden: ignored, not reported
    _save_modes(data / "dog")
    messages = []
    images = load_data(data, image_size=12, seed=0, max_pixels=150 * 150, log=messages.append)
    split = images.split
    skipped = {os.path.basename(p): reason for p, reason in split.skipped}
    assert set(skipped) == {"corrupt.jpg", "truncated.png", "notes.txt", "text.jpg", "bomb.png"}
    assert "limit" in skipped["bomb.png"] and "suffix" in skipped["notes.txt"]
    warning = "\n".join(messages)
    assert "skipped 5 file(s)" in warning
    for name in skipped:
        assert name in warning
    assert not any(name in p for p in _all(split) for name in skipped)
    for name in ("gray.png", "palette.png", "rgba.png", "cmyk.jpg", "deep16.png"):
        path = str(data / "dog" / name)
        assert path in _all(split)
        pixels = images.pixels[images.cache.rows[path]]
        assert pixels.shape == (12, 12, 3) and pixels.dtype == np.uint8


@pytest.mark.parametrize("case, match", [
    ("missing", "does not exist"),
    ("no_class_folders", "no class folders"),
    ("loose_images", "one sub-folder per class"),
    ("single_class", "single class"),
    ("empty_class", "empty class folders .*dog"),
    ("no_readable_images", "without a single readable image"),
    ("empty_test", "test split is empty"),
])
def test_clear_errors_before_training(tmp_path, case, match):
    data = tmp_path / "data"
    if case == "no_class_folders":
        data.mkdir()
    elif case == "loose_images":
        data.mkdir()
        Image.new("RGB", (8, 8)).save(data / "x.png")
    elif case == "single_class":
        make_image_folder(data, classes=("cat",))
    elif case == "empty_class":
        make_image_folder(data, classes=("cat",))
        (data / "dog").mkdir()
    elif case == "no_readable_images":
        make_image_folder(data, classes=("cat",))
        (data / "dog").mkdir()
        (data / "dog" / "broken.jpg").write_bytes(b"nope")
    elif case == "empty_test":
        make_image_folder(data, per_class=3)
    with pytest.raises(TlxError, match=match):
        load_data(data, image_size=8, seed=0, log=lambda _: None)


def test_check_split_rejects_duplicates_across_splits():
    split = Split(classes=("a", "b"), train=(("/x/1.png", 0),), validation=(("/x/1.png", 0),),
                  test=(("/x/2.png", 1),))
    with pytest.raises(TlxError, match="both"):
        check_split(split)


def test_tf_data_pipeline_gathers_rows_as_float_pixels_with_their_labels():
    from tlx.trainer.pipeline import make_dataset

    pixels = np.arange(6 * 4 * 4 * 3, dtype=np.uint8).reshape(6, 4, 4, 3)
    rows = np.array([5, 0, 3, 1, 4])
    ds = make_dataset(pixels, rows, np.array([0, 1, 0, 1, 1]), num_classes=2, batch_size=2)
    batches = list(ds)
    assert [len(b[0]) for b in batches] == [2, 2, 1]
    assert batches[0][0].dtype.name == "float32" and batches[0][1].dtype.name == "float32"
    np.testing.assert_array_equal(batches[0][0].numpy(), pixels[[5, 0]].astype(np.float32))
    np.testing.assert_array_equal(batches[0][1].numpy(), [0.0, 1.0])
    # Shuffled: every epoch a fresh order, and each image keeps its own label.
    many = np.arange(64)
    labels = many % 3
    ds3 = make_dataset(np.repeat(many.astype(np.uint8), 3).reshape(64, 1, 1, 3), many, labels,
                       num_classes=3, batch_size=64, shuffle=True, seed=1)
    orders = []
    for x, y in list(ds3) + list(ds3):
        assert y.dtype.name == "int32"
        seen = x.numpy()[:, 0, 0, 0].astype(int)
        np.testing.assert_array_equal(y.numpy(), seen % 3)
        assert sorted(seen) == list(range(64))
        orders.append(seen.tolist())
    assert orders[0] != orders[1]


def test_worker_shares_make_up_the_batches_of_one_machine():
    from tlx.trainer.pipeline import make_dataset

    rows = np.arange(21)
    pixels = np.repeat(rows.astype(np.uint8), 3).reshape(21, 1, 1, 3)

    def batches(shard):
        ds = make_dataset(pixels, rows, rows % 2, num_classes=2, batch_size=8, shuffle=True, seed=3,
                          shard=shard)
        return [x.numpy()[:, 0, 0, 0].astype(int).tolist() for x, _ in ds]

    whole = batches(None)
    shares = [batches((i, 2)) for i in range(2)]
    assert [len(b) for b in whole] == [8, 8, 5] and [len(s) for s in shares] == [3, 3]
    for batch, first, second in zip(whole, *shares):
        assert sorted(first + second) == sorted(batch) and not set(first) & set(second)
    # A last batch too small to give each of 8 workers a row is left out on every worker.
    assert [len(b) for b in batches((7, 8))] == [1, 1]


def test_repeated_pipeline_passes_are_fresh_shuffles_of_epoch_batches_each():
    from tlx.trainer.pipeline import epoch_batches, make_dataset

    rows = np.arange(21)
    pixels = np.repeat(rows.astype(np.uint8), 3).reshape(21, 1, 1, 3)
    for shard, workers in ((None, 1), ((0, 2), 2), ((7, 8), 8)):
        once = make_dataset(pixels, rows, rows % 2, num_classes=2, batch_size=8, shard=shard)
        assert epoch_batches(21, 8, workers) == len(list(once))
    # fit(steps_per_epoch=epoch_batches(...)) on the endless pipeline: each pass is every
    # row once, in a new order.
    steps = epoch_batches(21, 8)
    endless = iter(make_dataset(pixels, rows, rows % 2, num_classes=2, batch_size=8, shuffle=True, seed=3,
                                repeat=True))
    passes = [[int(v) for _ in range(steps) for v in next(endless)[0].numpy()[:, 0, 0, 0]] for _ in range(3)]
    assert all(sorted(p) == list(range(21)) for p in passes)
    assert passes[0] != passes[1] != passes[2]


def test_images_are_decoded_with_the_runs_preprocessing_version(tmp_path):
    from tlx.imaging import load_image
    from tlx.run_config import TrainConfig

    data = tmp_path / "d"
    for name in ("a", "b"):
        (data / name).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(np.random.default_rng(i).integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(
                data / name / f"{i}.png")
    path = str(data / "a" / "0.png")
    for version in (1, 2, 3):  # one pixel cache entry per version
        images = load_data(data, image_size=8, seed=0, test_fraction=0.5, preprocessing=version)
        row = images.cache.rows_of([path])[0]
        np.testing.assert_array_equal(images.pixels[row], load_image(path, 8, version=version))
    # A run saved before versions existed resumes (and exports) with version 1; new runs use 3.
    old = TrainConfig.from_json({"data_dir": "d", "out": "o", "image_size": 8})
    assert old.preprocessing == 1 and TrainConfig(data_dir="d", out="o").preprocessing == 3
    assert TrainConfig.from_json(TrainConfig(data_dir="d", out="o").to_json()).preprocessing == 3
