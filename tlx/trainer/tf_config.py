"""TF_CONFIG, the cluster description of `--strategy multi-worker`, parsed by one typed schema.

TF_CONFIG comes from the user's shell or a cluster manager: nothing in it is used before
`parse` has checked it. TensorFlow-free (the CLI checks it before importing TensorFlow).

Accepted shape (the subset of TensorFlow's format that tlx uses: workers only, worker 0
is the chief):

    {"cluster": {"worker": ["host1:12345", "host2:12345"]},
     "task": {"type": "worker", "index": 0},
     "environment": "...", "rpc_layer": "grpc"}          # the last two optional
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Mapping, Optional

from tlx.errors import TlxError
from tlx.text import printable
from tlx.run_config import Strategy

TF_CONFIG = "TF_CONFIG"

#: Bounds on what is read: a cluster description is a few hundred bytes.
MAX_TF_CONFIG_CHARS = 64 * 1024
MAX_WORKERS = 256
#: The longest DNS name.
MAX_HOST_CHARS = 253

EXAMPLE = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
           '"task": {"type": "worker", "index": 0}}')
_OPTIONAL_KEYS = ("environment", "rpc_layer")


@dataclass(frozen=True)
class WorkerAddress:
    """One worker's host and port, as TF_CONFIG lists it."""

    #: Host name or IP address (an IPv6 address without its brackets).
    host: str
    #: TCP port, 1..65535.
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Cluster:
    """This process's place in a multi-worker cluster, from TF_CONFIG."""

    #: Every worker's address, in TF_CONFIG's order (index 0 is the chief).
    addresses: tuple
    #: This worker's index.
    index: int

    @property
    def workers(self) -> int:
        """Number of workers."""
        return len(self.addresses)

    @property
    def is_chief(self) -> bool:
        return self.index == 0

    @property
    def address(self) -> WorkerAddress:
        """This worker's own address."""
        return self.addresses[self.index]

    def name(self, index: int) -> str:
        """"worker 1 (10.0.0.2:12345)", for messages."""
        return f"worker {index} ({self.addresses[index]})"

    def fingerprint(self) -> str:
        """The same on every worker of one cluster (workers compare it when they meet)."""
        import hashlib

        return hashlib.sha256(json.dumps([str(a) for a in self.addresses]).encode()).hexdigest()


class TfConfigError(TlxError):
    """TF_CONFIG is missing or not a usable cluster description."""

    def __init__(self, problem: str):
        super().__init__(f"TF_CONFIG {problem}. Expected e.g. {EXAMPLE} (index 1 on the second "
                         "machine); see the README section \"More than one machine\".")


def from_environment(environ: Mapping[str, str] = os.environ) -> Cluster:
    """The cluster described by $TF_CONFIG (TfConfigError when missing or malformed)."""
    raw = environ.get(TF_CONFIG)
    if not raw:
        raise TlxError("--strategy multi-worker needs the TF_CONFIG environment variable on every "
                       f"machine, for example {EXAMPLE} (index 1 on the second machine). "
                       "See the README section \"More than one machine\".")
    return parse(raw)


def parse(raw: str) -> Cluster:
    """Check and parse a TF_CONFIG string; every problem is a TfConfigError naming it."""
    if len(raw) > MAX_TF_CONFIG_CHARS:
        raise TfConfigError(f"is {len(raw):,} characters long (at most {MAX_TF_CONFIG_CHARS:,})")
    try:
        config = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise TfConfigError(f"is not JSON ({str(exc)[:200]})") from None
    if not isinstance(config, dict):
        raise TfConfigError("must be a JSON object")
    unknown = sorted(set(config) - {"cluster", "task", *_OPTIONAL_KEYS})
    if unknown:
        raise TfConfigError(f"has unknown key(s) {_shown(unknown)}")
    if config.get("rpc_layer", "grpc") != "grpc":
        raise TfConfigError(f"rpc_layer is {_shown(config['rpc_layer'])}: only \"grpc\" is supported")
    if not isinstance(config.get("environment", ""), str):
        raise TfConfigError("environment must be a string")
    addresses = _workers(config.get("cluster"))
    return Cluster(addresses=addresses, index=_task_index(config.get("task"), len(addresses)))


def _workers(cluster) -> tuple:
    if not isinstance(cluster, dict):
        raise TfConfigError("needs \"cluster\": {\"worker\": [\"host:port\", ...]}")
    if set(cluster) != {"worker"}:
        raise TfConfigError(f"cluster has job(s) {_shown(sorted(map(str, cluster)))}: only \"worker\" "
                            "is used (worker 0 is the chief)")
    workers = cluster["worker"]
    if not isinstance(workers, list) or not workers:
        raise TfConfigError("cluster.worker must be a non-empty list of \"host:port\" strings")
    if len(workers) > MAX_WORKERS:
        raise TfConfigError(f"lists {len(workers)} workers (at most {MAX_WORKERS})")
    addresses = tuple(_address(i, w) for i, w in enumerate(workers))
    seen: dict = {}
    for i, address in enumerate(addresses):
        key = (address.host.lower(), address.port)
        if key in seen:
            raise TfConfigError(f"lists {address} twice (workers {seen[key]} and {i}): every worker "
                                "needs an address of its own (another port on the same machine)")
        seen[key] = i
    return addresses


def _address(index: int, text) -> WorkerAddress:
    where = f"cluster.worker[{index}]"
    if not isinstance(text, str):
        raise TfConfigError(f"{where} is {_shown(text)}, not a \"host:port\" string")
    host, sep, port = text.rpartition(":")
    if not sep:
        raise TfConfigError(f"{where} {_shown(text)} has no port (\"host:port\")")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise TfConfigError(f"{where} {_shown(text)}: write an IPv6 address in brackets, [addr]:port")
    if not host:
        raise TfConfigError(f"{where} {_shown(text)} has an empty host name")
    if len(host) > MAX_HOST_CHARS or any(c.isspace() or not c.isprintable() or c in "/@[]" for c in host):
        raise TfConfigError(f"{where} {_shown(text)} is not a host name or IP address")
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise TfConfigError(f"{where} {_shown(text)}: the port must be a number from 1 to 65535")
    return WorkerAddress(host=host, port=int(port))


def _task_index(task, workers: int) -> int:
    expected = f"\"task\": {{\"type\": \"worker\", \"index\": 0..{workers - 1}}}"
    if not isinstance(task, dict) or task.get("type") != "worker" or set(task) != {"type", "index"}:
        raise TfConfigError(f"needs {expected} (this machine's place in cluster.worker)")
    index = task["index"]
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < workers:
        raise TfConfigError(f"task.index is {_shown(index)}; needs {expected}")
    return index


def _shown(value, limit: int = 80) -> str:
    """A value from TF_CONFIG, printable and short."""
    text = json.dumps(value, ensure_ascii=True, default=str)
    return printable(text if len(text) <= limit else text[:limit] + "...")


def cluster(strategy, environ: Optional[Mapping[str, str]] = None) -> Optional[Cluster]:
    """The cluster for --strategy multi-worker, None for the other strategies."""
    if Strategy(strategy) is not Strategy.MULTI_WORKER:
        return None
    return from_environment(os.environ if environ is None else environ)
