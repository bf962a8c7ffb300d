"""A standalone Flink cluster on this machine, from the pip-installed ``apache-flink``.

Why: the PyFlink job must also run where it would in production, on a real JobManager and
TaskManagers (separate JVMs, Python workers spawned by the TaskManager, checkpoints on
disk, a TaskManager that can die), not only in the in-process MiniCluster. There is no
Docker and no Flink download here, but the ``apache-flink`` wheel carries a complete
distribution (``pyflink/bin``, ``lib``, ``conf``), so the cluster is started with its own
``jobmanager.sh`` / ``taskmanager.sh`` and a configuration of ours.

Nothing in ``site-packages`` is modified: each run gets a folder (default
``<state dir>/flink``) holding ``conf/`` (generated from ``infra/flink/config.yaml`` plus
the distribution's log4j files; ``FLINK_CONF_DIR`` points there), ``log/``, pid files,
``checkpoints/``, ``savepoints/`` and ``tmp/``. Everything listens on 127.0.0.1; the REST
port is 8081 if free (else any free port) and the JobManager RPC port is any free port;
every other port is chosen by Flink (0).

Connector jars (Kafka) are not put on the cluster's classpath (that would mean writing
into ``pyflink/lib``); :meth:`FlinkCluster.submit` passes them per job as ``flink run -C
file:///...jar`` (one per jar). Why ``-C``: it puts them on the user classloader of the
client JVM that runs the Python driver (where ``KafkaSource.builder()`` is resolved) *and*
of the job on every TaskManager. ``-Dpipeline.jars=...`` reaches only the TaskManagers: the
Python driver then fails with "Could not found the Java class ...KafkaSource.builder"; the
hidden ``-j/--jarfile`` takes a single jar. ``-C`` URLs must be readable on every node,
which on one machine they are.

The Flink processes are found by their command line (``--configDir <run>/conf``), not only
by pid files, so a cluster is stoppable even after a TaskManager was SIGKILLed, another
was started by hand, or the record was lost.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import string
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pipelines.kafka.broker import LOOPBACK, free_port, pid_alive, port_open, state_dir

DEFAULT_REST_PORT = 8081
DEFAULT_SLOTS = 2
IDENT = "twin"  # FLINK_IDENT_STRING: names the pid and log files (instead of $USER)
TEMPLATE = Path(__file__).resolve().parents[2] / "infra" / "flink" / "config.yaml"
JM_CLASS = "org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint"
TM_CLASS = "org.apache.flink.runtime.taskexecutor.TaskManagerRunner"
TERMINAL_STATES = frozenset({"FINISHED", "FAILED", "CANCELED", "SUSPENDED"})


class FlinkClusterError(RuntimeError):
    """The cluster could not be started, reached, or asked to do something."""


# -- the distribution and this machine -----------------------------------------------------

def flink_home() -> Path:
    """The Flink distribution inside the installed ``pyflink`` package."""
    import pyflink

    home = Path(pyflink.__file__).resolve().parent
    if not (home / "bin" / "jobmanager.sh").is_file():
        raise FlinkClusterError(f"no Flink distribution in {home} (bin/jobmanager.sh missing)")
    return home


def java_binary() -> str:
    """``$JAVA_HOME/bin/java`` or ``java`` on PATH; Flink 2.x needs Java 11+ (17 here)."""
    home = os.environ.get("JAVA_HOME")
    if home and os.access(os.path.join(home, "bin", "java"), os.X_OK):
        return os.path.join(home, "bin", "java")
    found = shutil.which("java")
    if not found:
        raise FlinkClusterError(
            "no `java` on PATH and no usable $JAVA_HOME: install a Java 17 runtime "
            "(e.g. apt-get install openjdk-17-jre-headless) to run a Flink cluster")
    return found


def _log_cause(path: str, limit: int = 400) -> str:
    """``": <the log's last error>"`` for an error message, or ``""``: the last line of a
    Flink log that names an exception or is logged at ERROR, so a failed start says why
    without the reader opening the log (which a CI run may not keep)."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if " ERROR " in line or re.search(r"\b[\w.]+(Exception|Error)\b", line):
            return ": " + line.strip()[-limit:]
    return ""


def _proc_table() -> dict[int, tuple[int, list[str]]]:
    """pid -> (parent pid, argv) of every process we can see (Linux /proc)."""
    table: dict[int, tuple[int, list[str]]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "cmdline").read_bytes()
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        table[int(entry.name)] = (ppid, raw.decode(errors="replace").split("\0"))
    return table


def _descendants(pid: int, table: dict[int, tuple[int, list[str]]]) -> list[int]:
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        kids = [p for p, (pp, _) in table.items() if pp == parent]
        out += kids
        todo += kids
    return out


def _http_json(url: str, method: str = "GET", timeout: float = 5.0) -> Any:
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body = resp.read()
    return json.loads(body) if body else None


# -- the cluster ---------------------------------------------------------------------------

class FlinkCluster:
    """A JobManager and TaskManager(s) started from ``run_dir`` (default ``<state>/flink``).

    ``with FlinkCluster(tmp_path, slots=2) as c: c.submit(...)`` in tests; the CLI uses
    :func:`start_background` / :func:`stop_background`, which add a record in the state
    folder. ``rest_port=None`` tries 8081 and falls back to any free port.
    """

    def __init__(self, run_dir: str | Path | None = None, slots: int = DEFAULT_SLOTS,
                 rest_port: int | None = None, rpc_port: int | None = None) -> None:
        self.run_dir = Path(run_dir or state_dir() / "flink").expanduser().resolve()
        self.slots = slots
        self.rest_port = rest_port
        self.rpc_port = rpc_port

    # paths and addresses
    @property
    def conf_dir(self) -> Path:
        return self.run_dir / "conf"

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "log"

    @property
    def pid_dir(self) -> Path:
        return self.run_dir / "pids"

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def rest_url(self) -> str:
        if not self.rest_port:
            raise FlinkClusterError("the cluster has no REST port yet (not started)")
        return f"http://{LOOPBACK}:{self.rest_port}"

    @property
    def address(self) -> str:
        """``host:port`` for ``flink run -m``."""
        return f"{LOOPBACK}:{self.rest_port}"

    # configuration
    def _choose_ports(self) -> None:
        if not self.rest_port:
            self.rest_port = (DEFAULT_REST_PORT if not port_open(DEFAULT_REST_PORT)
                              else free_port())
        elif port_open(self.rest_port):
            raise FlinkClusterError(f"REST port {self.rest_port} on {LOOPBACK} is already in use")
        if not self.rpc_port:
            self.rpc_port = free_port()
            while self.rpc_port == self.rest_port:
                self.rpc_port = free_port()

    def write_conf(self) -> Path:
        """Generate ``<run>/conf`` from the template; returns the conf folder."""
        for d in (self.conf_dir, self.log_dir, self.pid_dir, self.checkpoint_dir,
                  self.run_dir / "savepoints", self.run_dir / "tmp"):
            d.mkdir(parents=True, exist_ok=True)
        text = string.Template(TEMPLATE.read_text()).substitute(
            log_dir=self.log_dir, pid_dir=self.pid_dir, run_dir=self.run_dir,
            rpc_port=self.rpc_port, rest_port=self.rest_port, slots=self.slots,
            python=sys.executable)
        (self.conf_dir / "config.yaml").write_text(text)
        for src in (flink_home() / "conf").glob("log*"):  # log4j*.properties, logback*.xml
            shutil.copyfile(src, self.conf_dir / src.name)
        return self.conf_dir

    def env(self) -> dict[str, str]:
        """Environment of the Flink scripts: our conf, logs and pid files; the venv first on
        PATH so Python workers and ``flink run`` find the venv's python and packages."""
        venv_bin = str(Path(sys.executable).parent)
        path = os.environ.get("PATH", "")
        java_dir = str(Path(java_binary()).parent)
        return {**os.environ, "FLINK_CONF_DIR": str(self.conf_dir),
                "FLINK_LOG_DIR": str(self.log_dir), "FLINK_PID_DIR": str(self.pid_dir),
                "FLINK_IDENT_STRING": IDENT,
                "PATH": os.pathsep.join([venv_bin, path, java_dir])}

    def _script(self, name: str, *args: str, timeout: float = 120.0) -> str:
        proc = subprocess.run([str(flink_home() / "bin" / name), *args], env=self.env(),
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, start_new_session=True)
        if proc.returncode != 0:
            raise FlinkClusterError(f"{name} {' '.join(args)} failed ({proc.returncode}): "
                                    f"{(proc.stdout + proc.stderr).strip()[-800:]}")
        return proc.stdout

    # processes
    def _pids(self, main_class: str | None = None) -> list[int]:
        marker = str(self.conf_dir)
        pids = []
        for pid, (_, argv) in _proc_table().items():
            if "--configDir" not in argv or (main_class and main_class not in argv):
                continue
            i = argv.index("--configDir")
            if i + 1 < len(argv) and argv[i + 1] == marker and pid_alive(pid):
                pids.append(pid)
        return sorted(pids)

    def _workers(self, table: dict[int, tuple[int, list[str]]]) -> list[int]:
        """Processes started under this cluster's environment (``FLINK_CONF_DIR`` is ours):
        Python workers, including those orphaned by a SIGKILLed TaskManager."""
        marker = f"FLINK_CONF_DIR={self.conf_dir}".encode()
        mine = {os.getpid(), os.getppid()}
        found = []
        for pid in table:
            if pid in mine:
                continue
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker in environ:
                found.append(pid)
        return found

    def jobmanager_pids(self) -> list[int]:
        return self._pids(JM_CLASS)

    def _jobmanager_alive(self) -> bool:
        """The JobManager's JVM runs, or the process Flink's daemon script started for it
        (its pid file) is still alive: right after the script returns, that process may
        not have exec'd ``java`` yet, so its command line does not name the JVM's class."""
        if self.jobmanager_pids():
            return True
        try:
            pids = [int(p) for p in (self.pid_dir / f"flink-{IDENT}-standalonesession.pid")
                    .read_text().split()]
        except (OSError, ValueError):
            return False
        return any(pid_alive(p) for p in pids)

    def taskmanager_pids(self) -> list[int]:
        """The live TaskManager JVMs of this run folder (found by their command line)."""
        return self._pids(TM_CLASS)

    def log_files(self) -> list[Path]:
        return sorted(self.log_dir.glob("*.log")) + sorted(self.log_dir.glob("*.out"))

    def _jm_log(self) -> str:
        logs = sorted(self.log_dir.glob(f"flink-{IDENT}-standalonesession-*.log"))
        return str(logs[-1]) if logs else str(self.log_dir)

    # lifecycle
    def start(self, timeout_s: float = 90.0) -> FlinkCluster:
        """Start a JobManager and one TaskManager; return once the TaskManager registered."""
        java_binary()
        if self._pids():
            raise FlinkClusterError(
                f"a Flink cluster from {self.run_dir} is already running (pids "
                f"{', '.join(map(str, self._pids()))}); stop it first")
        self._choose_ports()
        self.write_conf()
        for stale in self.pid_dir.glob("*.pid"):
            stale.unlink()
        # The two scripts each spend seconds parsing the config in a JVM: run them together.
        env = self.env()
        procs = [subprocess.Popen([str(flink_home() / "bin" / s), "start"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, text=True, start_new_session=True)
                 for s in ("jobmanager.sh", "taskmanager.sh")]
        for p in procs:
            out, _ = p.communicate(timeout=120)
            if p.returncode != 0:
                self.stop()
                raise FlinkClusterError(f"{p.args[0]} start failed: {out.strip()[-800:]}")
        try:
            self.wait_for_taskmanagers(1, timeout_s)
        except FlinkClusterError:
            self.stop()
            raise
        return self

    def start_taskmanager(self, timeout_s: float = 60.0) -> int:
        """Start one more TaskManager with the same configuration; returns its pid once it
        registered (e.g. to replace one a failure test killed). Registration is recognised
        by a TaskManager id the JobManager did not list before, with its slots reported: a
        killed TaskManager stays listed until its heartbeat times out, so counting would be
        fooled."""
        before = set(self.taskmanager_pids())
        known = {tm["id"] for tm in self.get("/taskmanagers").get("taskmanagers", [])}
        self._script("taskmanager.sh", "start")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            tms = self.get("/taskmanagers").get("taskmanagers", [])
            # a TaskManager is listed on registration, its slots only after its first slot
            # report (slotsNumber 0 until then): wait for both
            if any(tm["id"] not in known and tm.get("slotsNumber", 0) >= self.slots
                   for tm in tms):
                new = sorted(set(self.taskmanager_pids()) - before)
                if not new:
                    raise FlinkClusterError(
                        "the new TaskManager registered but its process is gone")
                return new[-1]
            time.sleep(0.25)
        raise FlinkClusterError(
            f"the new TaskManager did not register at {self.rest_url} within {timeout_s:.0f} "
            f"s; logs in {self.log_dir}")

    def wait_for_taskmanagers(self, count: int, timeout_s: float = 60.0) -> dict[str, Any]:
        """Block until the REST API reports exactly ``count`` TaskManagers (and, when more
        than 0, at least ``count * slots`` slots)."""
        deadline = time.monotonic() + timeout_s
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if not self._jobmanager_alive():
                log = self._jm_log()
                raise FlinkClusterError(f"the JobManager exited{_log_cause(log)}; see {log}")
            try:
                last = self.overview()
            except FlinkClusterError:
                last = {}
            if last.get("taskmanagers") == count and (
                    count == 0 or last.get("slots-total", 0) >= count * self.slots):
                return last
            time.sleep(0.25)
        raise FlinkClusterError(
            f"{count} TaskManager(s) not registered at {self.rest_url} after {timeout_s:.0f} s "
            f"(last overview: {last or 'REST API not answering'}); logs in {self.log_dir}, "
            f"JobManager log {self._jm_log()}")

    def stop(self, timeout_s: float = 15.0) -> list[int]:
        """Stop every Flink JVM of this run folder and their Python workers (also orphaned
        ones, found by ``FLINK_CONF_DIR`` in their environment); returns the pids.

        SIGTERM first (Flink shuts down cleanly in a few seconds), SIGKILL after
        ``timeout_s``. Signals directly instead of ``stop-cluster.sh``: the scripts only know
        the pid files, and stop one process per call with a 10 s wait each.
        """
        table = _proc_table()
        jvms = self._pids()
        family = sorted({*jvms, *(k for p in jvms for k in _descendants(p, table)),
                         *self._workers(table)})
        for pid in jvms:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout_s
        while any(pid_alive(p) for p in jvms) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in family:
            if pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for pid in family:
            while pid_alive(pid) and time.monotonic() < deadline + 5:
                time.sleep(0.05)
        for f in self.pid_dir.glob("*.pid"):
            f.unlink(missing_ok=True)
        return family

    def __enter__(self) -> FlinkCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # the REST API
    def get(self, path: str, timeout: float = 5.0) -> Any:
        try:
            return _http_json(self.rest_url + path, timeout=timeout)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise FlinkClusterError(f"Flink REST API at {self.rest_url} failed on {path}: "
                                    f"{exc}") from exc

    def overview(self) -> dict[str, Any]:
        return self.get("/overview")

    def status(self) -> dict[str, Any]:
        """REST URL, TaskManagers, slots and jobs, for ``twin flink cluster status``."""
        info: dict[str, Any] = {
            "rest_url": self.rest_url, "run_dir": str(self.run_dir),
            "conf_dir": str(self.conf_dir), "log_dir": str(self.log_dir),
            "jobmanager_pids": self.jobmanager_pids(),
            "taskmanager_pids": self.taskmanager_pids()}
        try:
            ov = self.overview()
            tms = self.get("/taskmanagers").get("taskmanagers", [])
            jobs = self.get("/jobs/overview").get("jobs", [])
        except FlinkClusterError as exc:
            return {**info, "reachable": False, "error": str(exc)}
        return {**info, "reachable": True, "flink_version": ov.get("flink-version"),
                "taskmanagers": ov.get("taskmanagers", 0),
                "slots_total": ov.get("slots-total", 0),
                "slots_available": ov.get("slots-available", 0),
                "taskmanager_ids": [t.get("id") for t in tms],
                "jobs_running": ov.get("jobs-running", 0),
                "jobs": [{"id": j["jid"], "name": j.get("name"), "state": j.get("state")}
                         for j in jobs]}

    # jobs
    def submit(self, py_file: str | Path, args: list[str] | None = None,
               jars: list[str | Path] | None = None, pyexec: str = sys.executable,
               parallelism: int | None = None, detached: bool = True,
               extra_conf: dict[str, str] | None = None, timeout_s: float = 300.0) -> str:
        """``flink run -py`` against this cluster; returns the JobID it printed.

        Jars go in as ``-C file:///a.jar -C file:///b.jar`` (see the module docstring): the
        connector classes resolve in the client JVM that builds the graph and in the job's
        classloader on the TaskManagers, without touching the distribution's ``lib/``. Do
        not also add the same jars with ``pipeline.jars``/``env.add_jars``: two copies on
        one classloader duplicate service entries (Table API factory discovery complains).
        """
        cmd = [str(flink_home() / "bin" / "flink"), "run", "-m", self.address,
               "-py", str(Path(py_file).resolve()), "-pyexec", pyexec, "-pyclientexec", pyexec]
        if detached:
            cmd.append("-d")
        if parallelism:
            cmd += ["-p", str(parallelism)]
        for jar in jars or []:
            path = Path(jar).resolve()
            if not path.is_file():
                raise FlinkClusterError(f"jar not found: {path}")
            cmd += ["-C", path.as_uri()]
        for key, value in (extra_conf or {}).items():
            cmd.append(f"-D{key}={value}")
        cmd += list(args or [])
        proc = subprocess.run(cmd, env=self.env(), capture_output=True, text=True,
                              timeout=timeout_s, stdin=subprocess.DEVNULL)
        output = proc.stdout + proc.stderr
        job_id = parse_job_id(output)
        if proc.returncode != 0 or job_id is None:
            # the Python program's own traceback says what went wrong; Java's stack does not
            start = output.find("Traceback (most recent call last)")
            why = output[start:start + 3000] if start >= 0 else output.strip()[-1500:]
            raise FlinkClusterError(
                f"flink run {Path(py_file).name} failed (exit {proc.returncode}): {why}")
        return job_id

    def job_status(self, job_id: str) -> str:
        return self.get(f"/jobs/{job_id}")["state"]

    def job_exceptions(self, job_id: str) -> str:
        try:
            info = self.get(f"/jobs/{job_id}/exceptions")
        except FlinkClusterError as exc:
            return str(exc)
        root = (info.get("exceptionHistory") or {}).get("entries") or []
        if root:
            return root[0].get("stacktrace", "")[:2000]
        return str(info.get("root-exception") or "")[:2000]

    def wait_for_job(self, job_id: str, states: str | tuple[str, ...] | set[str] = "FINISHED",
                     timeout_s: float = 120.0) -> str:
        """Block until the job is in one of ``states``; a terminal state that is not wanted
        (e.g. FAILED while waiting for FINISHED) raises with the job's exception."""
        wanted = {states} if isinstance(states, str) else set(states)
        deadline = time.monotonic() + timeout_s
        state = "?"
        while time.monotonic() < deadline:
            state = self.job_status(job_id)
            if state in wanted:
                return state
            if state in TERMINAL_STATES:
                raise FlinkClusterError(f"job {job_id} ended {state}, not {'/'.join(wanted)}: "
                                        f"{self.job_exceptions(job_id)}")
            time.sleep(0.25)
        raise FlinkClusterError(f"job {job_id} still {state} after {timeout_s:.0f} s "
                                f"(wanted {'/'.join(sorted(wanted))})")

    def cancel(self, job_id: str) -> None:
        try:
            _http_json(f"{self.rest_url}/jobs/{job_id}?mode=cancel", method="PATCH",
                       timeout=10.0)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise FlinkClusterError(f"cancel of job {job_id} failed: {exc}") from exc

    # the record of the background cluster
    def record(self) -> dict[str, Any]:
        return {"rest_url": self.rest_url, "rest_port": self.rest_port,
                "rpc_port": self.rpc_port, "slots": self.slots,
                "run_dir": str(self.run_dir), "conf_dir": str(self.conf_dir),
                "log_dir": str(self.log_dir), "jobmanager_pids": self.jobmanager_pids(),
                "taskmanager_pids": self.taskmanager_pids(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> FlinkCluster:
        return cls(record["run_dir"], slots=record.get("slots", DEFAULT_SLOTS),
                   rest_port=record["rest_port"], rpc_port=record.get("rpc_port"))


def parse_job_id(output: str) -> str | None:
    """The JobID in ``flink run`` output ("Job has been submitted with JobID <hex32>")."""
    m = re.search(r"JobID\s+([0-9a-f]{32})", output)
    return m.group(1) if m else None


# -- `twin flink cluster start|stop|status` ----------------------------------------------

def record_path() -> Path:
    return state_dir() / "flink-cluster.json"


def running() -> FlinkCluster | None:
    """The background cluster of the record if any of its processes live (else the stale
    record is removed and None returned)."""
    path = record_path()
    if not path.is_file():
        return None
    try:
        cluster = FlinkCluster.from_record(json.loads(path.read_text()))
    except (ValueError, KeyError):
        path.unlink(missing_ok=True)
        return None
    if not cluster._pids():
        path.unlink(missing_ok=True)
        return None
    return cluster


def start_background(run_dir: str | Path | None = None, slots: int = DEFAULT_SLOTS,
                     rest_port: int | None = None, timeout_s: float = 90.0
                     ) -> tuple[dict[str, Any], bool]:
    """Start the cluster (or find it running); returns (record, already_running)."""
    current = running()
    if current is not None:
        return json.loads(record_path().read_text()), True
    cluster = FlinkCluster(run_dir, slots=slots, rest_port=rest_port).start(timeout_s)
    record = cluster.record()
    record_path().parent.mkdir(parents=True, exist_ok=True)
    record_path().write_text(json.dumps(record, indent=1))
    return record, False


def stop_background() -> dict[str, Any] | None:
    """Stop the recorded cluster and remove its record; None if none was running."""
    path = record_path()
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    try:
        cluster = FlinkCluster.from_record(record)
    except KeyError:
        path.unlink(missing_ok=True)
        return None
    stopped = cluster.stop()
    path.unlink(missing_ok=True)
    return {**record, "stopped_pids": stopped}
