"""The few asyncua names the server uses, typed for mypy --strict.

asyncua re-exports its names implicitly and types NodeId and StatusCode arguments as NewTypes
(Int32, UInt32, ...); these helpers take plain ints and strings so the rest of the package
stays free of casts.
"""

from __future__ import annotations

from typing import Any

from asyncua.common.node import Node
from asyncua.server.server import Server
from asyncua.ua import uatypes
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

__all__ = ["AttributeIds", "Node", "ObjectIds", "Server", "StatusCodes", "nodeid", "status"]


def nodeid(identifier: str | int, ns: int = 0) -> uatypes.NodeId:
    """A NodeId from a string or numeric identifier."""
    ident: Any = identifier
    index: Any = ns
    return uatypes.NodeId(ident, index)


def status(code: int) -> uatypes.StatusCode:
    """A StatusCode from its numeric value (StatusCodes.X)."""
    value: Any = code
    return uatypes.StatusCode(value)
