"""Start-up bypasses, the way process safety does them (ISA-84 / IEC 61511 style).

A low-flow limit cannot hold while the pumps spin up: the flow is low because the loop is
starting. A plain delay on the limit would also delay it when a running loop loses its flow.
A bypass instead is armed by the event that makes the limit meaningless for a while (a pump's
start command: one of `armed_by` outputs going from 0, or never sent, to non-zero while none
of them was on), lasts at most `max_s` (never more than the node's `max_bypass_s`), is
visible in status and events as "bypassed", and ends early when every arming output is off
again. While it lasts, the covered interlocks cannot be raised and the covered limits' events
are held back; their conditions are still evaluated, so the moment the bypass ends an
interlock whose condition persisted acts at once and a held-back limit is raised.

    [safety]
    max_bypass_s = 60.0                  # the longest any bypass of this node may last
    [safety.bypasses.pump_start]
    interlocks = ["flow_low_low"]        # rule names
    limits = ["flow.flow"]               # limit-monitored points
    armed_by = ["pump1.control_word", "pump2.control_word"]
    max_s = 10.0
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class BypassConfig:
    """One configured bypass."""

    name: str
    interlocks: tuple[str, ...]
    limits: tuple[str, ...]
    armed_by: tuple[str, ...]
    max_s: float


class Bypass:
    """Run-time state of one bypass. Sans-IO, two calls per scan: begin() before the rules
    are evaluated (a start command in this scan arms it tentatively, so this scan's limits are
    already covered), confirm() after the outputs are final (the start really goes out: the
    bypass is armed and announced; an interlock blocked it: it never was)."""

    def __init__(self, config: BypassConfig) -> None:
        self.config = config
        self.active = False
        self.tentative = False
        self.started_at = 0.0
        self.armed_by = ""
        self.count = 0
        self.end_reason = ""

    def _on(self, outputs: Mapping[str, float]) -> list[str]:
        return [p for p in self.config.armed_by if outputs.get(p, 0.0) != 0.0]

    def begin(self, commanded: Mapping[str, float], last_sent: Mapping[str, float],
              now: float, blocked: Collection[str] = ()) -> str:
        """Before the rules: "ended" when the time limit is reached (so the covered interlock
        acts in this very scan); else arm tentatively on a start command (commanded on now,
        none of ours on last scan) and return "". A start of an output an engaged rule holds
        off (`blocked`) cannot go out: it arms nothing, so a pump that control keeps asking
        for under an isolation never keeps its interlock bypassed."""
        if self.active and now - self.started_at >= self.config.max_s - 1e-9:
            self.active, self.end_reason = False, f"time limit {self.config.max_s:g} s reached"
            return "ended"
        on_now = [p for p in self._on(commanded) if p not in blocked]
        if not self.active and on_now and not self._on(last_sent):
            self.active, self.tentative, self.started_at = True, True, now
            self.armed_by = on_now[0]
        return ""

    def confirm(self, sent: Mapping[str, float], now: float) -> str:
        """"armed" (the start went out), "ended" (every arming output off again), or ""
        (nothing new, or a tentative start an interlock blocked)."""
        on = self._on(sent)
        if self.tentative:
            self.tentative = False
            if on:
                self.count += 1
                return "armed"
            self.active = False
            return ""
        if not self.active:
            return ""
        if not on:
            self.active, self.end_reason = False, "every arming output is off"
            return "ended"
        return ""

    def remaining_s(self, now: float) -> float:
        """Seconds left (0 when not active)."""
        return max(0.0, self.started_at + self.config.max_s - now) if self.active else 0.0

    def get_status(self, now: float) -> dict[str, Any]:
        """What the bypass covers and whether it is on."""
        c = self.config
        return {"active": self.active, "interlocks": list(c.interlocks), "limits": list(c.limits),
                "armed_by": self.armed_by if self.active else "", "max_s": c.max_s,
                "remaining_s": round(self.remaining_s(now), 3), "count": self.count,
                "end_reason": self.end_reason}
