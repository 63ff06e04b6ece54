"""Before TensorFlow connects the workers of `--strategy multi-worker`: check every address,
then wait for every worker, bounded by a timeout and interruptible.

Why not leave the waiting to TensorFlow: MultiWorkerMirroredStrategy() blocks in C++ until
every worker has registered, holding the GIL (no Python signal handler and no other Python
thread runs), with no timeout (the coordination service's `cluster_register_timeout_in_ms`
did not end it in TF 2.21), and it installs a SIGTERM handler of its own that only records
a "preemption". A chief whose peer never came hung until SIGKILL. So tlx meets the workers
first, in Python, on the ports TF_CONFIG gives them:

- every worker listens on its own port while it waits (which also shows the port is free,
  and keeps a second process with the same address from starting);
- every other worker connects to the chief (worker 0), says which worker it is and which
  cluster it belongs to (a hash of TF_CONFIG's worker list), and keeps the connection open;
- once all have come, the chief says "go" to each and every worker closes its listener,
  which TensorFlow's server then takes over;
- the chief gives up after --peer-timeout seconds naming the workers that never came (and
  tells the ones that did); SIGINT and SIGTERM end the wait at any moment, with a message.

Messages between workers are single JSON lines of at most MAX_LINE bytes; a connection
that sends anything else is closed and counted as nothing. TensorFlow-free.
"""

from __future__ import annotations

import errno
import json
import selectors
import signal
import socket
import threading
import time
from contextlib import contextmanager
from typing import Optional

from tlx.errors import TlxError
from tlx.progress import Log
from tlx.text import printable
from tlx.trainer.tf_config import Cluster, WorkerAddress

PROTOCOL = "tlx-peer-wait/1"
#: Longest message line between workers, in bytes.
MAX_LINE = 1024
#: Connections the chief keeps open before they said which worker they are.
MAX_PENDING = 64
#: How often a worker tries again to reach the chief, in seconds.
RETRY_SECONDS = 0.5

#: Exit codes of a wait ended by a signal, as shells report them.
SIGNAL_EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class PeerWaitError(TlxError):
    """The workers did not all meet (timeout, refused, stopped by a signal)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


# -- checks before anything waits ------------------------------------------------

def check_addresses(place: Cluster) -> None:
    """Every worker's host name resolves, no two name the same host and port, and this
    worker's port is free here (PeerWaitError naming the worker otherwise)."""
    resolved = {}
    for index, address in enumerate(place.addresses):
        ips = _resolve(address)
        if ips is None:
            raise PeerWaitError(f"TF_CONFIG: the host of {place.name(index)} does not resolve to an address. "
                                "Check its spelling, or write its IP address.")
        for other, other_ips in resolved.items():
            if place.addresses[other].port == address.port and ips & other_ips:
                raise PeerWaitError(f"TF_CONFIG: {place.name(other)} and {place.name(index)} are the same "
                                    "host and port: give every worker an address of its own (another port "
                                    "on the same machine).")
        resolved[index] = ips
    listen(place).close()


def _resolve(address: WorkerAddress) -> Optional[set]:
    try:
        found = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    return {info[4][0] for info in found}


def listen(place: Cluster) -> socket.socket:
    """A listening socket on this worker's port, on every interface (as TensorFlow's server
    listens). Not SO_REUSEPORT: gRPC sets it, so without this check a second worker with the
    same address would share the port and both would wait for ever."""
    port = place.address.port
    try:
        if socket.has_dualstack_ipv6():
            return socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True)
        return socket.create_server(("", port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PeerWaitError(f"Port {port} of this machine, {place.name(place.index)} in TF_CONFIG, is in "
                                "use by another program (another tlx worker with the same address?). Stop it, "
                                "or give this worker another port in TF_CONFIG on every machine.") from None
        if exc.errno == errno.EACCES:
            raise PeerWaitError(f"Port {port} of {place.name(place.index)} needs administrator rights here: "
                                "choose a port above 1023 in TF_CONFIG.") from None
        raise PeerWaitError(f"Cannot listen on port {port} of {place.name(place.index)}: "
                            f"{exc.strerror or exc}.") from None


# -- signals ---------------------------------------------------------------------

class _Signalled(BaseException):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextmanager
def stoppable():
    """SIGINT and SIGTERM raise _Signalled inside the block (whatever their handlers were,
    even ignored, as a shell's background job has SIGINT); the handlers come back after."""
    def handler(signum, _frame):
        raise _Signalled(signum)

    if threading.current_thread() is not threading.main_thread():
        yield                            # only the main thread may set handlers (library use)
        return
    previous = {signum: signal.signal(signum, handler) for signum in SIGNAL_EXIT_CODES}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


# -- the meeting -----------------------------------------------------------------

def wait_for_peers(place: Cluster, timeout: float, log: Log) -> None:
    """Return once every worker of `place` is here (then TensorFlow may connect them)."""
    if place.workers == 1:
        return
    deadline = time.monotonic() + timeout
    try:
        with stoppable():
            listener = listen(place)
            try:
                if place.is_chief:
                    _Chief(place, listener, deadline, timeout, log).wait()
                else:
                    _wait_for_chief(place, deadline, timeout, log)
            finally:
                listener.close()
    except _Signalled as stop:
        name = signal.Signals(stop.signum).name
        raise PeerWaitError(f"Stopped by {name} while waiting for the other workers; nothing was trained.",
                            exit_code=SIGNAL_EXIT_CODES[stop.signum]) from None


def _message(**fields) -> bytes:
    return (json.dumps(fields) + "\n").encode()


def parse_message(line: bytes) -> dict:
    """A line from another worker as a dict with only str/int/bool values (ValueError otherwise)."""
    if len(line) > MAX_LINE:
        raise ValueError("line too long")
    obj = json.loads(line.decode("utf-8"))
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, (str, int, bool))
                                            for k, v in obj.items()):
        raise ValueError("not a flat JSON object")
    return obj


def hello(place: Cluster) -> bytes:
    return _message(protocol=PROTOCOL, cluster=place.fingerprint(), index=place.index)


class _Chief:
    """Worker 0: accepts the others' hellos until every index 1..n-1 is connected."""

    def __init__(self, place: Cluster, listener: socket.socket, deadline: float, timeout: float, log: Log):
        self.place, self.listener, self.deadline, self.timeout, self.log = place, listener, deadline, timeout, log
        self.selector = selectors.DefaultSelector()
        self.buffers: dict = {}      # connection -> bytes received so far (no hello yet)
        self.present: dict = {}      # worker index -> its connection
        self.refused: list = []      # what was turned away, for the timeout message

    def missing(self) -> list:
        return [i for i in range(1, self.place.workers) if i not in self.present]

    def wait(self) -> None:
        names = ", ".join(self.place.name(i) for i in self.missing())
        self.log(f"Worker 0 of {self.place.workers} (the chief, {self.place.address}): waiting up to "
                 f"{self.timeout:g} s for {names}.")
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ)
        try:
            while self.missing():
                remaining = self.deadline - time.monotonic()
                if remaining <= 0:
                    raise PeerWaitError(self.timeout_message())
                for key, _ in self.selector.select(timeout=min(remaining, 1.0)):
                    if key.fileobj is self.listener:
                        self.accept()
                    else:
                        self.receive(key.fileobj)
            for conn in self.present.values():
                _send(conn, _message(go=True))
            self.log(f"All {self.place.workers} workers are here.")
        except BaseException as exc:
            # A line a worker accepts (MAX_LINE) even when many workers are missing.
            reason = str(exc)[:600] if isinstance(exc, PeerWaitError) else "the chief was stopped"
            for conn in self.present.values():
                _send(conn, _message(stop=f"The chief, {self.place.name(0)}, stopped waiting: {reason}"))
            raise
        finally:
            for conn in (*self.buffers, *self.present.values()):
                conn.close()
            self.selector.close()

    def timeout_message(self) -> str:
        missing = ", ".join(self.place.name(i) for i in self.missing())
        refused = f" Turned away: {'; '.join(self.refused)}." if self.refused else ""
        return (f"{missing[0].upper()}{missing[1:]} did not come within {self.timeout:g} s "
                f"(--peer-timeout).{refused} Start the same `tlx train` command with its own TF_CONFIG "
                f"on each of them, check that they reach {self.place.address} (firewall), or allow more "
                "time with --peer-timeout.")

    def accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        if len(self.buffers) >= MAX_PENDING:    # connections that say nothing take no more than this
            conn.close()
            return
        conn.setblocking(False)
        self.buffers[conn] = b""
        self.selector.register(conn, selectors.EVENT_READ)

    def drop(self, conn: socket.socket) -> None:
        self.selector.unregister(conn)
        self.buffers.pop(conn, None)
        for index, present in list(self.present.items()):
            if present is conn:
                del self.present[index]
                self.log(f"{self.place.name(index)} left before every worker came; waiting for it again.")
        conn.close()

    def receive(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(MAX_LINE + 1)
        except OSError:
            data = b""
        if conn not in self.buffers:     # a worker already here only ever closes its connection
            if not data:
                self.drop(conn)
            return
        if not data:
            self.drop(conn)
            return
        buffer = self.buffers[conn] + data
        if b"\n" not in buffer:
            if len(buffer) > MAX_LINE:
                self.drop(conn)
            else:
                self.buffers[conn] = buffer
            return
        del self.buffers[conn]
        self.greet(conn, buffer.split(b"\n", 1)[0])

    def greet(self, conn: socket.socket, line: bytes) -> None:
        peer = _peer_name(conn)
        try:
            message = parse_message(line)
        except ValueError:
            message = {}
        index = message.get("index")
        problem = None
        if message.get("protocol") != PROTOCOL:
            problem = f"a connection from {peer} that is not a tlx worker"
        elif message.get("cluster") != self.place.fingerprint():
            problem = (f"a worker at {peer} whose TF_CONFIG lists other workers than this one's "
                       "(every machine needs the same cluster.worker list)")
        elif isinstance(index, bool) or not isinstance(index, int) or not 1 <= index < self.place.workers:
            problem = f"a worker at {peer} with task.index {index!r} (0 is this chief)"
        elif index in self.present:
            problem = f"a second worker {index} at {peer} ({self.place.name(index)} is already here)"
        if problem is not None:
            self.refused = [*self.refused[-2:], problem]     # the last three, for the timeout message
            self.log(f"Turned away {problem}.")
            _send(conn, _message(refused=f"The chief, {self.place.name(0)}, turned away {problem}."))
            self.selector.unregister(conn)
            conn.close()
            return
        self.present[index] = conn
        left = len(self.missing())
        self.log(f"{self.place.name(index)} is here" + (f"; waiting for {left} more." if left else "."))


def _wait_for_chief(place: Cluster, deadline: float, timeout: float, log: Log) -> None:
    """A worker other than the chief: connect to the chief until it says go."""
    chief = place.addresses[0]
    log(f"Worker {place.index} of {place.workers} ({place.address}): waiting up to {timeout:g} s for the "
        f"chief, {place.name(0)}, and the other workers.")
    answered = False
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            what = ("answered, but not every worker came" if answered else "did not answer")
            raise PeerWaitError(f"The chief, {place.name(0)}, {what} within {timeout:g} s (--peer-timeout). "
                                "Start the same `tlx train` command with its own TF_CONFIG on every machine, "
                                f"check that this machine reaches {chief} (firewall), or allow more time with "
                                "--peer-timeout.")
        try:
            conn = socket.create_connection((chief.host, chief.port), timeout=min(remaining, 5.0))
        except OSError:
            time.sleep(min(RETRY_SECONDS, max(remaining, 0)))
            continue
        with conn:
            answered = True
            reply = _exchange(conn, hello(place), deadline)
        if reply is None:
            continue                     # the chief went away (or restarted): try again
        if reply.get("go") is True:
            log(f"All {place.workers} workers are here.")
            return
        reason = reply.get("refused") or reply.get("stop")
        if isinstance(reason, str):
            raise PeerWaitError(printable(reason[:MAX_LINE]))


def _exchange(conn: socket.socket, message: bytes, deadline: float) -> Optional[dict]:
    """Send `message`, then read one reply line before `deadline`; None if the connection
    closes, times out or the reply is not a message."""
    buffer = b""
    try:
        conn.sendall(message)
        while b"\n" not in buffer and len(buffer) <= MAX_LINE:
            conn.settimeout(max(deadline - time.monotonic(), 0.01))
            data = conn.recv(MAX_LINE + 1)
            if not data:
                return None
            buffer += data
        return parse_message(buffer.split(b"\n", 1)[0])
    except (OSError, ValueError):
        return None


def _send(conn: socket.socket, message: bytes) -> None:
    try:
        conn.setblocking(True)
        conn.settimeout(2.0)
        conn.sendall(message)
    except OSError:
        pass


def _peer_name(conn: socket.socket) -> str:
    try:
        host, port = conn.getpeername()[:2]
    except OSError:
        return "an unknown address"
    return f"{host}:{port}"
