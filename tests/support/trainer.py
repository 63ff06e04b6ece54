"""Helpers for the trainer tests: a tiny backbone so that both phases run in seconds.

MobileNetV2 at 32 px still needs ~15-35 s per phase on a 2-core CPU just to trace its
training step; the tiny backbone keeps what the trainer relies on (BatchNorm layers,
a layer index to fine-tune from, a Keras functional model that saves and loads) at a
fraction of the cost. One marked test runs the real MobileNetV2 end to end.
"""

from __future__ import annotations

import os

from pathlib import Path

import pytest

from tlx.trainer import backbones

from tests.conftest import REPO, make_image_folder  # noqa: F401
from tlx.trainer.backbones import MINUS_ONE_TO_ONE, BackboneSpec
from tlx.trainer.weights import load_weights_file

TINY = "tiny_test"


def _build_tiny(input_shape, weights):
    import keras

    inputs = keras.Input(shape=input_shape)
    x = inputs
    for i, filters in enumerate((4, 8, 8)):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    model = keras.Model(inputs, x, name="tiny")
    if weights not in (None, "imagenet"):
        load_weights_file(model, weights)
    return model


TINY_SPEC = BackboneSpec(
    build=_build_tiny, normalization=MINUS_ONE_TO_ONE, default_image_size=32,
    # input + conv0/bn0/relu0 frozen in phase 2; conv1 on trains.
    default_fine_tune_at=4, weights_source="none (test only)", weights_status=lambda: "offline",
    description="3 conv/BN/ReLU blocks for fast tests",
)


@pytest.fixture
def tiny_backbone(monkeypatch):
    monkeypatch.setitem(backbones.BACKBONES, TINY, TINY_SPEC)
    return TINY


def tiny_args(data: Path, out: Path, *extra: str) -> list[str]:
    """CLI arguments for a fast run on the tiny backbone."""
    return ["train", str(data), "--out", str(out), "--backbone", TINY, "--weights", "none",
            "--image-size", "32", "--phase1-epochs", "1", "--phase2-epochs", "1", "--batch-size", "8",
            *extra]


def tiny_config(data: Path, out: Path, **changes):
    from tlx.run_config import TrainConfig

    options = dict(data_dir=data, out=out, backbone=TINY, weights="none", image_size=32,
                   phase1_epochs=1, phase2_epochs=1, batch_size=8)
    options.update(changes)
    return TrainConfig(**options)


#: Environment variable of a LAUNCH process that holds after its first checkpoint: "READY,RELEASE",
#: two pipe ends it inherited (CheckpointHold). Events both ways, never a poll: the test's read
#: of READY ends when the process holds (a byte) or dies (end of file), and the process goes on
#: when the test closes its end of RELEASE. The run cannot finish meanwhile, however slow the
#: machine.
HOLD_FDS = "TLX_TEST_HOLD_AFTER_FIRST_CHECKPOINT"


def hold_after_first_checkpoint() -> None:
    """In a LAUNCH process with HOLD_FDS set: the first CheckpointStore.save says so on READY
    and returns only once RELEASE ends."""
    from tlx.trainer import checkpoints

    fds, save = os.environ.get(HOLD_FDS), checkpoints.CheckpointStore.save
    if not fds:
        return
    ready, release = (int(fd) for fd in fds.split(","))

    def save_then_hold(self, *args, **kwargs):
        nonlocal fds
        result = save(self, *args, **kwargs)
        if fds:
            fds = None
            os.write(ready, b"h")
            os.read(release, 1)  # end of file when the test lets go
        return result
    checkpoints.CheckpointStore.save = save_then_hold


class CheckpointHold:
    """The test's side of HOLD_FDS: start the process with `env()` and `pass_fds()`, call
    `started()`, then `wait_held(process)`, do what must happen while it holds, `release()`."""

    def __init__(self):
        self._ready, self._ready_child = os.pipe()
        self._release_child, self._release = os.pipe()

    def env(self) -> dict:
        return {HOLD_FDS: f"{self._ready_child},{self._release_child}"}

    def pass_fds(self) -> tuple[int, int]:
        return (self._ready_child, self._release_child)

    def started(self) -> None:
        """The child has its ends: closing ours lets its death end the wait."""
        os.close(self._ready_child)
        os.close(self._release_child)

    def wait_held(self, process) -> None:
        """Until `process` holds after its first checkpoint; fails (with its stderr) if it ended."""
        held = os.read(self._ready, 1)
        assert held, process.communicate()[1][-3000:]

    def release(self) -> None:
        os.close(self._release)
        os.close(self._ready)


#: `tlx` with the tiny test backbone registered, for `python -c LAUNCH ARGS...`: a worker
#: subprocess cannot see a monkeypatch. The repository goes first on sys.path, as pytest puts
#: it for the test process (tests/ is a package), so `tests.support.trainer` and `tlx` import
#: from the same place in the worker as in the test, from any working directory.
LAUNCH = (
    "import sys\n"
    f"sys.path.insert(0, {str(REPO)!r})\n"
    "from tests.support.trainer import TINY, TINY_SPEC, hold_after_first_checkpoint\n"
    "from tlx.trainer import backbones\n"
    "backbones.BACKBONES[TINY] = TINY_SPEC\n"
    "hold_after_first_checkpoint()\n"
    "from tlx.cli import app\n"
    "app(sys.argv[1:], prog_name='tlx')\n"
)


def free_ports(n: int) -> list[int]:
    """`n` TCP ports on 127.0.0.1 that were free a moment ago (for TF_CONFIG)."""
    import socket

    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
