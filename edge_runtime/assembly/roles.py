"""What each role runs: the control blocks and interlocks a node gets for its role.

An explicit registry (no lookup by module name): adding a role means adding a line here.
`RoleControls` is what the command path may do to those blocks (mode changes, announced
loads); the safety layer is not a role block: the node always runs it last.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from edge_runtime.assembly.config import NodeConfig
from edge_runtime.control.cdu_config import build_cdu_blocks
from edge_runtime.control.heat_recovery import build_heat_recovery_block
from edge_runtime.control.smoothing import SmoothingBlock, build_smoothing_block
from edge_runtime.control.thermal import ThermalPreparation, heat_announcement
from edge_runtime.control.two_phase import build_two_phase_block
from edge_runtime.core.commands import CommandRefused
from edge_runtime.core.events import EventLog
from edge_runtime.core.scan import ControlBlock
from edge_runtime.messages.models import WorkloadAnnouncement


@dataclass(frozen=True, slots=True)
class RoleContext:
    """What the blocks of a role need from the node that runs them."""

    events: EventLog
    wall: Callable[[], float]  # UTC seconds, for event and announcement times
    wall_offset: float  # wall - monotonic, for blocks that stamp events from `now`
    held: Mapping[str, float]  # operator-held outputs (ManualOutputs.manual): never overwritten


RoleBlocks = Callable[[NodeConfig, RoleContext], list[ControlBlock]]


def _none(config: NodeConfig, ctx: RoleContext) -> list[ControlBlock]:
    return []


def _heat_recovery(config: NodeConfig, ctx: RoleContext) -> list[ControlBlock]:
    if config.heat_recovery is None:
        return []
    return [build_heat_recovery_block(config.heat_recovery, events=ctx.events,
                                      wall_offset=ctx.wall_offset)]


def _cdu(config: NodeConfig, ctx: RoleContext) -> list[ControlBlock]:
    # Preparation, pumps, supply temperature, then the two-phase loop and heat recovery.
    blocks: list[ControlBlock] = []
    if config.control is not None:
        blocks += build_cdu_blocks(config.control, ctx.events, wall=ctx.wall, held=ctx.held)
    if config.two_phase is not None:
        blocks.append(build_two_phase_block(config.two_phase, events=ctx.events,
                                            wall_offset=ctx.wall_offset))
    return blocks + _heat_recovery(config, ctx)


def _rack(config: NodeConfig, ctx: RoleContext) -> list[ControlBlock]:
    if config.smoothing is None:
        return []
    return [build_smoothing_block(config.smoothing, events=ctx.events,
                                  wall_offset=ctx.wall_offset, held=ctx.held)]


# Control blocks per role, in scan order (after commands, heartbeat and estimation).
ROLE_BLOCKS: dict[str, RoleBlocks] = {"cdu": _cdu, "rack": _rack, "site": _heat_recovery}
# Role-specific interlocks, run before the safety layer (which always has the last word).
ROLE_INTERLOCKS: dict[str, RoleBlocks] = {"cdu": _none, "rack": _none, "site": _none}


class ModeSettable(Protocol):
    """A control loop whose Redfish ControlMode an operator may change."""

    name: str

    def set_mode(self, mode: str, value: float | None = None) -> None:
        """Change mode; ValueError with the reason when refused."""
        ...


class RoleControls:
    """The command path's handle on a node's control blocks."""

    def __init__(self, blocks: Sequence[Any]) -> None:
        self.loops: dict[str, ModeSettable] = {
            b.name: b for b in blocks if callable(getattr(b, "set_mode", None))}
        self.preparations = [b for b in blocks if isinstance(b, ThermalPreparation)]
        self.smoothing = [b for b in blocks if isinstance(b, SmoothingBlock)]

    def set_mode(self, loop: str, mode: str, value: float | None) -> None:
        """Route a mode change to its loop; CommandRefused names what is wrong."""
        block = self.loops.get(loop)
        if block is None:
            have = ", ".join(sorted(self.loops)) or "none"
            raise CommandRefused(f"no control loop {loop!r} on this node (loops: {have})")
        try:
            block.set_mode(mode, value)
        except ValueError as exc:
            raise CommandRefused(str(exc)) from None

    def announce(self, msg: WorkloadAnnouncement, now_wall: float) -> list[str]:
        """Hand an accepted A.1 announcement to every block that prepares for it."""
        if not self.preparations and not self.smoothing:
            raise CommandRefused("no block on this node prepares for announced loads")
        taken: list[str] = []
        try:
            for prep in self.preparations:
                prep.announce(heat_announcement(msg))
                taken.append(prep.name)
            for block in self.smoothing:
                block.announce_workload(msg, now_wall=now_wall)
                taken.append(block.name)
        except ValueError as exc:
            raise CommandRefused(f"{msg.workload_id}: {exc}") from None
        return taken
