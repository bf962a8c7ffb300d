"""The embedded broker and client settings, against a real Tansu."""

from __future__ import annotations

import json

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from jobs.cli import main
from pipelines.kafka import broker as broker_mod
from pipelines.kafka.config import KafkaConfigError, client_config, redact, twin_settings
from pipelines.kafka.topics import ensure_topics


def test_broker_round_trips_keys_headers_and_timestamps(broker):
    cfg = {"bootstrap.servers": broker.bootstrap_servers}
    ensure_topics(cfg, ["t"], partitions=2)
    ensure_topics(cfg, ["t"], partitions=2)  # idempotent
    p = Producer(cfg)
    for i in range(10):
        p.produce("t", key=b"k%d" % i, value=b"v%d" % i, headers=[("h", b"x")],
                  timestamp=1_795_800_000_000 + i, partition=i % 2)
    assert p.flush(10) == 0
    c = Consumer({**cfg, "group.id": "g", "enable.auto.commit": False})
    c.assign([TopicPartition("t", 0, 0), TopicPartition("t", 1, 0)])
    got = []
    while len(got) < 10:
        got.extend(m for m in c.consume(10, timeout=5) if not m.error())
    c.close()
    assert sorted(m.value() for m in got) == sorted(b"v%d" % i for i in range(10))
    m = min(got, key=lambda m: m.timestamp()[1])
    assert m.timestamp()[1] == 1_795_800_000_000 and m.headers() == [("h", b"x")]


def test_raw_topics_take_oversize_payloads_so_they_can_be_dead_lettered(broker):
    from confluent_kafka.admin import AdminClient, ConfigResource

    cfg = {"bootstrap.servers": broker.bootstrap_servers}
    ensure_topics(cfg, ["twin.raw.helios", "twin.predictions"], partitions=1)
    admin = AdminClient(cfg)
    [(_, raw)] = admin.describe_configs([ConfigResource("topic", "twin.raw.helios")]).items()
    assert raw.result()["max.message.bytes"].value == str(4 << 20)
    # a 2 MB message is accepted (a client allowed to send it, as `twin simulate` is)
    p = Producer({**cfg, "message.max.bytes": 4_000_000})
    p.produce("twin.raw.helios", b"x" * 2_000_000)
    assert p.flush(10) == 0


def test_dead_broker_gives_a_clear_error():
    port = broker_mod.free_port()
    with pytest.raises(broker_mod.BrokerUnavailable, match="cannot reach Kafka"):
        ensure_topics({"bootstrap.servers": f"127.0.0.1:{port}", "socket.timeout.ms": 1000},
                      ["t"], timeout_s=2)


def test_free_ports_come_from_below_the_ephemeral_range_and_bind():
    """Outgoing connections take their source ports from the ephemeral range; a port the
    tests hand to a server that starts seconds later must not be one of those."""
    import socket

    low = broker_mod._ephemeral_low()
    ports = [broker_mod.free_port() for _ in range(20)]
    assert all(10000 <= p < low for p in ports)
    assert len(set(ports)) > 1  # random, so two fixtures rarely ask for the same one
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[0]))


def test_port_in_use_is_refused(broker):
    with pytest.raises(broker_mod.BrokerUnavailable, match="already in use"):
        broker_mod.EmbeddedBroker(broker.port).start()


def test_cli_start_status_stop(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TWIN_STATE_DIR", str(tmp_path))
    port = broker_mod.free_port()
    try:
        assert main(["broker", "start", "--port", str(port)]) == 0
        assert capsys.readouterr().out.strip().splitlines()[-1] == f"127.0.0.1:{port}"
        assert main(["broker", "status"]) == 0
        assert json.loads((tmp_path / "broker.json").read_text())["port"] == port
        assert main(["broker", "start", "--port", str(port)]) == 0  # already running
        assert "already running" in capsys.readouterr().out
    finally:
        assert main(["broker", "stop"]) == 0
    assert not broker_mod.port_open(port)
    assert main(["broker", "status"]) == 1  # not running: a failed check


def test_client_config_layers_and_redacts(tmp_path, monkeypatch):
    monkeypatch.delenv("TWIN_BOOTSTRAP_SERVERS", raising=False)
    props = tmp_path / "client.properties"
    props.write_text("# TLS + SASL\nsecurity.protocol=SASL_SSL\nsasl.username=twin\n"
                     "sasl.password=s3cret\ntwin.hmac.key=abc\n")
    cfg = client_config("h:1", props, ["sasl.username=other"])
    assert cfg == {"security.protocol": "SASL_SSL", "sasl.username": "other",
                   "sasl.password": "s3cret", "bootstrap.servers": "h:1"}
    assert redact(cfg)["sasl.password"] == "***" and "s3cret" not in str(redact(cfg))
    assert twin_settings(props) == {"twin.hmac.key": "abc"}
    with pytest.raises(KafkaConfigError, match="bootstrap"):
        client_config(None)
    with pytest.raises(KafkaConfigError, match="key=value"):
        client_config("h:1", overrides=["nonsense"])


def test_a_dead_bootstrap_server_is_found_at_once_and_a_live_one_passes(broker):
    from pipelines.kafka.config import check_reachable

    dead = f"127.0.0.1:{broker_mod.free_port()}"
    with pytest.raises(broker_mod.BrokerUnreachable) as err:
        check_reachable({"bootstrap.servers": dead}, timeout_s=2)
    assert str(err.value) == (f"cannot reach Kafka at {dead} ({dead}: Connection refused); "
                              "is the broker running? (`twin broker start` starts one)")
    # what commands that report bad settings in one line catch, and what `twin run` does
    assert isinstance(err.value, OSError) and isinstance(err.value, broker_mod.BrokerUnavailable)
    check_reachable({"bootstrap.servers": f"{dead},{broker.bootstrap_servers}"})


def test_the_connection_refused_storm_is_one_line_a_minute():
    import logging

    from pipelines.kafka.config import CLIENT_LOGGER, StormFilter

    shown: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            shown.append(record.getMessage())

    log = logging.getLogger(CLIENT_LOGGER)
    assert any(isinstance(f, StormFilter) for f in log.filters)
    storm = StormFilter(every_s=0.3)  # one of our own, with a short minute
    logger = logging.getLogger("test.storm")
    logger.addFilter(storm)
    logger.addHandler(Keep())
    logger.propagate = False
    line = ("[thrd:127.0.0.1:{p}/{b}]: 127.0.0.1:{p}/{b}: Connect to ipv4#127.0.0.1:{p} "
            "failed: Connection refused (after {ms}ms in state CONNECT)")
    for i in range(500):  # every client, every broker thread, every retry
        logger.error("%s [%s] %s", "FAIL", f"rdkafka#consumer-{i % 9}",
                     line.format(p=9092, b=("bootstrap", "1", "2")[i % 3], ms=i % 4))
    logger.error("%s [%s] %s", "FAIL", "rdkafka#consumer-1", "[thrd:GroupCoordinator]: "
                 "GroupCoordinator: 127.0.0.1:9092: Connect to ipv4#127.0.0.1:9092 failed: "
                 "Connection refused (after 0ms in state CONNECT, 1 identical error(s) "
                 "suppressed)")
    logger.warning("%s [%s] %s", "SSL", "rdkafka#producer-1", "another kind of trouble")
    assert len(shown) == 2 and "Connection refused" in shown[0]
    assert shown[1].endswith("another kind of trouble")
    import time

    time.sleep(0.35)
    logger.error("%s [%s] %s", "FAIL", "rdkafka#consumer-3", line.format(p=9092, b="1", ms=0))
    assert len(shown) == 3
    assert shown[2].endswith("(500 more like it in the last 0.3 s not shown)")


def test_a_record_whose_pid_is_another_program_is_not_our_broker(tmp_path, monkeypatch):
    import subprocess

    monkeypatch.setenv("TWIN_STATE_DIR", str(tmp_path))
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        record = {"pid": bystander.pid, "port": 9092, "bootstrap_servers": "127.0.0.1:9092",
                  "log": "x", "started": "then"}
        (tmp_path / "broker.json").write_text(json.dumps(record))
        assert not broker_mod.is_our_broker(record)
        assert broker_mod.stop_background() == (record, "foreign")
        assert bystander.poll() is None and not (tmp_path / "broker.json").exists()
        # the same pid, but the process started at another time than recorded
        assert not broker_mod.is_our_broker({**record, "starttime": 1})
    finally:
        bystander.kill()
        bystander.wait()


def test_start_on_another_port_and_stop_of_another_port_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TWIN_STATE_DIR", str(tmp_path))
    port, other = broker_mod.free_port(), broker_mod.free_port()
    rec = broker_mod.start_background(port)
    try:
        assert broker_mod.is_our_broker(rec) and rec["starttime"] is not None
        with pytest.raises(broker_mod.BrokerConflict, match=f"127.0.0.1:{port} \\(pid "):
            broker_mod.start_background(other)
        assert broker_mod.start_background(0)["already_running"]
        assert broker_mod.start_background(None)["port"] == port
        with pytest.raises(broker_mod.BrokerConflict, match="nothing stopped"):
            broker_mod.stop_background(other)
        assert broker_mod.port_open(port)
    finally:
        stopped, what = broker_mod.stop_background(port)
    assert what == "stopped" and stopped["pid"] == rec["pid"]
    assert not broker_mod.port_open(port)
