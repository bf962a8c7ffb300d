"""`twin flink submit` without a cluster: what it writes and what it puts on the command
line of `flink run`."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from jobs.cli import main
from pipelines.flink import cluster as flink_cluster
from pipelines.flink.job import FlinkJobOptions, job_signer


class FakeCluster:
    rest_url = "http://127.0.0.1:1"

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.submitted: list[list[str]] = []

    def submit(self, entry, args, jars=None, parallelism=None):
        self.submitted.append([str(entry), *args, *map(str, jars or [])])
        return "0" * 32


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_submit_writes_secrets_to_a_private_file_and_never_to_the_command_line(
        tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "flink"
    (run_dir / "jobs").mkdir(parents=True)
    (run_dir / "jobs").chmod(0o755)
    older = run_dir / "jobs" / "twinstream-1.json"
    older.write_text("{}")
    older.chmod(0o644)
    cluster = FakeCluster(run_dir)
    monkeypatch.setattr(flink_cluster, "running", lambda: cluster)
    monkeypatch.setattr("pipelines.kafka.config.check_reachable", lambda *a, **k: None)
    props = tmp_path / "client.properties"
    props.write_text("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n"
                     "sasl.username=twin\nsasl.password=hunter2\ntwin.hmac.key=s1gn\n")
    old_umask = os.umask(0o022)
    try:
        rc = main(["flink", "submit", "--sink", "kafka", "--bootstrap-servers",
                   "127.0.0.1:1", "--kafka-config", str(props)])
    finally:
        os.umask(old_umask)
    assert rc == 0
    out, err = capsys.readouterr()
    assert "hunter2" not in out + err and "s1gn" not in out + err
    [argv] = cluster.submitted
    assert not any("hunter2" in a or "s1gn" in a for a in argv)
    options_file = Path(argv[argv.index("--options") + 1])
    assert options_file.parent == run_dir / "jobs"
    assert mode(options_file) == 0o600 and mode(run_dir / "jobs") == 0o700
    assert mode(older) == 0o600  # options files of earlier submits are tightened too
    written = json.loads(options_file.read_text())
    assert written["kafka"]["sasl.password"] == "hunter2"  # the job needs it: file only
    assert job_signer(FlinkJobOptions.load(options_file)).secret == b"s1gn"
