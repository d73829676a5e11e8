"""Link-loss watchdog (`[mqtt] link_loss_s`, `on_link_loss`): a value the site set on an
output is held until released, so without a watchdog it would outlive the site's supervision
(a battery discharging for a grid event that nobody follows any more). When the link has been
down for link_loss_s on the node's clock (checked after every scan by a LinkLossGuard, a scan
observer, so it runs in simulated time too; counted from start-up until the first connect),
the guard acts once per outage on every output an MQTT command holds (source "mqtt.*"):
- "release" (the default): ReleaseOutput(point, source="link_loss", held_by="mqtt."), so
  the output goes back to local automatic control (an output no control block writes keeps
  its last staged value, the site's: use "failsafe" for those);
- "failsafe": SetOutput(point, io_map failsafe, source="link_loss", held_by="mqtt."), held
  there until an operator, or the site once back, sets or releases it;
- "hold": nothing; the outputs stay as the site set them.
The commands are applied and audited at the next scan like any other (held_by: an operator's
hold made meanwhile is left alone). Each policy raises the alarm `site_link_lost` naming the
outputs; the first connect after it raises `site_link_restored`. Local operator holds,
technician forces (the safety layer) and interlocks are never touched. Detection is the MQTT
client's: at once when the broker closes or refuses the socket, within about 2 x keepalive_s
(paho's ping timeout) when the network silently drops packets.

The site link is also lost when no site coordinator is online (`[mqtt] require_coordinator`,
default true; issue 8 finding 7): the coordinators keep a retained online state with an
offline will on pswd/v1/{site}/coordinator/{instance}/state (coordinator_state.py), NodeLink
feeds each one to `coordinator(instance, payload)`, and the link counts as up only while the
broker link is up and at least one instance is online. So a coordinator killed while the
broker stays up (its will fires within 1.5 x its keepalive) or stopped cleanly (it publishes
offline) is, link_loss_s later, exactly a link loss: same policy, same alarms, whose message
names the cause ("no site coordinator online"). At start the grace is link_loss_s: down from
creation until the broker is reached and a coordinator's retained online state has arrived.
A node of a site without coordinator (a lab bench) sets require_coordinator = false.
"""

from __future__ import annotations

from typing import Protocol

from edge_runtime.core.clock import Clock
from edge_runtime.core.commands import CommandQueue, ReleaseOutput, SetOutput
from edge_runtime.core.events import EventLog, Severity
from edge_runtime.core.image import ProcessImage
from edge_runtime.federation.coordinator_state import CoordinatorPresence


class HeldOutputs(Protocol):
    """What the link-loss watchdog reads of the command path (core.commands.ManualOutputs)."""

    def holds(self) -> dict[str, str]:
        """Every held output -> source of the command that holds it."""
        ...


class GuardedNode(Protocol):
    """What the link-loss guard needs of edge_runtime.node.Node."""

    clock: Clock
    image: ProcessImage
    events: EventLog
    commands: CommandQueue

    @property
    def manual(self) -> HeldOutputs:
        """The command path's operator-held outputs (read only)."""
        ...


SITE_SOURCE = "mqtt."  # commands from the link carry source "mqtt.<kind>" (inbound.py)
LINK_LOSS_SOURCE = "link_loss"


class LinkLossWatchdog:
    """When the link has been down `after_s` (once per outage), and when it is back.

    Sans-IO on the caller's monotonic time. Down from creation until the first connect: a node
    that never reaches its broker is as unsupervised as one that lost it."""

    def __init__(self, after_s: float, now: float) -> None:
        self.after_s = after_s
        self.down_since: float | None = now
        self.lost = False  # declared lost in the current outage

    def link(self, up: bool, now: float) -> float | None:
        """Record a link change; on a connect that ends a declared loss, how long it lasted."""
        if not up:
            if self.down_since is None:
                self.down_since = now
            return None
        since, self.down_since = self.down_since, None
        if not self.lost or since is None:
            return None
        self.lost = False
        return now - since

    def due(self, now: float) -> bool:
        """True at the first call once the current outage has lasted after_s."""
        if self.after_s <= 0 or self.lost or self.down_since is None:
            return False
        if now - self.down_since < self.after_s:
            return False
        self.lost = True
        return True


class LinkLossGuard:
    """Scan observer acting on a lost site link (see the module docstring); sans-IO.

    Whoever owns the link calls `link(up)` on every change (NodeLink does, from its MQTT
    client); `step` runs after every scan and only queues commands and raises events. Usable
    without a broker (a scenario can drive `link` itself):

        guard = LinkLossGuard(node, after_s=10.0, policy="release")
        node.engine.observers.append(guard)
        guard.link(True)     # connected; guard.link(False) starts the clock
    """

    name = "link_loss"

    def __init__(self, node: GuardedNode, after_s: float, policy: str = "release", *,
                 require_coordinator: bool = False) -> None:
        self.node = node
        self.after_s = after_s
        self.policy = policy  # federation.config.LINK_LOSS_POLICIES
        self.watchdog = LinkLossWatchdog(after_s, node.clock.monotonic())
        self.released: list[str] = []  # outputs released (or failsafe) at the last loss
        self.require_coordinator = require_coordinator
        self.coordinators = CoordinatorPresence()
        self._broker_up = False

    @property
    def lost(self) -> bool:
        """True from the alarm until the link is back."""
        return self.watchdog.lost

    @property
    def cause(self) -> str:
        """Why the site link is down now ("" while it is up)."""
        if not self._broker_up:
            return "broker link down"
        if self.require_coordinator and not self.coordinators.online:
            return "no site coordinator online"
        return ""

    def link(self, up: bool) -> None:
        """The broker link went up or down."""
        self._broker_up = up
        if not up:
            self.coordinators.clear()  # known again from the retained states on reconnect
        self._update()

    def coordinator(self, instance: str, payload: bytes) -> None:
        """A message on pswd/v1/{site}/coordinator/{instance}/state."""
        self.coordinators.update(instance, payload)
        self._update()

    def _update(self) -> None:
        """Feed the watchdog; back after a declared loss raises site_link_restored."""
        lasted = self.watchdog.link(not self.cause, self.node.clock.monotonic())
        if lasted is not None:
            self.node.events.raise_event(
                self.node.clock.wall(), LINK_LOSS_SOURCE, Severity.INFO,
                f"site link back after {lasted:.1f} s", "site_link_restored")

    def step(self, image: ProcessImage, now: float, dt: float) -> None:
        """At the scan's time: once the outage has lasted after_s, act and raise the alarm."""
        if not self.watchdog.due(now):
            return
        site_held = sorted(p for p, src in self.node.manual.holds().items()
                           if src.startswith(SITE_SOURCE))
        outputs = self.node.image.outputs_info
        safe = {p: float(outputs[p].spec.failsafe or 0.0) for p in site_held}
        for point in site_held if self.policy != "hold" else ():
            self.node.commands.submit(
                ReleaseOutput(point, source=LINK_LOSS_SOURCE, held_by=SITE_SOURCE)
                if self.policy == "release" else
                SetOutput(point, safe[point], source=LINK_LOSS_SOURCE, held_by=SITE_SOURCE))
        self.released = site_held if self.policy != "hold" else []
        named = ", ".join(site_held)
        what = ("no output held by the site" if not site_held
                else f"released {named} to local control" if self.policy == "release"
                else "held at failsafe " + ", ".join(
                    f"{p} = {v:g} {outputs[p].unit}".rstrip() for p, v in safe.items())
                if self.policy == "failsafe"
                else f"holding {named} as the site set them (on_link_loss = hold)")
        why = " (no site coordinator online)" if self.cause == "no site coordinator online" else ""
        self.node.events.raise_event(
            self.node.clock.wall(), LINK_LOSS_SOURCE, Severity.ALARM,
            f"site link lost for {self.after_s:g} s{why}: {what}", "site_link_lost")
