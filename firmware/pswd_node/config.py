"""config.json: defaults, checks (ValueError naming the field), and the provisioned key.

The key never sits in config.json: it is a file of its own (`key_file`, default key.hex: 64
hex digits, the format of the runtime's <role>.key files), copied to the board once and
never committed. Wi-Fi's password likewise (`wifi.password_file`).
"""

import json

DEFAULTS = {
    "site": "",
    "sensor_id": "",
    "period_ms": 100,
    "telemetry_period_ms": 1000,
    "wdt_ms": 4000,
    "key_file": "key.hex",
    "cmd_role": "infrastructure_manager",
    "max_age_s": 30,
    "max_nonces": 64,
    "state_dir": "",
    "ntp_host": "",
    "mqtt": {"host": "", "port": 1883, "keepalive_s": 30, "net_timeout_ms": 1000,
             "backoff_min_ms": 500, "backoff_max_ms": 30000},
    "wifi": {"ssid": "", "password_file": "wifi.key"},
    "inputs": {
        "inlet_temp_c": {"adc": 26, "gain": 0.0018311, "offset": -20.0, "min_c": -20.0,
                         "max_c": 100.0, "rail_low": 64, "rail_high": 65471},
        "outlet_temp_c": {"adc": 27, "gain": 0.0018311, "offset": -20.0, "min_c": -20.0,
                          "max_c": 100.0, "rail_low": 64, "rail_high": 65471},
        "leak": {"pin": 14, "active_low": True, "pull_up": True},
        "leak_cable_fault": {"pin": 15, "active_low": True, "pull_up": True},
    },
    "outputs": {
        # active_low: a normally-open valve energised (pin high) to close, so an undriven
        # pin (reset, crash, no power) leaves it open: the failsafe (README, wiring)
        "valve": {"pin": 16, "active_low": True, "failsafe": 1, "max_hold_ms": 10000,
                  "feedback_pin": None},
    },
}
TEMPS = ("inlet_temp_c", "outlet_temp_c")
ROLES = ("workload_operator", "infrastructure_manager", "grid_operator", "municipal_partner")
_LEVEL_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-"
_RESERVED = ("workload", "grid", "time", "coordinator")


def _merge(base, over, path):
    out = {}
    for k in base:
        out[k] = base[k]
    for k in over:
        if k not in base:
            raise ValueError("config: %s%s: unknown key" % (path, k))
        if isinstance(base[k], dict):
            if not isinstance(over[k], dict):
                raise ValueError("config: %s%s: expected an object" % (path, k))
            out[k] = _merge(base[k], over[k], path + k + ".")
        else:
            out[k] = over[k]
    return out


def _level(cfg, name):
    v = cfg[name]
    ok = isinstance(v, str) and 1 <= len(v) <= 128 and v[0] not in "_.:-"
    if ok:
        for c in v:
            if c not in _LEVEL_CHARS:
                ok = False
    if not ok:
        raise ValueError("config: %s: %r cannot be an MQTT topic level (letters, digits, "
                         "_ . : - only; at most 128 characters)" % (name, v))


def _int(section, key, path, lo, hi):
    v = section[key]
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError("config: %s%s: expected an integer %d..%d, got %r" % (path, key, lo,
                                                                              hi, v))


def _num(section, key, path):
    v = section[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError("config: %s%s: expected a number, got %r" % (path, key, v))


def check(raw):
    """The full config (defaults filled in) from a parsed config.json; ValueError if bad."""
    if not isinstance(raw, dict):
        raise ValueError("config: expected a JSON object")
    cfg = _merge(DEFAULTS, raw, "")
    _level(cfg, "site")
    _level(cfg, "sensor_id")
    if cfg["sensor_id"] in _RESERVED:
        raise ValueError("config: sensor_id: %r is reserved for site topics" % cfg["sensor_id"])
    _int(cfg, "period_ms", "", 10, 10000)
    _int(cfg, "telemetry_period_ms", "", cfg["period_ms"], 60000)
    _int(cfg, "wdt_ms", "", 2 * cfg["period_ms"], 8388)  # RP2040's longest watchdog
    _int(cfg, "max_age_s", "", 1, 3600)
    _int(cfg, "max_nonces", "", 1, 1024)
    if cfg["cmd_role"] not in ROLES:
        raise ValueError("config: cmd_role: expected one of %s" % ", ".join(ROLES))
    m = cfg["mqtt"]
    _int(m, "port", "mqtt.", 1, 65535)
    _int(m, "keepalive_s", "mqtt.", 2, 3600)
    _int(m, "net_timeout_ms", "mqtt.", 10, 60000)
    _int(m, "backoff_min_ms", "mqtt.", 1, 600000)
    _int(m, "backoff_max_ms", "mqtt.", m["backoff_min_ms"], 600000)
    for name in TEMPS:
        t = cfg["inputs"][name]
        path = "inputs." + name + "."
        for key in ("gain", "offset", "min_c", "max_c"):
            _num(t, key, path)
        _int(t, "rail_low", path, 0, 65535)
        _int(t, "rail_high", path, t["rail_low"], 65535)
        if t["min_c"] >= t["max_c"]:
            raise ValueError("config: %smin_c: must be below max_c" % path)
    v = cfg["outputs"]["valve"]
    if v["failsafe"] not in (0, 1) or isinstance(v["failsafe"], bool):
        raise ValueError("config: outputs.valve.failsafe: expected 0 or 1")
    _int(v, "max_hold_ms", "outputs.valve.", cfg["period_ms"], 3600000)
    return cfg


def load(path="config.json"):
    """Read and check config.json."""
    with open(path) as f:
        text = f.read()
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ValueError("config: %s: not valid JSON (%s)" % (path, exc)) from None
    return check(raw)


def load_key(path):
    """The 32-byte command key from a file of 64 hex digits; ValueError naming the file."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        raise ValueError("key: %s: missing; provision the board's key (README)" % path) from None
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError("key: %s: expected 64 lower-case hex digits (a 32-byte key)" % path)
    return bytes(int(text[i:i + 2], 16) for i in range(0, 64, 2))
