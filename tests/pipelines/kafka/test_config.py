"""Kafka settings and secrets: a secret on the command line is refused with what to do
instead; secrets never appear in errors or printed configs."""

from __future__ import annotations

import pytest

from jobs.cli import main
from pipelines.kafka.broker import free_port
from pipelines.kafka.config import (
    KafkaConfigError,
    client_config,
    is_secret,
    parse_overrides,
    read_properties,
    redact,
)

SECRETS = ["sasl.password", "ssl.key.password", "ssl.key.pem", "ssl.keystore.password",
           "sasl.oauthbearer.client.secret", "sasl.oauthbearer.config",
           "twin.schema.registry.basic.auth.user.info", "twin.hmac.key", "SASL.PASSWORD",
           "api.token", "my.private.key"]
PLAIN = ["bootstrap.servers", "security.protocol", "sasl.mechanism", "sasl.username",
         "ssl.ca.location", "ssl.key.location", "ssl.keystore.location",
         "ssl.certificate.pem", "sasl.oauthbearer.token.endpoint.url", "acks", "linger.ms",
         "twin.schema.registry.url", "twin.command.validity.ms", "session.timeout.ms"]


@pytest.mark.parametrize("name", SECRETS)
def test_secret_settings_are_recognized_and_masked(name):
    assert is_secret(name)
    assert redact({name: "hunter2"}) == {name: "***"}


@pytest.mark.parametrize("name", PLAIN)
def test_plain_settings_are_not_secrets(name):
    assert not is_secret(name)
    assert redact({name: "x"}) == {name: "x"}


@pytest.mark.parametrize("name", SECRETS)
def test_a_secret_given_with_x_is_refused_saying_where_to_put_it(name):
    with pytest.raises(KafkaConfigError) as err:
        parse_overrides(["acks=all", f"{name}=hunter2"])
    assert "--kafka-config FILE" in str(err.value) and name in str(err.value)
    assert "hunter2" not in str(err.value)


def test_secrets_still_come_from_the_config_file(tmp_path):
    props = tmp_path / "client.properties"
    props.write_text("security.protocol=SASL_SSL\nsasl.password=hunter2\ntwin.hmac.key=k\n")
    cfg = client_config("h:1", props, ["sasl.username=twin"])
    assert cfg["sasl.password"] == "hunter2" and cfg["sasl.username"] == "twin"


def test_errors_about_bad_lines_never_quote_them(tmp_path):
    props = tmp_path / "client.properties"
    props.write_text("security.protocol=SSL\nhunter2-my-password-on-its-own\n")
    with pytest.raises(KafkaConfigError) as err:
        read_properties(props)
    assert str(err.value) == f"{props}:2: expected key=value"
    with pytest.raises(KafkaConfigError) as err:
        parse_overrides(["sasl.password:hunter2"])
    assert "hunter2" not in str(err.value) and "key=value" in str(err.value)


@pytest.mark.parametrize("command", [
    ["run", "--source", "kafka", "--out", "{tmp}/out", "--no-progress"],
    ["simulate", "--assets", "1", "--duration", "1h"],
    ["tail", "twin.actions", "--max", "1", "--timeout", "1"],
    ["flink", "run", "--sink", "kafka", "--out", "{tmp}/flink"],
], ids=["run", "simulate", "tail", "flink"])
@pytest.mark.parametrize("secret", ["sasl.password", "twin.hmac.key"])
def test_every_command_refuses_a_secret_on_its_command_line_with_exit_2(
        command, secret, tmp_path, capfd):
    """Before anything else happens (no broker is even contacted: none listens here)."""
    bootstrap = f"127.0.0.1:{free_port()}"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in command]
    rc = main([*argv, "--bootstrap-servers", bootstrap, "-X", f"{secret}=hunter2"])
    out, err = capfd.readouterr()
    assert rc == 2
    assert "--kafka-config" in err and secret in err
    assert "hunter2" not in out + err
