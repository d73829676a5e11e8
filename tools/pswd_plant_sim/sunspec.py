"""Static SunSpec content of the simulated battery inverter: marker, model headers, scale
factors, fixed settings and the model 1 strings, plus the enumerations the device reports.

The io_map declares *where* these live; the values are the inverter's and live here.
"""

from __future__ import annotations

from edge_runtime.config.schema import Table
from pswd_plant_sim.battery import FAULT, FOLLOWING, IDLE, REVERTED
from pswd_plant_sim.registers import RegisterBank

# point name -> constant value (only points the io_map declares are written)
CONSTANTS: dict[str, float] = {
    "sunspec_marker_hi": 0x5375,  # "Su"
    "sunspec_marker_lo": 0x6E53,  # "nS"
    "m1_id": 1,
    "m1_len": 66,
    "m701_id": 701,
    "m701_len": 153,
    "m704_id": 704,
    "m704_len": 65,
    "m802_id": 802,
    "m802_len": 62,
    "end_id": 0xFFFF,
    "end_len": 0,
    # published scale factors (power-of-ten exponents the io_map scales assume)
    "ac_hz_sf": -2,
    "ac_w_sf": 2,
    "w_set_sf": 0,
    "w_cha_dis_cha_max_sf": 2,
    "soc_sf": -1,
    "soh_sf": -1,
    "battery_v_sf": -1,
    "battery_a_sf": -1,
    "battery_w_sf": 2,
    # fixed settings a commissioning check looks at
    "w_set_mod": 1,  # WSet in watts
    "w_set_ena_rvrt": 1,  # the inverter's reversion is armed
    "loc_rem_ctl": 0,  # remote
    "conn_st": 1,  # connected to the grid
    "ac_alarm": 0,
}

# model 1 (common) strings: offset in the model -> (registers, text)
COMMON_STRINGS = {2: (16, "PSWD"), 18: (16, "SimInverter 500"), 34: (8, "sim"),
                  42: (8, "1.0.0"), 50: (16, "SIM-0001")}

# 802 State
STATE_CONNECTED = 3
STATE_STANDBY = 4
STATE_SOC_PROTECTION = 5
STATE_FAULT = 99
# 802 ChaSt
CHA_ST = {"off": 1, "empty": 2, "discharging": 3, "charging": 4, "full": 5, "holding": 6}
# 701 InvSt
INV_ST_RUNNING = 3
INV_ST_FAULT = 6
INV_ST_STANDBY = 7
# 802 Evt1 bits
EVT1_COMMS_ERROR = 1 << 0

_STATE_BY_MODE = {FOLLOWING: STATE_CONNECTED, IDLE: STATE_CONNECTED, REVERTED: STATE_STANDBY,
                  FAULT: STATE_FAULT}


def state_code(mode: str, soc_limited: bool) -> int:
    """802 State for the inverter's operating mode."""
    if mode == FOLLOWING and soc_limited:
        return STATE_SOC_PROTECTION
    return _STATE_BY_MODE[mode]


def string_words(text: str, registers: int) -> list[int]:
    """A SunSpec string: ASCII, two characters per register, NUL padded."""
    raw = text.encode("ascii")[: registers * 2].ljust(registers * 2, b"\0")
    return [(raw[i] << 8) | raw[i + 1] for i in range(0, len(raw), 2)]


def write_static(bank: RegisterBank) -> None:
    """Write the constants (and the model 1 strings when model 1 is declared) into a bank."""
    names = {p.name for p in bank.io_map.points}
    for name, value in CONSTANTS.items():
        if name in names:
            bank.set(name, value)
    if "m1_id" in names:
        start = bank.point("m1_id").address
        for offset, (count, text) in COMMON_STRINGS.items():
            bank.set_words(Table.HOLDING, start + offset, string_words(text, count))
