"""The role matrix's parts (tests/test_role_matrix.py): a node with one output of every output
class, the cells of each transport, the answer each cell must get derived from the one rights
table, and an event loop in a thread that the node, the broker link and the OPC UA clients
share across cells (one node per transport for the whole module, not one per cell).

Expected answers are never written by hand: `mqtt_refusal` and `opcua_allowed` ask
`Rights.allows` / `Rights.check` (core/authority.py) in the order the node asks them."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from asyncua import ua
from asyncua.ua.uaerrors import UaStatusCodeError

from edge_runtime.assembly import assemble, load_node_config
from edge_runtime.config.iomap import default_io_maps_dir
from edge_runtime.config.schema import OUTPUT_CLASSES
from edge_runtime.core.authority import USER_ROLES, Refused, Rights
from edge_runtime.messages.annex_a import format_datetime
from edge_runtime.node import Node
from edge_runtime.servers.opcua.users import VIEWER
from tests.fakes import FakeDevice

T = TypeVar("T")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DEVICE = "m"  # the matrix device: output m.<class> for every class, input m.trip
TRIP = "matrix_trip"  # its latched interlock, resettable by every role (the finer table neutral)

# The command kinds each MQTT topic carries: the channel (the topic) and the actions inside.
MQTT_CONTROL_CHANNELS = ("thermal_control", "battery_control", "grid_signal")
MQTT_ACTIONS = ("set_output", "release_output")
MQTT_WORKLOAD_CHANNELS = ("workload", "prepare")  # an A.1: action "announce" on that channel
# OPC UA: the ControllerType's methods and what each asks the rights table for.
OPCUA_METHOD_KINDS = {"ResetTrip": "reset_trip", "Force": "force", "Release": "release_force",
                      "SetMode": "set_mode", "SetSetpoint": "set_mode"}
OPCUA_WRITE_KIND = "set_output"  # a client's write of an output variable
OPCUA_ROLES = (*USER_ROLES, VIEWER)
# Users the OPC UA server gets, one per role (tests/opcua_helpers.py provisions the first
# four; the matrix adds a municipal partner).
OPCUA_USERS = {"tenant": "workload_operator", "bms": "infrastructure_manager",
               "grid": "grid_operator", "muni": "municipal_partner", "watcher": VIEWER}


# --- the node -------------------------------------------------------------------------------

def matrix_io_map() -> str:
    """An io_map with one output per class of OUTPUT_CLASSES (a new class gets its cells)."""
    lines = ['[device]', 'model = "role_matrix"',
             'description = "One output of every output class, and a trip input"']
    for address, cls in enumerate(OUTPUT_CLASSES):
        top = 65535.0 if cls == "heartbeat" else 100.0  # the node counts it up every scan
        lines += [f"[points.{cls}]", f"address = {address}", 'type = "uint16"',
                  'access = "w"', f'class = "{cls}"', 'unit = "%"', "min = 0.0", f"max = {top}",
                  "failsafe = 0.0", "max_hold_s = 60.0"]
    lines += ["[points.trip]", f"address = {len(OUTPUT_CLASSES)}", 'type = "uint16"']
    return "\n".join(lines) + "\n"


def build_node(tmp: Path, scan_ms: int) -> Node:
    """The example CDU (real control loops and thermal preparation) plus the matrix device,
    over FakeDevices; precedence and interlocks neutral: a long start-up grace (unread fake
    inputs never turn BAD), no watchdog thread, a trip interlock every role may reset."""
    maps = tmp / "io_maps"
    shutil.copytree(default_io_maps_dir(), maps)
    (maps / "role_matrix.toml").write_text(matrix_io_map())
    overrides: dict[str, Any] = {
        "node": {"io_maps_dir": str(maps), "scan_period_ms": scan_ms, "watchdog_ms": 60_000,
                 "realtime_priority": 0},
        "devices": {DEVICE: {"io_map": "role_matrix", "endpoint": "127.0.0.1:15502",
                             "unit_id": 10, "poll_ms": 100}},
        "safety": {"startup_s": 600.0, "interlocks": {TRIP: {
            "when": f"{DEVICE}.trip == 1", "action": "isolate",
            "outputs": {"pump2.control_word": 0}, "reset_role": list(USER_ROLES),
            "message": "role matrix trip"}}},
    }
    config = load_node_config(EXAMPLES / "cdu.toml", overrides=overrides)
    return assemble(config, watchdog_thread=False, federate=False,
                    driver_factory=lambda c, live, clk: {d.name: FakeDevice(d, live)
                                                         for d in c.devices})


def point_of(cls: str) -> str:
    """The matrix output of class `cls`."""
    return f"{DEVICE}.{cls}"


def fresh_value(current: float) -> float:
    """A value in 0..100 the output does not hold now (so a change is seen)."""
    return 37.0 if current != 37.0 else 63.0


def announcement(workload_id: str) -> dict[str, Any]:
    """An Annex A.1 the CDU's thermal preparation takes (a small load starting now)."""
    return {"PSWD_version": "1.0", "message_type": "workload_announcement",
            "timestamp": format_datetime(datetime.now(UTC)), "workload_id": workload_id,
            "workload_type": "ai_training",
            "power_profile": {"peak_power_mw": 0.05, "baseline_power_mw": 0.01,
                              "ramp_rate_mw_per_sec": 0.01, "duration_estimate_sec": 600},
            "thermal_profile": {"heat_generation_kw": 20.0}}


# --- the cells ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class MqttCell:
    """A role publishing on a command topic: `action` on one output class, or an A.1."""

    role: str
    channel: str
    action: str  # set_output | release_output | announce
    cls: str = ""  # "" for the A.1 channels

    @property
    def id(self) -> str:
        return "-".join(p for p in (self.role, self.channel, self.action, self.cls) if p)


def mqtt_cells() -> list[MqttCell]:
    """Every role x command topic x action x output class, and the A.1 topics."""
    cells = [MqttCell(role, channel, action, cls) for role in USER_ROLES
             for channel in MQTT_CONTROL_CHANNELS for action in MQTT_ACTIONS
             for cls in OUTPUT_CLASSES]
    return cells + [MqttCell(role, channel, "announce") for role in USER_ROLES
                    for channel in MQTT_WORKLOAD_CHANNELS]


@dataclass(frozen=True, slots=True)
class OpcUaCell:
    """A session of `role` calling a method or writing an output variable ("Write")."""

    role: str
    method: str  # a ControllerType method, or "Write"
    cls: str = ""  # the output class, for Write / Force / Release

    @property
    def kind(self) -> str:
        return OPCUA_WRITE_KIND if self.method == "Write" else OPCUA_METHOD_KINDS[self.method]

    @property
    def id(self) -> str:
        return "-".join(p for p in (self.role, self.method, self.cls) if p)


def opcua_cells() -> list[OpcUaCell]:
    """Every role (and viewer) x output write / method (x output class where it has one)."""
    cells: list[OpcUaCell] = []
    for role in OPCUA_ROLES:
        for method in ("Write", *OPCUA_METHOD_KINDS):
            on_outputs = method in ("Write", "Force", "Release")
            cells += ([OpcUaCell(role, method, cls) for cls in OUTPUT_CLASSES] if on_outputs
                      else [OpcUaCell(role, method)])
    return cells


# --- expected answers, from the one table ---------------------------------------------------

def mqtt_refusal(rights: Rights, cell: MqttCell) -> str | None:
    """None if the node must take `cell`, else the start of the refusal it must answer: the
    signature check refuses a role with no right at all on the channel ("role: ..."); the
    command path then checks the action, then the channel, on the output's class."""
    if cell.role not in rights.roles_for(cell.channel):
        return f"role: {cell.role} may not send {cell.channel}"
    cls = cell.cls or None
    try:
        rights.check(cell.role, cell.action, cls, point_of(cell.cls) if cls else "")
        rights.check(cell.role, cell.channel, cls, point_of(cell.cls) if cls else "")
    except Refused as exc:
        return str(exc)
    return None


def mqtt_allowed(rights: Rights, cell: MqttCell) -> bool:
    """The channel rule: both the action and the channel allow the class."""
    return (rights.allows(cell.role, cell.action, cell.cls or None)
            and rights.allows(cell.role, cell.channel, cell.cls or None))


def opcua_allowed(rights: Rights, cell: OpcUaCell) -> bool:
    """The table's answer (it grants the viewer nothing)."""
    return rights.allows(cell.role, cell.kind, cell.cls or None)


# --- one event loop for the module ----------------------------------------------------------

class LoopThread:
    """An asyncio loop in a daemon thread: the nodes scan on it between cells, and each cell's
    coroutine runs on it (`run`), bounded."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="role-matrix",
                                       daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
        """Run `coro` on the loop and return its result (TimeoutError after `timeout` s)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def enter(self, stack: contextlib.AsyncExitStack,
              cm: contextlib.AbstractAsyncContextManager[T], timeout: float = 40.0) -> T:
        """Enter an async context manager on the loop, onto `stack` (left by its aclose)."""
        return self.run(stack.enter_async_context(cm), timeout)

    def close(self) -> None:
        """Stop the loop and its thread (every stack closed before)."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def until(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Wait (bounded) for state that has no event to await: checked every 10 ms."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.01)


async def answer_of(call: Awaitable[Any]) -> tuple[str, Any]:
    """("Good", result) or (the Bad code's name, None) of an OPC UA request."""
    try:
        return "Good", await call
    except UaStatusCodeError as exc:
        return ua.StatusCode(exc.code).name, None
