"""The standalone Flink cluster (pipelines.flink.cluster, `twin flink cluster`) and the
Kafka connector jars (pipelines.flink.jars).

Fast tests cover jar lookup, the generated configuration and CLI errors without starting a
JVM or downloading anything. The slow ones start real clusters on free loopback ports in
tmp folders: one via the CLI, and one module-wide cluster shared by the status, job
submission and TaskManager-failure tests (a cluster start costs ~8 s). Every started
process is killed by pid on teardown, whatever happened.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
import zipfile
from pathlib import Path

import pytest

from jobs import cli
from pipelines.flink import cluster as fc
from pipelines.flink import jars

KAFKA_SOURCE = "org/apache/flink/connector/kafka/source/KafkaSource.class"
KAFKA_CONSUMER = "org/apache/kafka/clients/consumer/KafkaConsumer.class"


def _kill_leftovers(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# -- jars (fast) ---------------------------------------------------------------------------

@pytest.fixture
def jar_files(tmp_path) -> list[Path]:
    paths = [tmp_path / "a.jar", tmp_path / "b.jar"]
    for p in paths:
        p.write_bytes(b"PK fake")
    return paths


def test_kafka_jars_user_paths_win_over_env_and_cache(jar_files, tmp_path, monkeypatch):
    monkeypatch.setenv(jars.DIR_ENV, str(tmp_path / "empty-cache"))
    monkeypatch.setenv(jars.JARS_ENV, "/nowhere/x.jar")
    assert jars.kafka_jars([str(p) for p in jar_files]) == jar_files


def test_kafka_jars_from_env_pathsep_separated(jar_files, tmp_path, monkeypatch):
    monkeypatch.setenv(jars.DIR_ENV, str(tmp_path / "empty-cache"))
    monkeypatch.setenv(jars.JARS_ENV, os.pathsep.join(str(p) for p in jar_files))
    assert jars.kafka_jars() == jar_files
    assert jars.kafka_jars([]) == jar_files  # an empty flag is no flag


def test_kafka_jars_missing_user_path_is_named(jar_files, monkeypatch):
    monkeypatch.delenv(jars.JARS_ENV, raising=False)
    with pytest.raises(jars.JarsUnavailable, match="not found: /nowhere/x.jar"):
        jars.kafka_jars([str(jar_files[0]), "/nowhere/x.jar"])


def test_kafka_jars_missing_cache_says_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.delenv(jars.JARS_ENV, raising=False)
    monkeypatch.setenv(jars.DIR_ENV, str(tmp_path / "cache"))
    with pytest.raises(jars.JarsUnavailable) as err:
        jars.kafka_jars()
    message = str(err.value)
    assert "make setup" in message and "python -m pipelines.flink.jars" in message
    assert "--kafka-jars" in message and str(tmp_path / "cache") in message


def test_kafka_jars_uses_cached_pair(tmp_path, monkeypatch):
    monkeypatch.delenv(jars.JARS_ENV, raising=False)
    monkeypatch.setenv(jars.DIR_ENV, str(tmp_path))
    for name in jars.MEMBERS:
        (tmp_path / name).write_bytes(b"jar")
    assert jars.kafka_jars() == [tmp_path / "flink-connector-kafka.jar",
                                 tmp_path / "kafka-clients.jar"]


def _fake_wheel(folder: Path) -> Path:
    wheel = folder / "shigawire_apache_flink_libraries-2.0.0.post1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pyflink/lib/flink-connector-kafka.jar", b"connector bytes")
        zf.writestr("pyflink/lib/kafka-clients.jar", b"clients bytes")
        zf.writestr("pyflink/lib/flink-dist-2.0.0.jar", b"must not be extracted")
    return wheel


def test_fetch_extracts_two_jars_then_is_idempotent(tmp_path, monkeypatch):
    calls: list[Path] = []

    def download(dest: Path) -> Path:
        calls.append(dest)
        return _fake_wheel(dest)

    monkeypatch.setattr(jars, "_download_wheel", download)
    cache = tmp_path / "cache"
    paths = jars.fetch(cache)
    assert [p.name for p in paths] == ["flink-connector-kafka.jar", "kafka-clients.jar"]
    assert paths[0].read_bytes() == b"connector bytes"
    assert sorted(p.name for p in cache.iterdir()) == [
        "flink-connector-kafka.jar", "kafka-clients.jar", "manifest.json"]
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["sha256"]["kafka-clients.jar"] == jars.sha256(paths[1])
    assert jars.fetch(cache) == paths and len(calls) == 1  # second call: no download
    paths[1].write_bytes(b"corrupted")  # a hash mismatch fetches again
    assert jars.cached(cache) is None
    jars.fetch(cache)
    assert len(calls) == 2 and paths[1].read_bytes() == b"clients bytes"


def test_fetch_reports_pip_failure(tmp_path, monkeypatch):
    monkeypatch.setattr(jars, "WHEEL", "twinstream-no-such-package-xyz==0.0.0")
    monkeypatch.setattr(jars.subprocess, "run", lambda *a, **k: type(
        "P", (), {"returncode": 1, "stdout": "", "stderr": "ERROR: No matching distribution"})())
    with pytest.raises(jars.JarsUnavailable,
                       match=r"could not download .* \(pip exit 1\): ERROR: No matching"):
        jars.fetch(tmp_path / "cache")


def test_cached_jars_hold_the_kafka_classes():
    paths = jars.cached()
    if paths is None:
        pytest.skip(f"Kafka connector jars not fetched into {jars.cache_dir()} "
                    "(run `make setup` or `python -m pipelines.flink.jars`)")
    connector, clients = paths
    assert zipfile.is_zipfile(connector) and zipfile.is_zipfile(clients)
    assert KAFKA_SOURCE in zipfile.ZipFile(connector).namelist()
    assert KAFKA_CONSUMER in zipfile.ZipFile(clients).namelist()


# -- configuration and CLI errors (fast, no JVM) -------------------------------------------

def test_generated_conf_is_loopback_with_our_ports_and_python(tmp_path):
    c = fc.FlinkCluster(tmp_path / "run", slots=3, rest_port=18081, rpc_port=16123)
    conf = (c.write_conf() / "config.yaml").read_text()
    lines = set(conf.splitlines())
    for expected in ("jobmanager.rpc.address: 127.0.0.1", "jobmanager.bind-host: 127.0.0.1",
                     "taskmanager.host: 127.0.0.1", "taskmanager.bind-host: 127.0.0.1",
                     "rest.address: 127.0.0.1", "rest.bind-address: 127.0.0.1",
                     "rest.port: 18081", "jobmanager.rpc.port: 16123",
                     "taskmanager.numberOfTaskSlots: 3",
                     f"execution.checkpointing.dir: file://{c.run_dir}/checkpoints",
                     f"env.log.dir: {c.run_dir}/log", f"env.pid.dir: {c.run_dir}/pids",
                     f"python.executable: {sys.executable}",
                     f"python.client.executable: {sys.executable}"):
        assert expected in lines, expected
    assert "$" not in conf  # every placeholder filled
    assert (c.conf_dir / "log4j.properties").is_file()
    assert (c.conf_dir / "log4j-cli.properties").is_file()
    env = c.env()
    assert env["FLINK_CONF_DIR"] == str(c.conf_dir)
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)


def test_jobmanager_counts_as_alive_while_its_daemon_process_has_not_exec_d_java(tmp_path):
    """Right after ``jobmanager.sh start`` returns, the process it started may still be the
    shell that will exec ``java``: its pid file, not its command line, says it is alive."""
    import subprocess

    c = fc.FlinkCluster(tmp_path / "run")
    assert not c._jobmanager_alive()  # no pid file, no JVM
    c.pid_dir.mkdir(parents=True)
    pid_file = c.pid_dir / f"flink-{fc.IDENT}-standalonesession.pid"
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        pid_file.write_text(f"{stand_in.pid}\n")
        assert c.jobmanager_pids() == [] and c._jobmanager_alive()
    finally:
        stand_in.kill()
        stand_in.wait()
    assert not c._jobmanager_alive()  # the process is gone: the JobManager exited
    pid_file.write_text("garbage\n")
    assert not c._jobmanager_alive()


def test_jobmanager_exit_names_the_logs_last_error(tmp_path):
    log = tmp_path / "jm.log"
    log.write_text(
        "2026-11-24 INFO  org.apache.flink.runtime.entrypoint.ClusterEntrypoint - Starting\n"
        "2026-11-24 ERROR org.apache.flink.runtime.entrypoint.ClusterEntrypoint - Could not "
        "start cluster entrypoint StandaloneSessionClusterEntrypoint.\n"
        "java.net.BindException: Address already in use\n"
        "\tat sun.nio.ch.Net.bind0(Native Method)\n"
        "2026-11-24 INFO  org.apache.flink.runtime.blob.BlobServer - Stopped\n")
    assert fc._log_cause(str(log)) == ": java.net.BindException: Address already in use"
    log.write_text("2026-11-24 INFO  all well\n")
    assert fc._log_cause(str(log)) == ""
    assert fc._log_cause(str(tmp_path / "missing.log")) == ""


def test_parse_job_id():
    out = "Job has been submitted with JobID 8e7703f570b0e4e78313f7d5dc37fef8\n"
    assert fc.parse_job_id(out) == "8e7703f570b0e4e78313f7d5dc37fef8"
    assert fc.parse_job_id("Python process exits with code: 1") is None


def test_missing_java_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(fc.FlinkClusterError, match="no `java` on PATH"):
        fc.java_binary()


def test_cli_start_on_busy_port_fails_with_exit_2(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        rc = cli.main(["flink", "cluster", "start", "--rest-port", str(port),
                       "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip() == f"twin flink: REST port {port} on 127.0.0.1 is already in use"


def test_cli_status_and_stop_without_cluster(capsys):
    assert cli.main(["flink", "cluster", "status"]) == 1  # not running: a failed check
    assert cli.main(["flink", "cluster", "stop"]) == 0
    out = capsys.readouterr().out
    assert "no Flink cluster running" in out


# -- real clusters (slow) ------------------------------------------------------------------

@pytest.mark.slow
def test_cli_start_status_stop(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TWIN_STATE_DIR", str(tmp_path / "state"))
    port = fc.free_port()
    seen: set[int] = set()
    try:
        assert cli.main(["flink", "cluster", "start", "--rest-port", str(port)]) == 0
        out = capsys.readouterr().out
        assert out.strip().splitlines()[-1] == f"http://127.0.0.1:{port}"
        record = json.loads((tmp_path / "state" / "flink-cluster.json").read_text())
        seen |= {*record["jobmanager_pids"], *record["taskmanager_pids"]}
        assert record["run_dir"] == str(tmp_path / "state" / "flink")
        assert len(record["jobmanager_pids"]) == 1 and len(record["taskmanager_pids"]) == 1

        assert cli.main(["flink", "cluster", "start"]) == 0
        assert "already running" in capsys.readouterr().out

        assert cli.main(["flink", "cluster", "status", "--json"]) == 0
        status = json.loads(capsys.readouterr().out)
        assert (status["taskmanagers"], status["slots_total"], status["jobs_running"]) == (
            1, 2, 0)
        assert status["rest_url"] == f"http://127.0.0.1:{port}"

        assert cli.main(["flink", "cluster", "stop"]) == 0
        assert "Flink cluster stopped" in capsys.readouterr().out
        assert not (tmp_path / "state" / "flink-cluster.json").exists()
        assert not any(fc.pid_alive(p) for p in seen)
        assert cli.main(["flink", "cluster", "status"]) == 1
    finally:
        fc.stop_background()
        _kill_leftovers(seen)


@pytest.fixture(scope="module")
def flink(tmp_path_factory):
    """One cluster (2 slots, free ports) for the module; always stopped, leftovers killed."""
    cluster = fc.FlinkCluster(tmp_path_factory.mktemp("flink-run"), slots=2,
                              rest_port=fc.free_port())
    seen: set[int] = set()
    try:
        cluster.start()
        seen |= {*cluster.jobmanager_pids(), *cluster.taskmanager_pids()}
        yield cluster
    finally:
        seen |= {*cluster.jobmanager_pids(), *cluster.taskmanager_pids()}
        cluster.stop()
        _kill_leftovers(seen)


@pytest.mark.slow
def test_status_shows_one_taskmanager_with_two_slots(flink):
    status = flink.status()
    assert status["reachable"] is True
    assert status["flink_version"] == "2.3.0"
    assert (status["taskmanagers"], status["slots_total"]) == (1, 2)
    assert len(status["jobmanager_pids"]) == 1 and len(flink.taskmanager_pids()) == 1
    assert status["rest_url"] == f"http://127.0.0.1:{flink.rest_port}"


SMOKE_JOB = '''\
import json, sys
from pyflink.datastream import RuntimeExecutionMode, StreamExecutionEnvironment
from pyflink.datastream.functions import MapFunction

OUT = sys.argv[1]


class Double(MapFunction):
    def map(self, x):
        with open(OUT, "a") as f:  # parallelism 1: one writer
            f.write(json.dumps({"value": x * 2, "python": sys.executable}) + "\\n")
        return x * 2


env = StreamExecutionEnvironment.get_execution_environment()
env.set_runtime_mode(RuntimeExecutionMode.BATCH)
env.set_parallelism(1)
env.from_collection([1, 2, 3]).map(Double())
env.execute("twin-cluster-smoke")
'''


@pytest.mark.slow
def test_submit_python_job_runs_on_venv_python(flink, tmp_path):
    job_file = tmp_path / "double.py"
    job_file.write_text(SMOKE_JOB)
    out = tmp_path / "out.jsonl"
    job_id = flink.submit(job_file, [str(out)])
    assert len(job_id) == 32
    assert flink.wait_for_job(job_id, "FINISHED", timeout_s=120) == "FINISHED"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["value"] for r in rows) == [2, 4, 6]
    assert {r["python"] for r in rows} == {sys.executable}  # -pyexec: the venv's python
    assert flink.job_status(job_id) == "FINISHED"


@pytest.mark.slow
def test_killed_taskmanager_is_replaced_then_stop_leaves_nothing(flink):
    (victim,) = flink.taskmanager_pids()
    os.kill(victim, signal.SIGKILL)
    t0 = time.monotonic()
    gone = flink.wait_for_taskmanagers(0, timeout_s=60)
    assert gone["slots-total"] == 0
    assert time.monotonic() - t0 < 30  # short heartbeats: noticed in seconds, not 50 s
    new = flink.start_taskmanager()
    assert new != victim and flink.taskmanager_pids() == [new]
    status = flink.status()
    assert (status["taskmanagers"], status["slots_total"]) == (1, 2)
    stopped = flink.stop()
    assert new in stopped
    assert flink.jobmanager_pids() == [] and flink.taskmanager_pids() == []
    assert not any(fc.pid_alive(p) for p in stopped)
