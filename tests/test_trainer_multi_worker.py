"""--strategy multi-worker: two worker processes on 127.0.0.1 (CPU, tiny backbone) against
the same training on one machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tests.support.trainer import (LAUNCH, REPO, CheckpointHold, free_ports, make_image_folder,  # noqa: F401
                                   tiny_args, tiny_backbone)
from tlx.cli import app
from tlx.errors import TlxError
from tlx.run_config import Strategy
from tlx.trainer.distribute import cluster

runner = CliRunner()


#: Final validation accuracy, two workers against one: the batches are the same, but the
#: gradient is the mean of two half-batch means, summed in another order, and dropout
#: draws differ per process, so the runs are close, not bit-identical.
ACCURACY_TOLERANCE = 0.15


def _tf_config(ports, index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def _start_workers(args: list[str], tmp, count: int = 2, hold: CheckpointHold | None = None):
    """`count` LAUNCH workers on free ports; with `hold`, the chief holds after its first
    checkpoint (CheckpointHold)."""
    ports = free_ports(count)
    # TMPDIR: the non-chief's temporary run folder (and what a killed worker leaves) stays in tmp.
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "-1", "TMPDIR": str(tmp)}
    chief = {"env": hold.env(), "pass_fds": hold.pass_fds()} if hold else {"env": {}, "pass_fds": ()}
    procs = [subprocess.Popen([sys.executable, "-c", LAUNCH, *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, pass_fds=chief["pass_fds"] if i == 0 else (),
                              env={**env, "TF_CONFIG": _tf_config(ports, i), **(chief["env"] if i == 0 else {})})
             for i in range(count)]
    if hold:
        hold.started()
    return procs


def _workers(args: list[str], tmp, count: int = 2, timeout: int = 420):
    """Run `count` workers to their end: (returncode, stdout, stderr) of each."""
    procs = _start_workers(args, tmp, count)
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            results.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return results


@pytest.mark.multi_worker
def test_two_workers_train_like_one_machine_and_only_the_chief_writes(tmp_path, tiny_backbone):
    data = make_image_folder(tmp_path / "data", per_class=30)
    # 48 train images in batches of 8 = 6 steps per epoch, each worker 4 rows of each batch.
    args = tiny_args(data, tmp_path / "run", "--strategy", "multi-worker", "--json", "--no-augment",
                     "--phase1-epochs", "2", "--phase2-epochs", "1", "--learning-rate", "0.2")
    (code0, out0, err0), (code1, out1, err1) = _workers(args, tmp_path)
    assert code0 == 0, err0[-3000:]
    assert code1 == 0, err1[-3000:]
    run = tmp_path / "run"
    for name in ("model.keras", "history.json", "metrics.json", "config.json", "split.json", "labels.txt"):
        assert (run / name).is_file(), name
    assert json.loads((run / "config.json").read_text())["options"]["strategy"] == "multi-worker"
    # Worker 1 wrote to a folder of its own and removed it.
    assert "worker 0 writes" in err1
    worker_dir = err1.split("its checkpoints to ")[1].split(" (removed")[0]
    assert not os.path.exists(worker_dir)
    chief, worker = json.loads(out0), json.loads(out1)
    assert chief["run_dir"] == str(run)

    single = runner.invoke(app, tiny_args(data, tmp_path / "single", "--json", "--no-augment",
                                          "--phase1-epochs", "2", "--phase2-epochs", "1",
                                          "--learning-rate", "0.2"))
    assert single.exit_code == 0, single.output
    one = json.loads(single.stdout)
    history = json.loads((run / "history.json").read_text())
    history_one = json.loads((tmp_path / "single" / "history.json").read_text())
    for phase in ("phase1", "phase2"):
        assert history[phase]["steps"] == history_one[phase]["steps"], phase
    assert history["phase1"]["steps"] == [6, 6]
    # Both workers report the same (all-reduced) metrics; one machine is within the tolerance.
    assert chief["phase2"]["val_accuracy"] == pytest.approx(worker["phase2"]["val_accuracy"])
    assert abs(chief["phase2"]["val_accuracy"] - one["phase2"]["val_accuracy"]) <= ACCURACY_TOLERANCE
    # The task is learnable (so the comparison means something), and two workers learn it too.
    assert one["phase2"]["val_accuracy"] >= 0.9


@pytest.mark.parametrize("value, message", [
    (None, "needs the TF_CONFIG"),
    ("not json", "is not JSON"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}', "index"),
    ('{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker", "index": 0}}', "only"),
])
def test_tf_config_errors_say_what_to_set(value, message):
    environ = {} if value is None else {"TF_CONFIG": value}
    with pytest.raises(TlxError, match=message):
        cluster(Strategy.MULTI_WORKER, environ)
    assert cluster(Strategy.DEFAULT, environ) is None
    place = cluster(Strategy.MULTI_WORKER, {"TF_CONFIG": _tf_config([1, 2], 1)})
    assert place.workers == 2 and place.index == 1 and not place.is_chief


def test_multi_worker_without_tf_config_is_a_message(tmp_path, tiny_backbone, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    data = make_image_folder(tmp_path / "data")
    result = runner.invoke(app, tiny_args(data, tmp_path / "run", "--strategy", "multi-worker"))
    assert result.exit_code == 1 and "TF_CONFIG" in result.output and "Traceback" not in result.output
    cached = runner.invoke(app, tiny_args(data, tmp_path / "run", "--strategy", "multi-worker",
                                          "--cache-features", "--no-augment"))
    assert cached.exit_code == 1 and "--cache-features" in cached.output


@pytest.mark.multi_worker
def test_a_worker_dies_then_every_worker_resumes_from_the_chiefs_checkpoint(tmp_path, tiny_backbone):
    import signal

    data = make_image_folder(tmp_path / "data", per_class=30)
    run = tmp_path / "run"
    args = tiny_args(data, run, "--strategy", "multi-worker", "--phase1-epochs", "12", "--phase2-epochs", "0")
    # The chief holds after its first checkpoint until the worker is dead: the kill lands in
    # the run, never after it, however slow the machine.
    hold = CheckpointHold()
    procs = _start_workers(args, tmp_path, hold=hold)
    try:
        state = run / "checkpoints" / "state.json"
        hold.wait_held(procs[0])
        procs[1].send_signal(signal.SIGKILL)
        procs[1].wait()
        hold.release()
        _, err = procs[0].communicate(timeout=300)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    # The chief stops with a message (not a hang), its last complete epoch kept.
    assert procs[0].returncode == 1
    assert "Another worker of the cluster stopped" in err and f"--resume {run}" in err
    done = json.loads(state.read_text())["checkpoints"][-1]["epochs_done"]
    assert done == 1  # the worker died while the chief held after its first checkpoint

    results = _workers(["train", "--resume", str(run), "--json"], tmp_path, timeout=600)
    assert [code for code, _, _ in results] == [0, 0], results[1][2][-3000:] + results[0][2][-3000:]
    assert f"after epoch {done} " in results[0][2]
    history = json.loads((run / "history.json").read_text())
    assert len(history["phase1"]["loss"]) == 12 and json.loads(state.read_text())["finished"]


@pytest.mark.multi_worker
def test_sigterm_during_training_stops_the_chief_like_ctrl_c(tmp_path, tiny_backbone):
    """TensorFlow takes SIGTERM for a preemption notice that stops nothing; tlx gives it back."""
    import signal

    data = make_image_folder(tmp_path / "data", per_class=30)
    run = tmp_path / "run"
    # Epochs the run cannot finish before the signal, however busy the machine: the signal
    # follows the first checkpoint (the chief holds there until the test lets it go on), and
    # the work is still running then.
    args = tiny_args(data, run, "--strategy", "multi-worker", "--phase1-epochs", "10000", "--phase2-epochs", "0")
    hold = CheckpointHold()
    procs = _start_workers(args, tmp_path, hold=hold)
    try:
        hold.wait_held(procs[0])
        hold.release()
        procs[0].send_signal(signal.SIGTERM)
        out0, err0 = procs[0].communicate(timeout=300)
        out1, err1 = procs[1].communicate(timeout=300)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    output0 = out0 + err0
    assert procs[0].returncode == 130, output0[-3000:]
    assert "Interrupted. The last complete epoch" in output0 and f"--resume {run}" in output0
    # The other worker stops too, with a message.
    assert procs[1].returncode == 1 and "Another worker of the cluster stopped" in out1 + err1, err1[-3000:]
    assert "Traceback" not in output0 + out1 + err1
