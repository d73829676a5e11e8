"""Shared set-up of the VM scenarios: a config, a fake board and broker, the app."""

import json

from fakehw import FakeHw
from fakemqtt import FakeBroker
from pswd_node import config
from pswd_node.app import App
from pswd_node.uplink import Uplink


def load_data():
    with open("/data.json") as f:
        return json.load(f)


def make(data, connect=True, log=None, **over):
    """(app, hw, broker) from the scenario's data: its config overrides and hex key."""
    raw = {"site": "s1", "sensor_id": "rs-01", "state_dir": "/"}
    for k in data.get("config", {}):
        raw[k] = data["config"][k]
    for k in over:
        raw[k] = over[k]
    cfg = config.check(raw)
    hw = FakeHw(wall0_ms=data.get("wall0_ms", 1796529600000), log=log)
    broker = FakeBroker(log=log)
    link = None
    if connect:
        link = Uplink(cfg, broker.factory, hw.ticks_ms)
    key = None
    if data.get("key"):
        key = bytes(int(data["key"][i:i + 2], 16) for i in range(0, 64, 2))
    app = App(cfg, hw, link, key)
    return app, hw, broker


def result(obj):
    print("RESULT " + json.dumps(obj))
