"""`twin flink run` flags -> FlinkJobOptions (no JVM needed)."""

from __future__ import annotations

import pytest

from jobs.cli import build_parser
from jobs.flink_job import options_from_args


def _opts(*argv: str):
    args = build_parser().parse_args(["flink", "run", "--assets", "3", "--duration", "1h",
                                      *argv])
    return options_from_args(args)


def test_state_cache_defaults_to_three_entries_for_each_of_ten_thousand_assets():
    assert _opts().state_cache_size == 30_000


def test_state_cache_size_flag_reaches_the_job_options():
    opts = _opts("--state-cache-size", "1234", "--checkpoint-interval", "5s")
    assert (opts.state_cache_size, opts.checkpoint_interval_ms) == (1234, 5_000)
    assert opts.fleet["assets"] == 3 and opts.sinks == ["files"]


def test_state_cache_size_must_be_positive():
    with pytest.raises(SystemExit):
        _opts("--state-cache-size", "0")


def test_bundle_size_defaults_to_a_hundred_thousand_and_the_flag_reaches_the_job_options():
    assert _opts().bundle_size == 100_000
    assert _opts("--bundle-size", "5000").bundle_size == 5_000
    with pytest.raises(SystemExit):
        _opts("--bundle-size", "0")


def test_bundle_time_and_python_mode_reach_the_job_options_and_flinks_configuration():
    """(Checked on the settings, not on a live environment: building PyFlink's table
    environment in this process would break the Beam pipelines later tests fork.)"""
    from pipelines.flink.job import configuration

    assert _opts().bundle_time_ms == 100
    opts = _opts("--bundle-time", "50ms", "--python-mode", "thread")
    assert opts.bundle_time_ms == 50
    conf = configuration(opts)
    assert conf["python.fn-execution.bundle.time"] == "50"
    assert conf["python.execution-mode"] == "thread"
    assert configuration(_opts())["python.execution-mode"] == "process"


# -- the signing key: exactly the one the Beam path picks from the same settings -----------

@pytest.fixture(autouse=True)
def _no_broker_needed(monkeypatch):
    """These tests build job options, which checks that the broker answers: nothing here
    talks to one."""
    monkeypatch.setattr("pipelines.kafka.config.check_reachable", lambda *a, **k: None)


def _kafka_opts(tmp_path, *argv: str):
    return _opts("--sink", "kafka", "--bootstrap-servers", "127.0.0.1:1", *argv)


def _as_the_job_sees_it(opts, tmp_path, monkeypatch):
    """Options written as `twin flink submit` writes them and read back where the job runs:
    another state folder, no $TWIN_HMAC_KEY."""
    from pipelines.flink.job import FlinkJobOptions

    path = opts.dump(tmp_path / "jobs" / "twinstream-1.json")
    monkeypatch.setenv("TWIN_STATE_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.delenv("TWIN_HMAC_KEY", raising=False)
    return FlinkJobOptions.load(path)


@pytest.mark.parametrize("where", ["kafka-config", "env", "key-file", "per-user"])
def test_the_job_signs_with_the_key_beam_would_pick(where, tmp_path, monkeypatch):
    from pipelines.flink.job import job_signer
    from pipelines.kafka.config import twin_settings
    from pipelines.kafka.secrets import hmac_key

    props = tmp_path / "client.properties"
    props.write_text("acks=all\n")
    argv = ["--kafka-config", str(props)]
    if where == "kafka-config":
        props.write_text("twin.hmac.key=from-the-config\ntwin.command.validity.ms=90000\n")
    elif where == "env":
        monkeypatch.setenv("TWIN_HMAC_KEY", "from-the-env")
    elif where == "key-file":
        (tmp_path / "k").write_bytes(b"from-a-file\n")
        argv += ["--hmac-key-file", str(tmp_path / "k")]
    beam = hmac_key(argv[-1] if where == "key-file" else None, twin_settings(props))
    opts = _kafka_opts(tmp_path, *argv)
    assert "from-" not in repr(opts) and beam.decode() not in repr(opts)
    signer = job_signer(_as_the_job_sees_it(opts, tmp_path, monkeypatch))
    assert signer.secret == beam
    assert signer.validity_ms == (90_000 if where == "kafka-config" else 300_000)
    if where == "key-file":  # a key file travels by its path, not its content
        assert opts.hmac_key is None and opts.hmac_key_file == str(tmp_path / "k")


def test_checkpoints_are_unaligned_unless_asked_aligned():
    """A backpressured job's barrier waited behind every queued record (78 s at 1,000
    assets on two shared cores); unaligned, it overtakes them."""
    assert _opts().unaligned_checkpoints is True
    assert _opts("--aligned-checkpoints").unaligned_checkpoints is False


def test_the_jobs_python_folder_goes_first_on_path_once(monkeypatch, tmp_path):
    """Thread mode's embedded interpreter finds its packages through the ``python`` on
    PATH: a venv's Python called by its full path must still put the venv there."""
    import os

    from pipelines.flink.job import _venv_on_path

    venv_bin = tmp_path / "venv" / "bin"
    monkeypatch.setenv("PATH", os.pathsep.join(["/usr/bin", "/bin"]))
    _venv_on_path(str(venv_bin / "python"))
    _venv_on_path(str(venv_bin / "python"))
    assert os.environ["PATH"].split(os.pathsep) == [str(venv_bin), "/usr/bin", "/bin"]


def test_python_mode_defaults_to_process_and_the_flag_reaches_the_job_options():
    assert _opts().python_mode == "process"
    assert _opts("--python-mode", "thread").python_mode == "thread"
    with pytest.raises(SystemExit):
        _opts("--python-mode", "fork")
