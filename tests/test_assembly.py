"""The assembler: what a node of each role holds, in which scan order, with which services."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edge_runtime.assembly import ROLES, assemble, load_node_config
from edge_runtime.config.reader import ConfigError
from edge_runtime.core.clock import VirtualClock
from edge_runtime.core.commands import SetOutput
from edge_runtime.federation.config import MqttConfig
from tests.fakes import FakeDevice

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def fakes(config, live, clock):  # type: ignore[no-untyped-def]
    return {d.name: FakeDevice(d, live) for d in config.devices}


def node_of(example: str, **kw):  # type: ignore[no-untyped-def]
    return assemble(load_node_config(EXAMPLES / example), clock=VirtualClock(),
                    driver_factory=fakes, watchdog_thread=False, **kw)


@pytest.mark.parametrize(("example", "blocks"), [
    ("cdu.toml", ["commands", "heartbeat", "thermal_preparation", "pumps", "supply_temp"]),
    ("rack.toml", ["commands", "heartbeat", "smoothing"]),
])
def test_scan_order_per_role_and_safety_always_last(example: str, blocks: list[str]) -> None:
    node = node_of(example)
    assert [b.name for b in node.engine.blocks] == blocks
    assert node.engine.interlocks[-1] is node.safety


def test_heartbeat_outputs_are_found_by_their_io_map_class() -> None:
    node = node_of("rack.toml")
    hb = [n for n, i in node.image.outputs_info.items() if i.spec.output_class == "heartbeat"]
    assert hb == ["battery.ctrl_hb"]
    values = []
    for k in range(3):
        node.engine.scan_once(10.0 + 0.01 * k)
        values.append(node.image.output("battery.ctrl_hb"))
    assert values == [1.0, 2.0, 3.0]


def test_operator_holds_are_shared_with_the_role_blocks() -> None:
    """A block never overwrites an operator hold: it reads the very dict the commands fill."""
    node = node_of("rack.toml")
    node.commands.submit(SetOutput("battery.w_set_kw", 12.0, source="local"))
    node.engine.scan_once(10.0)
    smoothing = node.role_blocks[0]
    assert getattr(smoothing, "held", None) is node.manual.manual
    assert node.image.output("battery.w_set_kw") == 12.0


def test_services_follow_the_config(tmp_path: Path) -> None:
    plain = node_of("cdu.toml")
    assert plain.services == {}
    mqtt = MqttConfig(state_dir=tmp_path / "state")
    cfg = dataclasses.replace(load_node_config(EXAMPLES / "cdu.toml"), mqtt=mqtt)
    linked = assemble(cfg, clock=VirtualClock(), driver_factory=fakes, watchdog_thread=False)
    assert set(linked.services) == {"mqtt", "ids"}
    assert set(assemble(cfg, federate=False, driver_factory=fakes).services) == set()
    site = assemble(load_node_config(EXAMPLES / "site.toml"), driver_factory=fakes)
    assert set(site.services) == {"coordinator", "ids"}  # no devices: no telemetry of its own


def test_every_role_assembles_from_a_minimal_config(tmp_path: Path) -> None:
    for role in ROLES:
        path = tmp_path / f"{role}.toml"
        mqtt = '[mqtt]\nhost = "127.0.0.1"\n' if role == "site" else ""
        path.write_text(f'[node]\nname = "n-{role}"\nrole = "{role}"\n{mqtt}')
        node = assemble(load_node_config(path), driver_factory=fakes, watchdog_thread=False)
        assert node.config.role == role and node.engine.interlocks[-1] is node.safety


@pytest.mark.parametrize(("node_table", "line"), [
    ('name = "workload"\nrole = "cdu"', "[node] name: node 'workload' is reserved"),
    ('name = "coordinator"\nrole = "rack"', "[node] name: node 'coordinator' is reserved"),
    ('name = "cdu-1"\nrole = "cdu"\nsite = "a/b"', "[node] site: site 'a/b' cannot be an MQTT"),
    ('name = "cdu-1"\nrole = "cdu"\nsite = "a#"', "[node] site: site 'a#' cannot be an MQTT"),
    ('name = "s-1"\nrole = "site"', "[mqtt] (table): required for role site"),
    ('name = "r-1"\nrole = "rack"\n[site]', "[site] (table): only for role site, not 'rack'"),
])
def test_the_loader_refuses_what_the_assembler_could_not_run(tmp_path: Path, node_table: str,
                                                              line: str) -> None:
    path = tmp_path / "n.toml"
    path.write_text(f"[node]\n{node_table}\n")
    with pytest.raises(ConfigError) as info:
        load_node_config(path)
    assert any(e.startswith(f"{path}: {line}") for e in info.value.lines), info.value.lines


@pytest.mark.anyio
async def test_a_service_that_dies_raises_an_alarm_and_the_scan_runs_on() -> None:
    class Broken:
        async def run(self) -> None:
            raise RuntimeError("link bug")

        def get_status(self) -> dict[str, object]:
            return {}

    node = assemble(load_node_config(EXAMPLES / "cdu.toml"), driver_factory=fakes,
                    watchdog_thread=False)
    node.attach("broken", Broken())
    await node.run(0.5)
    failed = [e for e in node.events.recent(500) if e.code == "service_failed"]
    assert [e.source for e in failed] == ["service.broken"]
    assert "link bug" in failed[0].message
    assert node.engine.stats.cycles >= 3  # the scan kept its period meanwhile
