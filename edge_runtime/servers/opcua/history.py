"""History of the key points in asyncua's SQLite storage, so a BMS trends the last 24 h.

Key points by default: every point with configured limits (what an operator watches) and every
output (what the node did). Rows older than `history_hours` are deleted as new ones arrive.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

from asyncua import ua
from asyncua.server.history_sql import HistorySQLite

from edge_runtime.core.image import ProcessImage
from edge_runtime.servers.opcua.uatypes import AttributeIds, Server

HISTORY_FILE = "history.sqlite3"


class PointHistory(HistorySQLite):
    """HistorySQLite with table names safe for any NodeId: ours are readable strings
    ("cdu-01.flow.flow"), whose repr-based names asyncua's SQL guard refuses."""

    def _get_table_name(self, node_id: ua.NodeId) -> str:
        digest = hashlib.sha1(repr(node_id.Identifier).encode(), usedforsecurity=False)
        return f"h{node_id.NamespaceIndex}_{digest.hexdigest()[:20]}"


def key_points(image: ProcessImage, limited: Iterable[str]) -> list[str]:
    """Points with limits, then every output (each once, image order)."""
    chosen = [p for p in image.inputs_info if p in set(limited)]
    chosen += [p for p in image.outputs_info if p not in chosen]
    return chosen


def storage(state_dir: Path) -> PointHistory:
    """The node's history database (created at first start)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    return PointHistory(str(state_dir / HISTORY_FILE))


async def historize(server: Server, points: Iterable[str], nodeids: Mapping[str, ua.NodeId],
                    hours: float) -> list[str]:
    """Start keeping history of `points`; returns those historized."""
    done = []
    for point in points:
        nodeid = nodeids.get(point)
        if nodeid is None:
            continue
        var = server.get_node(nodeid)
        await var.write_attribute(AttributeIds.Historizing,
                                  ua.DataValue(ua.Variant(True, ua.VariantType.Boolean)))
        await server.historize_node_data_change(var, period=dt.timedelta(hours=hours))
        done.append(point)
    return done
