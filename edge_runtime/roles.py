"""What each role runs: the control blocks and interlocks a node gets for its role.

An explicit registry (no lookup by module name): adding a role means adding a line here.
"""

from __future__ import annotations

from collections.abc import Callable

from edge_runtime.config.schema import NodeConfig
from edge_runtime.core.scan import ControlBlock

RoleBlocks = Callable[[NodeConfig], list[ControlBlock]]


def _none(config: NodeConfig) -> list[ControlBlock]:
    return []


# Control blocks per role, in scan order. The local safety layer and the thermal, pump and
# battery blocks plug in here; until a block owns an output, operators set it by command.
ROLE_BLOCKS: dict[str, RoleBlocks] = {"cdu": _none, "rack": _none, "site": _none}
ROLE_INTERLOCKS: dict[str, RoleBlocks] = {"cdu": _none, "rack": _none, "site": _none}
