"""Resume after damage: truncated or missing checkpoints, damaged state.json and config.json,
a full disk, Ctrl-C in the middle of a save, left-overs of a killed save. Through the CLI
(typer's CliRunner) on the tiny test backbone."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal

import pytest
from typer.testing import CliRunner

from tests.support.trainer import TINY, TINY_SPEC, make_image_folder, tiny_args, tiny_config
from tlx.cli import app
from tlx.run_dir import RunDir
from tlx.trainer import backbones, checkpoints
from tlx.trainer.train import train

runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def _tiny_registered():
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(backbones.BACKBONES, TINY, TINY_SPEC)
        yield


def _interrupt_after(epochs_done: int):
    import keras

    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 == epochs_done:
                raise KeyboardInterrupt

    return Stop()


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A run stopped after epoch 2 of 3: checkpoints of epochs 1 and 2 on disk."""
    root = tmp_path_factory.mktemp("interrupted")
    data = make_image_folder(root / "data")
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(data, root / "run", phase1_epochs=2, phase2_epochs=1), log=lambda _: None,
              callbacks=[_interrupt_after(2)])
    return RunDir(root / "run")


@pytest.fixture
def run(interrupted, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(interrupted.root, copy)
    return RunDir(copy)


def _entries(run: RunDir) -> list[dict]:
    return json.loads(run.state.read_text())["checkpoints"]


def _resume(run: RunDir):
    return runner.invoke(app, ["train", "--resume", str(run.root)])


def test_two_complete_checkpoints_are_kept_with_their_hashes(run):
    entries = _entries(run)
    assert [e["epochs_done"] for e in entries] == [1, 2]
    for entry in entries:
        path = run.checkpoints / entry["file"]
        assert path.stat().st_size == entry["bytes"] and len(entry["sha256"]) == 64
    # The history goes with each checkpoint: falling back to epoch 1 forgets epoch 2.
    assert len(entries[0]["history"]["phase1"]["loss"]) == 1
    assert len(entries[1]["history"]["phase1"]["loss"]) == 2


@pytest.mark.parametrize("damage", ["truncate", "delete", "garbage"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous(run, damage):
    latest = run.checkpoints / _entries(run)[-1]["file"]
    if damage == "truncate":
        latest.write_bytes(latest.read_bytes()[:1000])
    elif damage == "delete":
        latest.unlink()
    else:  # same size, different bytes: only the hash notices
        latest.write_bytes(b"\0" * latest.stat().st_size)
    result = _resume(run)
    assert result.exit_code == 0, result.output
    assert str(latest) in result.output and "damaged" in result.output
    assert "Resuming from the previous checkpoint" in result.output
    assert "after epoch 1 (phase 1)" in result.output
    history = json.loads(run.history.read_text())
    # Epoch 2 ran again from the checkpoint of epoch 1, then phase 2.
    assert len(history["phase1"]["loss"]) == 2 and len(history["phase2"]["loss"]) == 1
    assert run.model.is_file()


def test_no_usable_checkpoint_names_each_damaged_file(run):
    names = [e["file"] for e in _entries(run)]
    (run.checkpoints / names[0]).write_bytes(b"PK\3\4 not a keras file")
    (run.checkpoints / names[1]).unlink()
    result = _resume(run)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "No usable checkpoint" in result.output
    for name in names:
        assert name in result.output
    assert "--overwrite" in result.output


@pytest.mark.parametrize("content", [b'{"checkpoints": [{"file": "full_ep', b"{}", b"\xff\xfe garbage",
                                     b"[1, 2]", b'{"checkpoints": []}'])
def test_a_damaged_state_file_is_named(run, content):
    run.state.write_bytes(content)
    result = _resume(run)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert str(run.state) in result.output and "damaged" in result.output


@pytest.mark.parametrize("content", [b"garbage{", b"[1, 2]", b'{"options": {"image_size": "big"}}',
                                     b"\xff\xfe"])
def test_a_damaged_config_is_named_by_resume_and_export(run, content):
    options = json.loads(run.config.read_text())["options"]
    if b"big" in content:
        content = json.dumps({"options": {**options, "image_size": "big"}}).encode()
    run.config.write_bytes(content)
    for args in (["train", "--resume", str(run.root)], ["export", str(run.root)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1 and "Traceback" not in result.output, args
        assert str(run.config) in result.output, (args, result.output)
    if b"big" in content:
        assert "image_size is 'big', expected int" in result.output


def test_a_non_utf8_labels_file_is_named_by_export(run):
    run.labels.write_bytes(b"cat\n\xffdog\n")
    result = runner.invoke(app, ["export", str(run.root)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert str(run.labels) in result.output and "UTF-8" in result.output


def test_leftovers_of_a_killed_save_are_removed_on_resume(run):
    staged = run.checkpoints / ".save-abc123"
    staged.mkdir()
    (staged / "full_epoch003.keras").write_bytes(b"half")
    temp = run.checkpoints / ".state.json.xyz.tmp"
    temp.write_text("{")
    beside_model = run.root / ".save-def456"
    beside_model.mkdir()
    result = _resume(run)
    assert result.exit_code == 0, result.output
    assert not staged.exists() and not temp.exists() and not beside_model.exists()
    assert "left-over" in result.output


def test_ctrl_c_during_a_save_reports_what_state_json_holds(run, monkeypatch):
    """SIGINT arrives while epoch 3's checkpoint is being written: the save completes, then the
    run stops, and the message names the epoch that state.json lists."""
    real_save = checkpoints.save_model

    def interrupted_save(model, path):
        os.kill(os.getpid(), signal.SIGINT)
        real_save(model, path)

    monkeypatch.setattr(checkpoints, "save_model", interrupted_save)
    result = _resume(run)
    assert result.exit_code == 130, result.output
    assert _entries(run)[-1]["epochs_done"] == 3
    assert "The last complete epoch (3, phase 2) is saved" in result.output


def test_a_full_disk_while_saving_is_a_message_and_the_previous_checkpoint_stays(run, monkeypatch):
    before = _entries(run)

    def full_disk(model, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoints, "save_model", full_disk)
    result = _resume(run)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "No space left on device" in result.output
    assert "the checkpoint of epoch 2 is intact" in result.output
    assert _entries(run) == before
    monkeypatch.undo()
    assert _resume(run).exit_code == 0  # once there is space again


def test_overwrite_removes_everything_made_from_the_replaced_model(tmp_path):
    data = make_image_folder(tmp_path / "data")
    run = RunDir(tmp_path / "run")
    assert runner.invoke(app, tiny_args(data, run.root)).exit_code == 0
    for path in (run.export / "model_int8.tflite", run.bench_json, run.report):
        path.parent.mkdir(exist_ok=True)
        path.write_text("from the old model")
    result = runner.invoke(app, tiny_args(data, run.root, "--overwrite"))
    assert result.exit_code == 0, result.output
    assert not run.export.exists() and not run.bench.exists() and not run.report.exists()
    assert run.model.is_file()
