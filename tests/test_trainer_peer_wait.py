"""--strategy multi-worker before any training: TF_CONFIG's schema, the address checks, the
workers' meeting (timeout, strangers, signals) and the Keras workaround's targets. Fast: no
TensorFlow cluster starts (the two-process training tests are in test_trainer_multi_worker.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests.support.trainer import LAUNCH, REPO, free_ports, make_image_folder, tiny_args, tiny_backbone  # noqa: F401
from tlx.cli import app
from tlx.errors import TlxError
from tlx.trainer import distribute, peer_wait, tf_config
from tlx.trainer.tf_config import Cluster

runner = CliRunner()


def config_dict(ports, index: int, host: str = "127.0.0.1") -> dict:
    return {"cluster": {"worker": [f"{host}:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}


def place(ports, index: int) -> Cluster:
    return tf_config.parse(json.dumps(config_dict(ports, index)))


# -- TF_CONFIG's schema -----------------------------------------------------------

GOOD = config_dict([2222, 2223], 1)


@pytest.mark.parametrize("value, message", [
    ("not json", "is not JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"task": {"type": "worker", "index": 0}}', "needs \"cluster\""),
    ('{"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}', "non-empty list"),
    ('{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}', "non-empty list"),
    ('{"cluster": {"worker": [7]}, "task": {"type": "worker", "index": 0}}', "not a \"host:port\" string"),
    ('{"cluster": {"worker": ["a"]}, "task": {"type": "worker", "index": 0}}', "has no port"),
    ('{"cluster": {"worker": [":2222"]}, "task": {"type": "worker", "index": 0}}', "empty host name"),
    ('{"cluster": {"worker": ["a b:2222"]}, "task": {"type": "worker", "index": 0}}', "not a host name"),
    ('{"cluster": {"worker": ["::1:2222"]}, "task": {"type": "worker", "index": 0}}', "IPv6"),
    ('{"cluster": {"worker": ["a:99999"]}, "task": {"type": "worker", "index": 0}}', "1 to 65535"),
    ('{"cluster": {"worker": ["a:0"]}, "task": {"type": "worker", "index": 0}}', "1 to 65535"),
    ('{"cluster": {"worker": ["a:-1"]}, "task": {"type": "worker", "index": 0}}', "1 to 65535"),
    ('{"cluster": {"worker": ["a:http"]}, "task": {"type": "worker", "index": 0}}', "1 to 65535"),
    ('{"cluster": {"worker": ["a:1", "A:1"]}, "task": {"type": "worker", "index": 0}}', "twice"),
    ('{"cluster": {"worker": ["a:1"]}}', "needs \"task\""),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "needs \"task\""),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}', "task.index is 3"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": -1}}', "task.index is -1"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": "0"}}', "task.index is \"0\""),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": true}}', "task.index is true"),
    ('{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker", "index": 0}}', "only"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}, "x": 1}', "unknown key"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}, "rpc_layer": "mpi"}',
     "rpc_layer"),
    (json.dumps({"cluster": {"worker": [f"h{i}:1" for i in range(300)]},
                 "task": {"type": "worker", "index": 0}}), "at most 256"),
    ("[" * 100_000, "characters long"),
    ("[" * 50_000, "is not JSON"),
])
def test_a_malformed_tf_config_is_named(value, message):
    with pytest.raises(TlxError, match=message) as caught:
        tf_config.parse(value)
    assert "Expected e.g." in str(caught.value)


def test_a_good_tf_config_and_the_other_strategies():
    found = tf_config.parse(json.dumps({**GOOD, "environment": "cloud", "rpc_layer": "grpc"}))
    assert found.workers == 2 and found.index == 1 and not found.is_chief
    assert str(found.address) == "127.0.0.1:2223" and found.name(0) == "worker 0 (127.0.0.1:2222)"
    v6 = tf_config.parse('{"cluster": {"worker": ["[::1]:5"]}, "task": {"type": "worker", "index": 0}}')
    assert v6.address.host == "::1" and str(v6.address) == "[::1]:5"
    assert tf_config.cluster("default", {}) is None
    with pytest.raises(TlxError, match="needs the TF_CONFIG"):
        tf_config.cluster("multi-worker", {})


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                  max_size=3),
                     max_leaves=8)
_PATHS = [(), ("cluster",), ("cluster", "worker"), ("cluster", "worker", 0), ("cluster", "worker", 1),
          ("task",), ("task", "type"), ("task", "index")]
_ADDRESSES = st.sampled_from(["a:1", "a:99999", "a:0", ":1", "a:", "[::1]:7", "::1:7", "b:65535",
                              "A:1", "a b:1", "a:1:2", "\x1b]0;x\x07:5"])


@st.composite
def mutated_tf_config(draw):
    """A valid TF_CONFIG dict with a few values replaced, removed or added."""
    config = json.loads(json.dumps(config_dict([2222, 2223, 2224], draw(st.integers(-1, 4)))))
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(_PATHS))
        parent, key = None, None
        node = config
        try:
            for part in path:
                if not isinstance(node, (dict, list)):
                    raise TypeError
                parent, key, node = node, part, node[part]
        except (KeyError, IndexError, TypeError):
            continue
        action = draw(st.sampled_from(["replace", "delete", "address", "add"]))
        if parent is None or action == "add":
            if isinstance(node, dict):
                node[draw(st.text(max_size=8))] = draw(_JSON)
            elif isinstance(node, list):
                node.append(draw(_ADDRESSES))
        elif action == "delete":
            del parent[key]
        else:
            parent[key] = draw(_ADDRESSES if action == "address" else _JSON)
    return config


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_tf_config())
def test_mutated_tf_configs_are_a_message_or_a_checked_cluster(config):
    try:
        found = tf_config.parse(json.dumps(config))
    except TlxError as exc:
        assert "TF_CONFIG" in str(exc) and "\x1b" not in str(exc)
        return
    # What is accepted holds what the rest of tlx relies on.
    assert 0 <= found.index < found.workers
    assert all(1 <= a.port <= 65535 and a.host for a in found.addresses)
    assert len({(a.host.lower(), a.port) for a in found.addresses}) == found.workers


@given(st.binary(max_size=peer_wait.MAX_LINE + 10))
def test_a_message_from_another_worker_is_a_flat_dict_or_refused(line):
    try:
        message = peer_wait.parse_message(line)
    except ValueError:
        return
    assert isinstance(message, dict)
    assert all(isinstance(v, (str, int, bool)) for v in message.values())


# -- address checks, through the CLI ------------------------------------------------

def _train(tmp_path, tf_config_value, *extra):
    data = make_image_folder(tmp_path / "data")
    env = {"TF_CONFIG": tf_config_value} if tf_config_value is not None else {}
    return runner.invoke(app, tiny_args(data, tmp_path / "run", "--strategy", "multi-worker", *extra), env=env)


def test_a_single_worker_tf_config_with_port_99999_is_refused_before_training(tmp_path, tiny_backbone):
    result = _train(tmp_path, '{"cluster": {"worker": ["127.0.0.1:99999"]}, "task": {"type": "worker", "index": 0}}')
    assert result.exit_code == 1
    assert "1 to 65535" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_a_port_in_use_is_named_before_training(tmp_path, tiny_backbone):
    taken = socket.create_server(("127.0.0.1", 0))
    try:
        port = taken.getsockname()[1]
        result = _train(tmp_path, json.dumps(config_dict([port, *free_ports(1)], 0)))
    finally:
        taken.close()
    assert result.exit_code == 1, result.output
    assert f"Port {port} of this machine" in result.output and "in use" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_two_names_of_one_host_and_port_are_refused(tmp_path, tiny_backbone):
    port = free_ports(1)[0]
    value = json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}", f"localhost:{port}"]},
                        "task": {"type": "worker", "index": 1}})
    result = _train(tmp_path, value)
    assert result.exit_code == 1 and "are the same host and port" in result.output, result.output
    assert f"worker 0 (127.0.0.1:{port})" in result.output and f"worker 1 (localhost:{port})" in result.output


def test_a_host_that_does_not_resolve_is_named():
    found = tf_config.parse(json.dumps({"cluster": {"worker": [f"127.0.0.1:{free_ports(1)[0]}",
                                                               "no-such-host.invalid:2222"]},
                                        "task": {"type": "worker", "index": 0}}))
    with pytest.raises(TlxError, match=r"worker 1 \(no-such-host.invalid:2222\) does not resolve"):
        peer_wait.check_addresses(found)


def test_peer_timeout_is_checked(tmp_path, tiny_backbone):
    result = _train(tmp_path, json.dumps(config_dict(free_ports(2), 0)), "--peer-timeout", "0")
    assert result.exit_code == 1 and "--peer-timeout 0" in result.output


# -- the meeting ----------------------------------------------------------------------

def _in_thread(target, *args):
    outcome = {}

    def run():
        try:
            outcome["result"] = target(*args)
        except BaseException as exc:  # the test reads it
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_three_workers_meet_and_strangers_are_turned_away():
    ports = free_ports(3)
    chief_log: list[str] = []
    listening = threading.Event()

    def log(message: str) -> None:  # the chief's first line comes once it listens
        chief_log.append(message)
        listening.set()

    chief, chief_outcome = _in_thread(peer_wait.wait_for_peers, place(ports, 0), 60, log)
    assert listening.wait(timeout=60), chief_outcome
    # Garbage, an endless line, then a worker of another cluster claiming index 1, at the
    # chief's port; each gets an answer or a closed connection.
    other = place([ports[0], ports[1], *free_ports(1)], 1)
    for payload in (b"GET / HTTP/1.1\r\n\r\n", b"\xff" * 3000, peer_wait.hello(other)):
        with socket.create_connection(("127.0.0.1", ports[0]), timeout=30) as conn:
            try:
                conn.sendall(payload)
                conn.recv(4096)
            except ConnectionResetError:    # closed with the line unread
                pass
    # The chief keeps waiting, and meets the real workers.
    workers = [_in_thread(peer_wait.wait_for_peers, place(ports, i), 60, lambda _m: None) for i in (1, 2)]
    for thread, outcome in [*workers, (chief, chief_outcome)]:
        thread.join(60)
        assert "error" not in outcome, outcome
    assert chief_log[-1] == "All 3 workers are here."
    assert any("not a tlx worker" in line for line in chief_log), chief_log
    assert any("lists other workers" in line for line in chief_log), chief_log


def test_a_second_worker_with_the_same_index_is_turned_away():
    ports = free_ports(3)
    here = threading.Event()
    chief_log: list[str] = []

    def log(line):
        chief_log.append(line)
        if "worker 1 (" in line and "is here" in line:
            here.set()

    # Time enough for worker 1 and the impostor to arrive on a busy machine; worker 2 never does.
    chief, chief_outcome = _in_thread(peer_wait.wait_for_peers, place(ports, 0), 10, log)
    worker, _ = _in_thread(peer_wait.wait_for_peers, place(ports, 1), 10, lambda _m: None)
    assert here.wait(60), chief_log
    with socket.create_connection(("127.0.0.1", ports[0]), timeout=30) as conn:
        conn.sendall(peer_wait.hello(place(ports, 1)))
        reply = peer_wait.parse_message(conn.makefile("rb").readline())
    assert "a second worker 1" in reply["refused"]
    chief.join(60)
    assert "Worker 2" in str(chief_outcome["error"]) and "a second worker 1" in str(chief_outcome["error"])


def test_a_worker_of_another_cluster_is_told_why():
    ports = free_ports(3)
    chief, outcome = _in_thread(peer_wait.wait_for_peers, place(ports[:2], 0), 5, lambda _m: None)
    with pytest.raises(TlxError, match="lists other workers than this one's"):
        peer_wait.wait_for_peers(place([ports[0], ports[2]], 1), 60, lambda _m: None)
    chief.join(60)
    # The chief's own message says whom it turned away.
    assert "Worker 1" in str(outcome["error"]) and "Turned away: a worker at" in str(outcome["error"])


def test_a_chief_whose_peer_never_comes_stops_within_the_timeout_naming_it(tmp_path, tiny_backbone):
    ports = free_ports(2)
    started = time.monotonic()
    result = _train(tmp_path, json.dumps(config_dict(ports, 0)), "--peer-timeout", "3")
    assert result.exit_code == 1, result.output
    assert f"Worker 1 (127.0.0.1:{ports[1]}) did not come within 3 s" in result.output
    assert "--peer-timeout" in result.output and "Traceback" not in result.output
    assert time.monotonic() - started >= 3      # it did wait
    # The chief wrote no model: only what it checked before waiting.
    assert not (tmp_path / "run" / "model.keras").exists()


def test_a_worker_whose_chief_never_comes_stops_naming_it():
    ports = free_ports(2)
    with pytest.raises(TlxError, match=rf"The chief, worker 0 \(127.0.0.1:{ports[0]}\), did not answer within 2 s"):
        peer_wait.wait_for_peers(place(ports, 1), 2, lambda _m: None)


def test_the_workers_that_came_are_told_when_the_chief_gives_up():
    ports = free_ports(3)
    worker, outcome = _in_thread(peer_wait.wait_for_peers, place(ports, 1), 60, lambda _m: None)
    with pytest.raises(TlxError, match=r"Worker 2 .* did not come within 2 s"):
        peer_wait.wait_for_peers(place(ports, 0), 2, lambda _m: None)
    worker.join(60)
    assert "stopped waiting: Worker 2" in str(outcome["error"])


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_ctrl_c_while_waiting_for_peers_end_it_with_a_message(tmp_path, signum, code):
    data = make_image_folder(tmp_path / "data")
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "-1",
           "TF_CONFIG": json.dumps(config_dict(free_ports(2), 0))}
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH,
                             *tiny_args(data, tmp_path / "run", "--strategy", "multi-worker", "--json")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        seen = []
        for line in proc.stderr:             # the chief says when it starts waiting
            seen.append(line)
            if "waiting up to 300 s for worker 1" in line:
                break
        else:
            pytest.fail("the chief never said it was waiting:\n" + "".join(seen)[-3000:])
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err[-3000:]
    assert f"Stopped by {signal.Signals(signum).name} while waiting for the other workers" in err
    assert "Traceback" not in err


CONNECT = (
    "import sys\n"
    "from tlx.trainer import distribute\n"
    "distribute._connect_workers(float(sys.argv[1]), lambda line: print(line, file=sys.stderr, flush=True))\n"
    "print('connected', flush=True)\n"
)


@pytest.mark.parametrize("timeout, signum", [(3, None), (600, signal.SIGINT)])
def test_tensorflows_own_connection_step_is_bounded_and_ctrl_c_ends_it(signum, timeout):
    """After the meeting, TensorFlow's connection step holds the GIL: a C watchdog bounds it
    (a worker that vanished just then) and Ctrl-C gets the default action."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "-1",
           "TF_CONFIG": json.dumps(config_dict(free_ports(2), 0))}
    proc = subprocess.Popen([sys.executable, "-c", CONNECT, str(timeout)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        if signum is not None:
            for line in proc.stderr:
                if "TensorFlow connects the workers now" in line:
                    proc.send_signal(signum)
                    break
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == (1 if signum is None else -signum), err[-3000:]
    assert "connected" not in out and "Traceback" not in err
    if signum is None:
        assert "TensorFlow connects the workers now (at most 3 s" in err


# -- the Keras workaround's targets -----------------------------------------------

def test_the_keras_workaround_targets_exist_in_the_installed_keras():
    distribute.check_keras_patch()


def test_another_keras_or_a_moved_target_is_refused_with_a_message(monkeypatch):
    with pytest.raises(TlxError, match=r"Keras 3\.99\.0 is not supported.*keras-team/keras#20585"):
        distribute.check_keras_patch("3.99.0")
    from keras.src.backend.tensorflow import trainer as keras_trainer

    monkeypatch.setattr(keras_trainer, "reduce_per_replica", lambda values, strategy: values)
    with pytest.raises(TlxError, match=r"reduce_per_replica takes \(values, strategy\)"):
        distribute.check_keras_patch()
    monkeypatch.undo()
    monkeypatch.delattr(keras_trainer.TensorFlowTrainer, "_maybe_symbolic_build")
    with pytest.raises(TlxError, match="_maybe_symbolic_build is missing"):
        distribute.check_keras_patch()


def test_another_keras_is_refused_by_tlx_train_before_any_work(tmp_path, tiny_backbone, monkeypatch):
    import keras

    monkeypatch.setattr(keras, "__version__", "3.99.0")
    result = _train(tmp_path, json.dumps(config_dict(free_ports(2), 1)))
    assert result.exit_code == 1 and "Keras 3.99.0 is not supported" in result.output, result.output
    assert "Decoding" not in result.output and "Traceback" not in result.output
