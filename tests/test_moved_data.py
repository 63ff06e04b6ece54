"""A run folder or data folder that moved still works: split.json stores photos relative to
the recorded data folder, --data-dir re-roots it, and a missing photo names the folder and
the option."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.test_bench import FAST, exported_run  # noqa: F401  (module-scoped fixture)
from tlx.errors import TlxError
from tlx.run_dir import Split, require_present

runner = CliRunner()


def _split(data_dir, outside) -> Split:
    return Split(classes=("a", "b"), train=((str(data_dir / "a" / "1.png"), 0),),
                 validation=((str(data_dir / "b" / "2.png"), 1),),
                 test=((str(data_dir / "b" / "sub" / "3.png"), 1), (str(outside), 0)),
                 data_dir=str(data_dir))


def test_paths_inside_the_data_folder_are_stored_relative(tmp_path):
    data, outside = tmp_path / "data", tmp_path / "elsewhere" / "4.png"
    stored = _split(data, outside).to_json()
    assert stored["train"] == [["a/1.png", 0]]
    assert stored["test"] == [["b/sub/3.png", 1], [str(outside), 0]]  # outside: kept absolute
    again = Split.from_json(stored)
    assert again == _split(data, outside)


def test_data_dir_reroots_relative_and_old_absolute_paths(tmp_path):
    data, moved, outside = tmp_path / "data", tmp_path / "moved", tmp_path / "elsewhere" / "4.png"
    old_style = _split(data, outside)
    old_json = {**old_style.to_json(),
                **{name: [[p, label] for p, label in getattr(old_style, name)]
                   for name in ("train", "validation", "test")}}
    for stored in (old_style.to_json(), old_json):
        rerooted = Split.from_json(json.loads(json.dumps(stored)), data_dir=moved)
        assert rerooted.data_dir == str(moved.resolve())
        assert rerooted.test[0] == (os.path.join(moved.resolve(), "b", "sub", "3.png"), 1)
        assert rerooted.test[1] == (str(outside), 0)  # not under the data folder: unchanged
    assert Split.from_json(old_json) == old_style  # an old absolute split reads as before


def test_missing_photos_name_the_folder_and_the_option(tmp_path):
    split = _split(tmp_path / "data", tmp_path / "elsewhere" / "4.png")
    with pytest.raises(TlxError) as error:
        require_present(split, "test")
    message = str(error.value)
    assert "2 of the 2 test photos" in message and str(tmp_path / "data") in message
    assert "--data-dir" in message


def test_bench_of_a_moved_run_and_data_folder(exported_run, tmp_path):  # noqa: F811
    from tlx.run_dir import RunDir

    recorded = RunDir(exported_run).read_split().data_dir
    run, data = tmp_path / "moved-run", tmp_path / "moved-data"
    shutil.copytree(exported_run, run, ignore=shutil.ignore_patterns("bench", "checkpoints"))
    shutil.copytree(recorded, data)
    split = json.loads((run / "split.json").read_text())
    split["data_dir"] = str(tmp_path / "gone")  # the recorded folder no longer exists
    (run / "split.json").write_text(json.dumps(split))

    result = runner.invoke(app(), ["bench", str(run), *FAST, "--no-keras", "--no-cold-start"])
    assert result.exit_code == 1 and "--data-dir" in result.output and "gone" in result.output
    assert "Traceback" not in result.output and not (run / "bench" / "bench.json").exists()

    result = runner.invoke(app(), ["bench", str(run), *FAST, "--no-keras", "--no-cold-start",
                                   "--data-dir", str(data), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads((run / "bench" / "bench.json").read_text())
    assert report["n_test"] == len(split["test"]) and not report["unreadable_test_images"]


def test_export_data_dir_option_reaches_the_split(exported_run, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    shutil.copytree(exported_run, run, ignore=shutil.ignore_patterns("bench", "checkpoints", "export"))
    split = json.loads((run / "split.json").read_text())
    split["data_dir"] = str(tmp_path / "gone")
    (run / "split.json").write_text(json.dumps(split))
    result = runner.invoke(app(), ["export", str(run)])
    assert result.exit_code == 1 and "--data-dir" in result.output and "Traceback" not in result.output
    assert not (run / "export").exists()


def app():
    from tlx.cli import app as tlx_app

    return tlx_app


def _other_photos_same_names(exported_run, tmp_path, strip_hashes=False):
    """The run copied, and a copy of its data folder in which three test photos hold other
    pictures (each another class's photo) under their own names."""
    from tlx.run_dir import RunDir

    split = RunDir(exported_run).read_split()
    run, data = tmp_path / "run", tmp_path / "other-data"
    shutil.copytree(exported_run, run, ignore=shutil.ignore_patterns("bench", "checkpoints"))
    shutil.copytree(split.data_dir, data)
    stored = json.loads((run / "split.json").read_text())
    assert len(stored["content_sha256"]) == len(split.train) + len(split.validation) + len(split.test)
    if strip_hashes:  # a run made before hashes were recorded
        del stored["content_sha256"]
        (run / "split.json").write_text(json.dumps(stored))
    by_label = {}
    for path, label in stored["test"]:
        by_label.setdefault(label, path)
    firsts = list(by_label.values())
    replaced = firsts[:3]
    for target, source in zip(replaced, firsts[1:] + firsts[:1]):
        (data / target).write_bytes((Path(split.data_dir) / source).read_bytes())
    return run, data, replaced


@pytest.mark.parametrize("command", ["bench", "export", "bundle"])
def test_data_dir_with_other_photos_under_the_same_names_is_refused(exported_run, tmp_path, command):  # noqa: F811
    run, data, replaced = _other_photos_same_names(exported_run, tmp_path)
    args = {"bench": ["bench", str(run), *FAST, "--no-keras", "--no-cold-start"],
            "export": ["export", str(run), "--format", "float32", "--out", str(tmp_path / "x")],
            "bundle": ["bundle", str(run), "-o", str(tmp_path / "b.zip")]}[command]
    result = runner.invoke(app(), [*args, "--data-dir", str(data)])
    assert result.exit_code == 1, result.output
    assert "3 of the" in result.output and "not the ones this run was trained with" in result.output
    assert all(name.split("/")[-1] in result.output for name in replaced)
    assert "--data-dir" in result.output and "Traceback" not in result.output
    assert not (run / "bench" / "bench.json").exists() and not (tmp_path / "x").exists()
    assert not (tmp_path / "b.zip").exists()


def test_a_run_without_recorded_hashes_still_works_and_says_it_is_not_checked(exported_run, tmp_path):  # noqa: F811
    run, data, _ = _other_photos_same_names(exported_run, tmp_path, strip_hashes=True)
    result = runner.invoke(app(), ["bench", str(run), *FAST, "--no-keras", "--no-cold-start",
                                   "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    assert result.output.count("records no content hashes") == 1 and "not checked" in result.output


def test_resume_refuses_files_that_hold_other_pictures_since_the_start(tmp_path):
    from tests.conftest import make_image_folder
    from tlx.errors import TlxError
    from tlx.trainer.data import load_data, load_split_images, source_folders

    data = make_image_folder(tmp_path / "data", classes=("a", "b"), per_class=10, size=(20, 20))
    images = load_data(data, image_size=16, seed=0, validation_fraction=0.4, test_fraction=0.5,
                       cache_dir=tmp_path / "cache")
    split = images.split
    first, other = split.train[0][0], split.test[0][0]
    Path(first).write_bytes(Path(other).read_bytes())
    with pytest.raises(TlxError, match="hold other pictures than when it started") as error:
        load_split_images(split, source_folders(data), cache_dir=tmp_path / "cache")
    assert first in str(error.value)
