"""The [mqtt] section: typed values, defaults, paths relative to the file, errors naming keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.config.reader import ConfigError
from edge_runtime.federation.config import MqttConfig, load_mqtt_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text('[node]\nname = "cdu-1"\nrole = "cdu"\n' + text)
    return path


def test_full_section(tmp_path: Path) -> None:
    cfg = load_mqtt_config(write(tmp_path, """
[mqtt]
host = "broker.site"
protocol = "3.1.1"
keepalive_s = 15
client_id = "cdu-1"
telemetry_qos = 0
state_dir = "var"
[mqtt.tls]
ca = "pki/ca.crt"
cert = "pki/node.crt"
key = "/etc/pswd/node.key"
"""))
    assert cfg is not None
    assert (cfg.host, cfg.port, cfg.protocol, cfg.keepalive_s) == ("broker.site", 8883, "3.1.1", 15)
    assert not cfg.mqtt5 and cfg.telemetry_qos == 0
    assert cfg.state_dir == (tmp_path / "var").resolve()
    assert cfg.tls is not None and cfg.tls.ca == (tmp_path / "pki/ca.crt").resolve()
    assert cfg.tls.key == Path("/etc/pswd/node.key")


def test_defaults_and_absent_section(tmp_path: Path) -> None:
    cfg = load_mqtt_config(write(tmp_path, '[mqtt]\nhost = "127.0.0.1"\n'))
    assert cfg is not None and cfg.port == 1883 and cfg.mqtt5 and cfg.tls is None
    assert cfg.telemetry_period_ms == MqttConfig().telemetry_period_ms
    assert load_mqtt_config(write(tmp_path, "")) is None


def test_every_error_names_its_key(tmp_path: Path) -> None:
    path = write(tmp_path, """
[mqtt]
port = 70000
protocol = "4"
keepalive_s = "30"
reconnect_min_s = 5.0
reconnect_max_s = 1.0
colour = "blue"
[mqtt.tls]
ca = "ca.crt"
""")
    with pytest.raises(ConfigError) as err:
        load_mqtt_config(path)
    text = str(err.value)
    for fragment in ("[mqtt] host: required", "[mqtt] port: must be <= 65535",
                     "[mqtt] protocol: must be one of 5, 3.1.1", "[mqtt] keepalive_s: must be "
                     "an integer", "[mqtt] reconnect_max_s: must be >= reconnect_min_s",
                     "[mqtt] colour: unknown key", "[mqtt.tls] cert: required",
                     "[mqtt.tls] key: required"):
        assert fragment in text, (fragment, text)
    assert all(line.startswith(str(path)) for line in err.value.lines)


def test_link_loss_keys(tmp_path: Path) -> None:
    cfg = load_mqtt_config(write(tmp_path, '[mqtt]\nhost = "h"\n'))
    assert cfg is not None and (cfg.link_loss_s, cfg.on_link_loss) == (10.0, "release")
    cfg = load_mqtt_config(write(tmp_path, '[mqtt]\nhost = "h"\nlink_loss_s = 0\n'
                                           'on_link_loss = "hold"\n'))
    assert cfg is not None and (cfg.link_loss_s, cfg.on_link_loss) == (0.0, "hold")


@pytest.mark.parametrize(("line", "error"), [
    ('link_loss_s = "10"', "[mqtt] link_loss_s: must be a number, got str '10'"),
    ("link_loss_s = true", "[mqtt] link_loss_s: must be a number, got bool True"),
    ("link_loss_s = -1.5", "[mqtt] link_loss_s: must be >= 0, got -1.5"),
    ("link_loss_s = 1e9", "[mqtt] link_loss_s: must be <= 86400, got 1e+09"),
    ("link_loss_s = nan", "[mqtt] link_loss_s: must be finite, got nan"),
    ('on_link_loss = "zero"', "[mqtt] on_link_loss: must be one of release, failsafe, hold; "
     "got 'zero'"),
    ("on_link_loss = 1", "[mqtt] on_link_loss: must be a string, got int 1"),
])
def test_link_loss_errors(tmp_path: Path, line: str, error: str) -> None:
    path = write(tmp_path, f'[mqtt]\nhost = "h"\n{line}\n')
    with pytest.raises(ConfigError) as err:
        load_mqtt_config(path)
    assert err.value.lines == [f"{path}: {error}"]


def test_command_keys_directory_is_checked_when_the_config_is_read(tmp_path: Path) -> None:
    from edge_runtime.security.signing import generate_key

    path = write(tmp_path, '[mqtt]\nhost = "h"\ncommand_keys = "keys"\n')
    keys = tmp_path / "keys"
    with pytest.raises(ConfigError) as err:  # no such directory yet: no keys in it
        load_mqtt_config(path)
    assert err.value.lines == [
        f"{path}: [mqtt] command_keys: no <role>.key in {keys} (pswd-edge keygen --role "
        f"infrastructure_manager {keys})"]
    generate_key(keys / "grid_operator.key")
    cfg = load_mqtt_config(path)
    assert cfg is not None and cfg.command_keys == keys
    (keys / "grid_operator.key").chmod(0o640)
    with pytest.raises(ConfigError) as err:
        load_mqtt_config(path)
    assert err.value.lines == [f"{path}: [mqtt] command_keys: {keys / 'grid_operator.key'}: "
                               "readable by group or others; chmod 600 it"]
    cfg = load_mqtt_config(write(tmp_path, '[mqtt]\nhost = "h"\n'))
    assert cfg is not None and cfg.command_keys is None
