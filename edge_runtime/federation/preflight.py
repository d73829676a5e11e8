"""What the `[mqtt]` section needs from the machine, checked before a node starts.

The config reader checks values; `pswd-edge run` then opens files. These are the checks that
would otherwise fail only then (a traceback where `check-config` had said ok): the state
directory must be a directory this process can write (it is created if missing, as run
creates it), and the TLS files must load into a context. `pswd-edge check-config` and
`run` both call `check_mqtt_runtime` through cli.load_for_run.
"""

from __future__ import annotations

import ssl
import tempfile
from pathlib import Path

from edge_runtime.config.reader import ErrorLog
from edge_runtime.federation.config import MqttConfig
from edge_runtime.federation.sqlite_wal import FileInUse, lock_file

OUTBOX_FILE = "outbox.sqlite"  # as federation/link.py names it in state_dir


def check_mqtt_runtime(cfg: MqttConfig, file: str, errors: ErrorLog) -> None:
    """Record, as `file: [mqtt] key: reason`, what would keep a node's link from starting."""
    _check_state_dir(cfg.state_dir, file, errors)
    check_tls(cfg, file, errors)


def _check_state_dir(state_dir: Path, file: str, errors: ErrorLog) -> None:
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=state_dir, prefix=".pswd-write-check-"):
            pass  # created and removed: the outbox, session and nonce files can be written
    except OSError as exc:
        errors.add(file, "mqtt", "state_dir", f"{state_dir} is not a writable directory: "
                                              f"{exc.strerror or exc}")


def check_tls(cfg: MqttConfig, file: str, errors: ErrorLog) -> None:
    """The [mqtt.tls] files exist and load as a CA and a certificate with its key."""
    tls = cfg.tls
    if tls is None:
        return
    missing = [(key, path) for key, path in (("ca", tls.ca), ("cert", tls.cert),
                                             ("key", tls.key)) if not path.is_file()]
    for key, path in missing:
        errors.add(file, "mqtt.tls", key, f"{path}: no such file")
    if missing:
        return
    try:  # in the order tls_context loads them, so the error lands on the right key
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca))
    except (ssl.SSLError, OSError, ValueError) as exc:
        errors.add(file, "mqtt.tls", "ca", f"{tls.ca}: not a PEM CA certificate: {exc}")
        return
    try:
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
    except (ssl.SSLError, OSError, ValueError) as exc:
        errors.add(file, "mqtt.tls", "cert", f"{tls.cert} with key {tls.key} does not load: "
                                             f"{exc}")


def state_dir_in_use(cfg: MqttConfig) -> str | None:
    """Why the node's outbox cannot be taken now (another running node holds its lock), or
    None. A runtime condition, not a config error: `run` checks it, `check-config` does not.
    Without it a second node on the same state_dir ran on without its MQTT link."""
    try:
        lock_file(cfg.state_dir / OUTBOX_FILE).close()  # taken and dropped at once
    except FileInUse:
        return (f"{cfg.state_dir} is in use by another running node (its outbox is locked): "
                "give each node its own [mqtt] state_dir")
    except OSError:
        return None  # unreadable: load_for_run's state_dir check reports it
    return None
