"""What a data folder can hold that would otherwise be lost or mixed up: class names that do not
survive labels.txt, hidden folders, looping links, a link back to the data folder, images over
--max-pixels. Through the CLI (typer's CliRunner) on the tiny test backbone."""

from __future__ import annotations

import struct
import zlib

import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.support.trainer import make_image_folder, tiny_args, tiny_backbone  # noqa: F401
from tlx.cli import app
from tlx.errors import ImageError
from tlx.imaging import load_image
from tlx.run_dir import RunDir

runner = CliRunner()


@pytest.mark.parametrize("names, shown", [
    ((" dog", "cat "), "starts or ends with a space"),
    (("dog", "dog "), "starts or ends with a space"),
    (("cat", "do\ng"), "control characters"),
    (("cat", "dog\x1b]0;pwned\x07"), "control characters"),
])
def test_class_names_that_would_not_survive_labels_txt_are_refused_before_training(tmp_path, names, shown):
    data = make_image_folder(tmp_path / "data", classes=names, per_class=3)
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(data), "--out", str(out), "--weights", "none"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert shown in result.output and str(data) in result.output and "Rename the folders" in result.output
    assert not RunDir(out).config.exists() and not RunDir(out).labels.exists()


def test_class_names_round_trip_exactly(tmp_path, tiny_backbone):  # noqa: F811
    names = ("golden retriever", "Ünïcode  cat", "x-ray #1")
    data = make_image_folder(tmp_path / "data", classes=names, per_class=6)
    run = RunDir(tmp_path / "run")
    result = runner.invoke(app, tiny_args(data, run.root, "--phase2-epochs", "0"))
    assert result.exit_code == 0, result.output
    assert run.read_labels() == sorted(names) == list(run.read_split().classes)


def test_a_hand_edited_labels_file_is_refused_naming_the_line(tmp_path):
    run = RunDir(tmp_path)
    run.labels.write_text("cat\n dog\n")
    with pytest.raises(Exception, match=r"line 2 \(' dog'\)"):
        run.read_labels()


def test_hidden_folders_looping_links_and_skipped_files_are_reported(tmp_path, tiny_backbone):  # noqa: F811
    data = make_image_folder(tmp_path / "data")
    (data / ".thumbnails").mkdir()
    loop = data / "cat" / "loop.jpg"
    loop.symlink_to(loop)
    result = runner.invoke(app, tiny_args(data, tmp_path / "run", "--phase2-epochs", "0"))
    assert result.exit_code == 0, result.output
    assert "ignored hidden folder(s)" in result.output and ".thumbnails" in result.output
    assert f"{loop}: a symbolic link that leads nowhere" in result.output
    skipped = dict(RunDir(tmp_path / "run").read_split().skipped)
    assert any(path.endswith("loop.jpg") for path in skipped)


def test_a_link_from_the_data_folder_to_itself_is_named_not_blamed_on_test_dir(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=4)
    (data / "again").symlink_to(data)
    result = runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "run"), "--weights", "none"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"{data / 'again'} is a link to the data folder itself" in result.output
    assert "--test-dir" not in result.output


def test_the_same_image_twice_through_a_file_link_names_both(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=4)
    (data / "dog" / "also_a_cat.png").symlink_to(data / "cat" / "cat_000.png")
    result = runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "run"), "--weights", "none"])
    assert result.exit_code == 1 and "same file" in result.output
    assert "also_a_cat.png" in result.output and "cat_000.png" in result.output


def _png_claiming(path, width, height):
    """A real 8x8 PNG whose header claims width x height (Pillow reads only the header on open)."""
    Image.new("RGB", (8, 8)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])))
    path.write_bytes(bytes(data))
    return path


def test_max_pixels_decides_even_above_pillows_own_limit(tmp_path):
    """Pillow refuses more than 2 x 89,478,485 pixels by itself, with its own figure; --max-pixels
    must be the one limit, and its message quotes the user's figure."""
    huge = _png_claiming(tmp_path / "huge.png", 20_000, 10_000)  # 200 M pixels
    with pytest.raises(ImageError, match="over the limit of 190,000,000"):
        load_image(huge, 8, max_pixels=190_000_000)
    with pytest.raises(ImageError) as caught:
        load_image(huge, 8, max_pixels=250_000_000)  # allowed: Pillow then decodes (and fails on data)
    assert "decompression bomb" not in str(caught.value) and "limit" not in str(caught.value)
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's global is restored
