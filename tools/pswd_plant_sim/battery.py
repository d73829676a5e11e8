"""Rack battery and its inverter: SoC, power limits, losses, ramp limit, heartbeat reversion.

Sign convention (SunSpec 802/704 as used by our io_map): + = discharge (into the grid side),
- = charge. `ac_kw` is what the grid sees; `dc_kw` is what leaves the cells. Losses are split
evenly between charge and discharge so a full cycle returns `efficiency` of the energy.
Sans-IO: time only enters through step(dt).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

log = logging.getLogger(__name__)

# Operating states of the inverter (mapped to SunSpec enumerations by the device layer).
FOLLOWING = "following"  # enabled and heartbeat fresh: tracks w_set_kw
IDLE = "idle"  # not enabled (w_set_ena = 0): holds 0 kW
REVERTED = "reverted"  # controller heartbeat stale: safe, 0 kW until the heartbeat moves
FAULT = "fault"  # injected inverter fault: 0 kW


@dataclass(frozen=True, slots=True)
class BatteryConfig:
    """Battery and inverter ratings."""

    capacity_kwh: float = 100.0
    max_charge_kw: float = 100.0
    max_discharge_kw: float = 150.0
    efficiency: float = 0.92  # round trip
    ramp_kw_per_s: float = 1000.0
    initial_soc_pct: float = 60.0
    soc_min_pct: float = 2.0  # inverter's own protection limits
    soc_max_pct: float = 99.0
    soh_pct: float = 97.0
    nominal_v: float = 768.0
    hb_timeout_s: float = 2.0


class Battery:
    """One battery inverter; commands are latched by `command`, physics run in `step`."""

    def __init__(self, config: BatteryConfig | None = None, name: str = "battery") -> None:
        self.config = c = config or BatteryConfig()
        self.name = name
        self.soc_pct = c.initial_soc_pct
        self.ac_kw = 0.0
        self.enabled = False
        self.setpoint_kw = 0.0
        self.failed = False
        self.hb = 0  # the inverter's own heartbeat, +1 per second
        self.reverted = False
        self._t = 0.0
        self._ctrl_hb: float | None = None
        self._hb_changed_at = 0.0

    # -- commands ---------------------------------------------------------------------
    def command(self, *, enable: bool, setpoint_kw: float, ctrl_hb: float) -> None:
        """Latch the controller's writes; a changed heartbeat proves the controller lives."""
        self.enabled = enable
        self.setpoint_kw = setpoint_kw
        if self._ctrl_hb is None or ctrl_hb != self._ctrl_hb:
            self._ctrl_hb = ctrl_hb
            self._hb_changed_at = self._t
            if self.reverted:
                log.info("%s: controller heartbeat back, leaving safe state", self.name)
                self.reverted = False

    # -- derived ----------------------------------------------------------------------
    @property
    def state(self) -> str:
        """One of FOLLOWING, IDLE, REVERTED, FAULT."""
        if self.failed:
            return FAULT
        if self.reverted:
            return REVERTED
        return FOLLOWING if self.enabled else IDLE

    @property
    def _eta(self) -> float:
        return math.sqrt(self.config.efficiency)

    @property
    def discharge_limit_kw(self) -> float:
        """Discharge power available now (0 at the SoC floor)."""
        c = self.config
        return 0.0 if self.soc_pct <= c.soc_min_pct or self.failed else c.max_discharge_kw

    @property
    def charge_limit_kw(self) -> float:
        """Charge power available now (0 at the SoC ceiling)."""
        c = self.config
        return 0.0 if self.soc_pct >= c.soc_max_pct or self.failed else c.max_charge_kw

    @property
    def dc_kw(self) -> float:
        """Power leaving the cells (+ discharge)."""
        return self.ac_kw / self._eta if self.ac_kw >= 0.0 else self.ac_kw * self._eta

    @property
    def voltage_v(self) -> float:
        """Pack voltage, rising with SoC and sagging with discharge current."""
        c = self.config
        ocv = c.nominal_v * (0.92 + 0.16 * self.soc_pct / 100.0)
        return ocv - 0.02 * c.nominal_v * self.dc_kw / max(c.max_discharge_kw, 1.0)

    @property
    def current_a(self) -> float:
        """Pack current (+ discharge)."""
        return self.dc_kw * 1000.0 / self.voltage_v

    @property
    def charge_status(self) -> str:
        """off, empty, discharging, charging, full or holding."""
        c = self.config
        if self.failed:
            return "off"
        if self.ac_kw > 0.05:
            return "discharging"
        if self.ac_kw < -0.05:
            return "charging"
        if self.soc_pct <= c.soc_min_pct:
            return "empty"
        if self.soc_pct >= c.soc_max_pct:
            return "full"
        return "holding"

    # -- physics ------------------------------------------------------------------------
    def step(self, dt: float) -> None:
        """Advance time: heartbeats, ramp toward the allowed setpoint, integrate SoC."""
        c = self.config
        self._t += dt
        self.hb = int(self._t) & 0xFFFF
        if not self.reverted and self._t - self._hb_changed_at > c.hb_timeout_s:
            log.warning("%s: controller heartbeat stale for %.1f s, reverting to 0 kW",
                        self.name, self._t - self._hb_changed_at)
            self.reverted = True
        target = self.setpoint_kw if self.state == FOLLOWING else 0.0
        target = min(max(target, -self.charge_limit_kw), self.discharge_limit_kw)
        ramp = c.ramp_kw_per_s * dt
        ac = self.ac_kw + min(max(target - self.ac_kw, -ramp), ramp)

        # never cross the SoC limits inside a step: trim the power to land on the limit
        energy = c.capacity_kwh
        dc = ac / self._eta if ac >= 0.0 else ac * self._eta
        soc = self.soc_pct - dc * dt / 3600.0 / energy * 100.0
        if soc < c.soc_min_pct and dc > 0.0:
            room_kwh = max(self.soc_pct - c.soc_min_pct, 0.0) / 100.0 * energy
            ac = room_kwh * 3600.0 / dt * self._eta
            soc = c.soc_min_pct
        elif soc > c.soc_max_pct and dc < 0.0:
            room_kwh = max(c.soc_max_pct - self.soc_pct, 0.0) / 100.0 * energy
            ac = -room_kwh * 3600.0 / dt / self._eta
            soc = c.soc_max_pct
        self.ac_kw = ac
        self.soc_pct = soc
