"""What `pswd-edge run` says about itself: a status line a minute and a closing summary.

    runlog = RunLog("cdu-01", period_s=60)
    runlog.add("node", node.get_status)             # or "site": coordinator.get_status
    await runlog.around(node_and_link)              # logs while it runs, sums up at the end

A node's line: scans and overruns (total, and since the last line), execution p99, start
jitter p99, active alarms (asserted interlock rules and inputs outside their limits) and the
MQTT link; a site coordinator's line: its admission counters and the link. The summary says
the same over the whole run, whether it ended by --duration, Ctrl-C or an error. It reads only
the status dicts every runtime object exposes (STYLE principle 9), so it never touches the
scan; one line costs a sort of the last 10,000 execution times (about 1 ms, once a minute).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

log = logging.getLogger("edge_runtime.run")
T = TypeVar("T")
Status = Callable[[], Mapping[str, Any]]


def _ms(value: Any) -> str:
    return f"{value:.2f} ms" if isinstance(value, int | float) and math.isfinite(value) else "-"


def alarms_active(status: Mapping[str, Any]) -> list[str]:
    """Asserted interlock rules and inputs whose limit level is not normal."""
    safety = status.get("safety") or {}
    active = list(safety.get("active") or [])
    levels = safety.get("limits") or {}
    active += [f"{p}:{lvl}" for p, lvl in levels.items() if lvl != "normal"]
    return active


def link_state(status: Mapping[str, Any]) -> str:
    """`up`, `down (last error)` or `none` (no [mqtt])."""
    link = status.get("mqtt")
    if not isinstance(link, Mapping):
        return "none"
    client = link.get("mqtt", link)  # a NodeLink nests its client's status
    if link.get("online", client.get("connected")):
        return "up"
    err = client.get("last_error")
    return f"down ({err})" if err else "down"


def _site_part(st: Mapping[str, Any]) -> str:
    """A site coordinator's counters (those not zero) and its link."""
    counts = st.get("counts") or {}
    shown = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())
                      if v and k != "announcements")
    return (f"{counts.get('announcements', 0)} announcements"
            f"{f' ({shown})' if shown else ''}, link {link_state(st)}")


class RunLog:
    """Status lines while something runs, a summary when it ends (see the module docstring)."""

    def __init__(self, name: str, *, period_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic,
                 emit: Callable[[str], None] | None = None) -> None:
        self.name = name
        self.period_s = period_s
        self.clock = clock
        self.emit = emit or log.info
        self.sources: dict[str, Status] = {}
        self._started = clock()
        self._last: dict[str, tuple[int, int]] = {}  # source -> (cycles, overruns) last line

    def add(self, kind: str, status: Status) -> None:
        """Report on `status()`: kind "node" (a Node) or "site" (a SiteCoordinator)."""
        self.sources[kind] = status

    def line(self) -> str:
        """The status line now."""
        return f"status {self.name}: " + "; ".join(self._describe(k, s(), since_last=True)
                                                   for k, s in self.sources.items())

    def summary(self) -> str:
        """The closing summary: the same figures over the whole run."""
        elapsed = self.clock() - self._started
        parts = "; ".join(self._describe(k, s(), since_last=False)
                          for k, s in self.sources.items())
        return f"summary {self.name} after {elapsed:.1f} s: {parts}"

    def _describe(self, kind: str, st: Mapping[str, Any], *, since_last: bool) -> str:
        if kind == "site":
            return _site_part(st)
        scan = st.get("scan") or {}
        cycles, overruns = int(scan.get("cycles", 0)), int(scan.get("overruns", 0))
        text = f"{cycles} scans, {overruns} overruns"
        if since_last:
            c0, o0 = self._last.get(kind, (0, 0))
            text = f"{cycles} scans (+{cycles - c0}), {overruns} overruns (+{overruns - o0})"
            self._last[kind] = (cycles, overruns)
        exec_ms, jitter_ms = scan.get("exec_ms") or {}, scan.get("jitter_ms") or {}
        alarms = alarms_active(st)
        shown = f"{len(alarms)}" + (f" ({', '.join(alarms[:5])}"
                                    f"{', ...' if len(alarms) > 5 else ''})" if alarms else "")
        coordinator = st.get("coordinator")
        text += (f", exec p99 {_ms(exec_ms.get('p99'))} max {_ms(exec_ms.get('max'))}, "
                 f"jitter p99 {_ms(jitter_ms.get('p99'))}, alarms active {shown}")
        if "mqtt" in st or not isinstance(coordinator, Mapping):  # else: the site's link
            text += f", link {link_state(st)}"
        invalid = (st.get("mqtt") or {}).get("invalid") or {}
        if invalid:
            text += f", invalid messages {sum(invalid.values())}"
        if isinstance(coordinator, Mapping):  # role site: the coordinator beside the node
            text += f"; site {_site_part(coordinator)}"
        if not since_last:
            events = (st.get("events") or {}).get("total")
            if events is not None:
                text += f", {events} events"
        return text

    async def _lines(self) -> None:
        while True:
            await asyncio.sleep(self.period_s)
            self._safe(self.line)

    def _safe(self, make: Callable[[], str]) -> None:
        try:
            self.emit(make())
        except Exception:  # a status reader's bug must not stop the node
            log.exception("%s: status line failed", self.name)

    async def around(self, work: Awaitable[T]) -> T:
        """Await `work`, logging a status line every period and the summary at the end."""
        self._started = self.clock()
        lines = asyncio.create_task(self._lines(), name=f"status-{self.name}")
        try:
            return await work
        finally:
            lines.cancel()
            await asyncio.gather(lines, return_exceptions=True)
            self._safe(self.summary)
