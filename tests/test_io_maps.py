"""The shipped io_maps: they load clean, keep the point-name contract, and every output is safe.

Also negative tests of the io_map loader on small files, each checking that the error names
`file: [points.X] key:`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge_runtime.assembly import load_node_config
from edge_runtime.config.codec import DataType, encode
from edge_runtime.config.iomap import default_io_maps_dir, load_io_map
from edge_runtime.config.reader import ErrorLog
from edge_runtime.config.schema import Access, IoMap, PointSpec, Table

MAPS_DIR = default_io_maps_dir()
EXAMPLES_DIR = MAPS_DIR.parent / "examples"
R, W = Access.R, Access.W

# The contract: point names (and their access) that the plant simulator and the control code
# use. Maps may declare more points; they may not drop, rename or re-purpose these.
CONTRACT: dict[str, dict[str, Access]] = {
    "cdu_pump_vfd": {"control_word": W, "speed_ref": W, "status_word": R, "speed_actual": R,
                     "motor_power": R, "run_hours": R, "fault_code": R},
    "control_valve": {"position_cmd": W, "position_fb": R, "status": R},
    "temperature_transmitter": {"temperature": R, "status": R},
    "flow_meter": {"flow": R, "totalizer": R, "status": R},
    "pressure_transmitter": {"pressure": R, "status": R},
    "leak_detector": {"leak_state": R, "leak_position_m": R, "status": R},
    "rack_power_meter": {"power_kw": R, "energy_kwh": R, "power_factor": R,
                         "thd_voltage_pct": R, "thd_current_pct": R, "voltage_v": R,
                         "current_a": R, "frequency_hz": R, "status": R},
    "battery_inverter": {"soc_pct": R, "soh_pct": R, "cha_st": R, "w_cha_max_kw": R,
                         "w_dis_cha_max_kw": R, "battery_w_kw": R, "battery_v": R,
                         "battery_a": R, "state": R, "hb": R, "ctrl_hb": W, "w_set_ena": W,
                         "w_set_kw": W, "ac_w_kw": R},
}


def load(path: Path) -> IoMap:
    errors = ErrorLog()
    io_map = load_io_map(path, errors)
    assert io_map is not None and errors.lines == [], errors.lines
    return io_map


def shipped(model: str) -> IoMap:
    return load(MAPS_DIR / f"{model}.toml")


MAP_FILES = sorted(MAPS_DIR.glob("*.toml"))


def test_io_maps_are_exactly_the_contract_models() -> None:
    # The Modbus maps the simulator and control code share; OPC UA and MQTT device maps are
    # checked by their drivers' tests.
    modbus = [p.stem for p in MAP_FILES if load(p).protocol == "modbus"]
    assert sorted(modbus) == sorted(CONTRACT)
    assert (MAPS_DIR / "README.md").is_file()


@pytest.mark.parametrize("path", MAP_FILES, ids=lambda p: p.stem)
def test_map_loads_with_zero_errors(path: Path) -> None:
    io_map = load(path)
    assert io_map.model == path.stem
    assert io_map.description


@pytest.mark.parametrize("model", sorted(CONTRACT))
def test_contract_points_exist_with_the_right_access(model: str) -> None:
    io_map = shipped(model)
    for name, access in CONTRACT[model].items():
        assert io_map.point(name).access is access, (model, name)


@pytest.mark.parametrize("path", MAP_FILES, ids=lambda p: p.stem)
def test_every_output_is_failsafe_and_encodable(path: Path) -> None:
    io_map = load(path)
    for p in io_map.outputs:
        assert p.table is Table.HOLDING, p.name
        # a comms-loss register (mirrors) is a device parameter: it has no max hold
        assert p.failsafe is not None and (p.max_hold_s is not None or p.mirrors), p.name
        # the default refresh_ms (1000) must fit twice into max_hold_s
        assert p.mirrors or (p.max_hold_s or 0.0) >= 2.0, p.name
        # min..max and the failsafe must be representable: encode refuses what the type can't hold
        encode(p.failsafe, p.encoding)
        for bound in (p.minimum, p.maximum):
            assert bound is not None, f"output {p.name} needs an engineering range"
            encode(bound, p.encoding)


@pytest.mark.parametrize("path", MAP_FILES, ids=lambda p: p.stem)
def test_every_failsafe_has_a_comment_saying_why(path: Path) -> None:
    lines = path.read_text().splitlines()
    failsafe_lines = [i for i, line in enumerate(lines) if re.match(r"\s*failsafe\s*=", line)]
    assert len(failsafe_lines) == len(load(path).outputs)
    for i in failsafe_lines:
        assert lines[i - 1].lstrip().startswith("#"), f"{path.name}:{i + 1} failsafe lacks a why"


@pytest.mark.parametrize("path", MAP_FILES, ids=lambda p: p.stem)
def test_no_register_is_claimed_twice(path: Path) -> None:
    owner: dict[tuple[Table, int], str] = {}
    io_map = load(path)
    if io_map.protocol != "modbus":  # no registers: its refs are checked unique at load
        return
    for p in io_map.points:
        for reg in range(p.address, p.end):
            assert (p.table, reg) not in owner, (p.name, owner.get((p.table, reg)))
            owner[p.table, reg] = p.name


def _blocks(points: list[PointSpec]) -> int:
    """Number of gap-free register runs the points form."""
    runs, end = 0, -1
    for p in sorted(points, key=lambda p: p.address):
        if p.address != end:
            runs += 1
        end = p.end
    return runs


@pytest.mark.parametrize("model", sorted(set(CONTRACT) - {"battery_inverter"}))
def test_reads_and_outputs_are_each_one_block(model: str) -> None:
    # a driver polls each plain device with one read and refreshes its outputs with one write
    io_map = shipped(model)
    for table in Table:
        reads = [p for p in io_map.points if p.table is table and p.access is Access.R]
        outs = [p for p in io_map.outputs if p.table is table]
        assert _blocks(reads) <= 1, (model, table)
        assert _blocks(outs) <= 1, (model, table)


def test_maps_exercise_every_type_and_swap() -> None:
    encs = [p.encoding for path in MAP_FILES for p in load(path).points]
    assert {e.dtype for e in encs} == set(DataType)
    assert any(e.word_swap and not e.byte_swap for e in encs)  # CDAB
    assert any(e.word_swap and e.byte_swap for e in encs)  # DCBA
    assert any(e.dtype.count == 2 and not e.word_swap and not e.byte_swap for e in encs)


def test_device_specific_encodings() -> None:
    vfd = shipped("cdu_pump_vfd")
    ref = vfd.point("speed_ref")
    assert (ref.encoding.dtype, ref.encoding.scale, ref.minimum, ref.maximum) == (
        DataType.UINT16, 0.01, 0.0, 100.0)
    assert ref.failsafe == 100.0
    assert vfd.point("control_word").failsafe == 1  # bit 0 run: pumps keep running
    assert vfd.point("run_hours").encoding.dtype is DataType.UINT32
    assert shipped("control_valve").point("position_cmd").failsafe == 100.0

    temp = shipped("temperature_transmitter").point("temperature").encoding
    assert (temp.dtype, temp.scale) == (DataType.INT16, 0.01)

    flow = shipped("flow_meter")
    assert flow.point("flow").encoding.dtype is DataType.FLOAT32
    assert flow.point("flow").encoding.word_swap and not flow.point("flow").encoding.byte_swap
    tot = flow.point("totalizer").encoding
    assert (tot.dtype, tot.scale) == (DataType.UINT32, 0.001)

    pressure = shipped("pressure_transmitter").point("pressure")
    assert (pressure.encoding.dtype, pressure.encoding.scale) == (DataType.UINT16, 0.001)
    assert (pressure.minimum, pressure.maximum) == (0.0, 10.0)

    meter = shipped("rack_power_meter")
    assert all(p.table is Table.INPUT for p in meter.points)
    assert meter.point("power_kw").encoding.dtype is DataType.FLOAT32
    pf = meter.point("power_factor").encoding
    assert (pf.dtype, pf.scale) == (DataType.INT16, 0.001)
    for name in ("thd_voltage_pct", "thd_current_pct", "frequency_hz"):
        e = meter.point(name).encoding
        assert (e.dtype, e.scale) == (DataType.UINT16, 0.01), name


# -- battery_inverter: SunSpec layout ----------------------------------------------------------

# (point prefix, model id, L) in chain order after the "SunS" marker; L from sunspec/models.
SUNSPEC_CHAIN = [("m1", 1, 66), ("m701", 701, 153), ("m704", 704, 65), ("m802", 802, 62)]
SUNSPEC_BASE = 40000

# point -> (model id, offset in the model with ID at 0, SunSpec point name), from
# sunspec/models json/model_<id>.json.
SUNSPEC_OFFSETS: dict[str, tuple[int, int, str]] = {
    "inv_st": (701, 4, "InvSt"),
    "conn_st": (701, 5, "ConnSt"),
    "ac_alarm": (701, 6, "Alrm"),
    "ac_w_kw": (701, 10, "W"),
    "ac_hz": (701, 17, "Hz"),
    "ac_hz_sf": (701, 115, "Hz_SF"),
    "ac_w_sf": (701, 116, "W_SF"),
    "w_set_ena": (704, 22, "WSetEna"),
    "w_set_mod": (704, 23, "WSetMod"),
    "w_set_kw": (704, 24, "WSet"),
    "w_set_ena_rvrt": (704, 30, "WSetEnaRvrt"),
    "w_set_rvrt_tms": (704, 31, "WSetRvrtTms"),
    "w_set_sf": (704, 55, "WSet_SF"),
    "w_cha_max_kw": (802, 4, "WChaRteMax"),
    "w_dis_cha_max_kw": (802, 5, "WDisChaRteMax"),
    "soc_pct": (802, 11, "SoC"),
    "soh_pct": (802, 13, "SoH"),
    "cha_st": (802, 16, "ChaSt"),
    "loc_rem_ctl": (802, 17, "LocRemCtl"),
    "hb": (802, 18, "Hb"),
    "ctrl_hb": (802, 19, "CtrlHb"),
    "state": (802, 22, "State"),
    "evt1": (802, 26, "Evt1"),
    "battery_v": (802, 34, "V"),
    "battery_a": (802, 44, "A"),
    "battery_w_kw": (802, 47, "W"),
    "w_cha_dis_cha_max_sf": (802, 54, "WChaDisChaMax_SF"),
    "soc_sf": (802, 56, "SoC_SF"),
    "soh_sf": (802, 58, "SoH_SF"),
    "battery_v_sf": (802, 59, "V_SF"),
    "battery_a_sf": (802, 61, "A_SF"),
    "battery_w_sf": (802, 63, "W_SF"),
}

# scaled point -> (its SF point, exponent the inverter publishes, our unit per SunSpec unit)
SUNSPEC_SCALES: dict[str, tuple[str, int, float]] = {
    "ac_w_kw": ("ac_w_sf", 2, 1e-3),
    "ac_hz": ("ac_hz_sf", -2, 1.0),
    "w_set_kw": ("w_set_sf", 0, 1e-3),
    "w_cha_max_kw": ("w_cha_dis_cha_max_sf", 2, 1e-3),
    "w_dis_cha_max_kw": ("w_cha_dis_cha_max_sf", 2, 1e-3),
    "soc_pct": ("soc_sf", -1, 1.0),
    "soh_pct": ("soh_sf", -1, 1.0),
    "battery_v": ("battery_v_sf", -1, 1.0),
    "battery_a": ("battery_a_sf", -1, 1.0),
    "battery_w_kw": ("battery_w_sf", 2, 1e-3),
}


def model_starts() -> dict[int, int]:
    """Model id -> address of its ID register, walking the chain by the declared lengths."""
    starts, addr = {}, SUNSPEC_BASE + 2
    for _, model_id, length in SUNSPEC_CHAIN:
        starts[model_id] = addr
        addr += 2 + length
    return starts


def test_battery_map_starts_with_the_suns_marker() -> None:
    bat = shipped("battery_inverter")
    assert bat.point("sunspec_marker_hi").address == 40000
    assert bat.point("sunspec_marker_lo").address == 40001
    # the descriptions carry the constants the device (and the simulator) must publish
    assert "0x5375" in bat.point("sunspec_marker_hi").description
    assert "0x6E53" in bat.point("sunspec_marker_lo").description
    assert all(p.table is Table.HOLDING for p in bat.points)


def test_battery_map_model_headers_follow_the_chain() -> None:
    bat = shipped("battery_inverter")
    starts = model_starts()
    assert starts[802] == 40292 and starts[704] == 40225  # the header addresses, spelled out
    for prefix, model_id, length in SUNSPEC_CHAIN:
        id_point, len_point = bat.point(f"{prefix}_id"), bat.point(f"{prefix}_len")
        assert id_point.address == starts[model_id], prefix
        assert len_point.address == starts[model_id] + 1, prefix
        assert f"constant {model_id}" in id_point.description
        assert f"constant {length}" in len_point.description
        assert id_point.access is Access.R and len_point.access is Access.R
    end = SUNSPEC_BASE + 2 + sum(2 + length for _, _, length in SUNSPEC_CHAIN)
    assert end == 40356
    assert bat.point("end_id").address == end and bat.point("end_len").address == end + 1
    assert max(p.end for p in bat.points) == end + 2


@pytest.mark.parametrize("name", sorted(SUNSPEC_OFFSETS))
def test_battery_points_sit_at_their_sunspec_offsets(name: str) -> None:
    model_id, offset, sunspec_name = SUNSPEC_OFFSETS[name]
    point = shipped("battery_inverter").point(name)
    assert point.address == model_starts()[model_id] + offset, sunspec_name
    assert not point.encoding.byte_swap and not point.encoding.word_swap  # SunSpec is ABCD
    assert point.description.startswith(f"{model_id} {sunspec_name}")


def test_every_battery_point_is_placed_per_sunspec() -> None:
    headers = {f"{prefix}_{kind}" for prefix, _, _ in SUNSPEC_CHAIN for kind in ("id", "len")}
    markers = {"sunspec_marker_hi", "sunspec_marker_lo", "end_id", "end_len"}
    names = {p.name for p in shipped("battery_inverter").points}
    assert names == headers | markers | set(SUNSPEC_OFFSETS)


@pytest.mark.parametrize("name", sorted(SUNSPEC_SCALES))
def test_battery_scales_match_the_published_scale_factors(name: str) -> None:
    sf_point, exponent, unit = SUNSPEC_SCALES[name]
    bat = shipped("battery_inverter")
    assert bat.point(name).encoding.scale == pytest.approx(unit * 10.0**exponent)
    sf = bat.point(sf_point)
    assert sf.encoding.dtype is DataType.INT16 and sf.access is Access.R  # sunssf
    assert f"publishes {exponent}" in sf.description


def test_battery_power_ranges_cover_one_megawatt() -> None:
    bat = shipped("battery_inverter")
    for name in ("battery_w_kw", "ac_w_kw", "w_set_kw"):
        enc = bat.point(name).encoding
        assert encode(1000.0, enc) and encode(-1000.0, enc), name
    for name in ("w_cha_max_kw", "w_dis_cha_max_kw"):
        assert encode(1000.0, bat.point(name).encoding), name


def test_battery_outputs_revert_to_no_dispatch() -> None:
    bat = shipped("battery_inverter")
    assert bat.point("w_set_ena").failsafe == 0
    assert bat.point("w_set_kw").failsafe == 0
    assert bat.point("w_set_kw").encoding.dtype is DataType.INT32
    hb = bat.point("ctrl_hb")
    assert (hb.minimum, hb.maximum) == (0, 0xFFFF)  # the heartbeat wraps at 16 bits


# Only node configs (with a [node] table); the plant simulator's config lives beside them.
NODE_EXAMPLES = sorted(p for p in EXAMPLES_DIR.glob("*.toml") if "[node]" in p.read_text())


@pytest.mark.parametrize("path", NODE_EXAMPLES, ids=lambda p: p.stem)
def test_example_node_configs_load_against_the_shipped_maps(path: Path) -> None:
    cfg = load_node_config(path)
    assert cfg.io_maps_dir == MAPS_DIR
    assert cfg.devices or cfg.role == "site"  # a site node may own no field devices


# -- loader negative tests ---------------------------------------------------------------------

GOOD_POINTS = """
[points.speed_ref]
address = 0
type = "uint16"
access = "w"
class = "pump"
scale = 0.01
min = 0.0
max = 100.0
failsafe = 100.0
max_hold_s = 2.0
"""


def write(tmp_path: Path, points: str, model: str = "demo") -> Path:
    path = tmp_path / f"{model}.toml"
    path.write_text(f'[device]\nmodel = "{model}"\n{points}')
    return path


def errors_of(path: Path) -> list[str]:
    errors = ErrorLog()
    load_io_map(path, errors)
    assert errors.lines, "expected the load to fail"
    return errors.lines


def assert_names(lines: list[str], path: Path, point: str, key: str) -> None:
    prefix = f"{path}: [points.{point}] {key}: "
    assert any(line.startswith(prefix) for line in lines), (prefix, lines)


def test_good_small_map_loads(tmp_path: Path) -> None:
    io_map = load(write(tmp_path, GOOD_POINTS))
    assert [p.name for p in io_map.outputs] == ["speed_ref"]


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_POINTS + 'scael = 0.1\n')
    lines = errors_of(path)
    assert_names(lines, path, "speed_ref", "scael")
    assert "unknown key" in lines[0]


@pytest.mark.parametrize(("fields", "key", "reason"), [
    ({"address": '"3"'}, "address", "must be an integer"),
    ({"address": "1.5"}, "address", "must be an integer"),
    ({"address": "70000"}, "address", "must be <= 65535"),
    ({"type": '"float64"'}, "type", "must be one of"),
    ({"type": "16"}, "type", "must be a string"),
    ({"word_swap": "1"}, "word_swap", "must be true or false"),
    ({"scale": '"0.1"'}, "scale", "must be a number"),
    ({"scale": "0"}, "scale", "must not be 0"),
    ({"access": '"x"'}, "access", "must be one of"),
    ({"table": '"coil"'}, "table", "must be one of"),
])
def test_wrong_type_is_named(tmp_path: Path, fields: dict[str, str], key: str,
                             reason: str) -> None:
    body = {"address": "5", "type": '"uint16"', **fields}
    path = write(tmp_path, "[points.level]\n" + "".join(f"{k} = {v}\n" for k, v in body.items()))
    lines = errors_of(path)
    assert_names(lines, path, "level", key)
    assert any(reason in line for line in lines), lines


def test_output_without_failsafe_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_POINTS.replace("failsafe = 100.0\n", ""))
    assert_names(errors_of(path), path, "speed_ref", "failsafe")


def test_output_without_max_hold_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_POINTS.replace("max_hold_s = 2.0\n", ""))
    assert_names(errors_of(path), path, "speed_ref", "max_hold_s")


def test_failsafe_outside_range_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_POINTS.replace("failsafe = 100.0", "failsafe = 150.0"))
    assert_names(errors_of(path), path, "speed_ref", "failsafe")


def test_output_in_input_table_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_POINTS.replace("address = 0", 'table = "input"\naddress = 0'))
    assert_names(errors_of(path), path, "speed_ref", "access")


def test_failsafe_on_an_input_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, '[points.temp]\naddress = 0\ntype = "int16"\nfailsafe = 0.0\n')
    assert_names(errors_of(path), path, "temp", "failsafe")


def test_overlap_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_POINTS + (
        '[points.energy]\naddress = 1\ntype = "uint32"\n'
        '[points.status]\naddress = 2\ntype = "uint16"\n'))
    lines = errors_of(path)
    assert_names(lines, path, "status", "address")
    assert any("overlap point 'energy'" in line for line in lines), lines


def test_same_address_in_other_table_is_no_overlap(tmp_path: Path) -> None:
    load(write(tmp_path, GOOD_POINTS + '[points.level]\ntable = "input"\naddress = 0\n'
                                       'type = "float32"\n'))


@pytest.mark.parametrize("dtype", ["int16", "uint16"])
def test_word_swap_on_16_bit_is_named(tmp_path: Path, dtype: str) -> None:
    path = write(tmp_path, f'[points.level]\naddress = 0\ntype = "{dtype}"\nword_swap = true\n')
    lines = errors_of(path)
    assert_names(lines, path, "level", "word_swap")
    assert "only applies to 32-bit types" in lines[0]


def test_byte_swap_on_16_bit_is_allowed(tmp_path: Path) -> None:
    load(write(tmp_path, '[points.level]\naddress = 0\ntype = "uint16"\nbyte_swap = true\n'))


def test_model_must_match_file_name(tmp_path: Path) -> None:
    path = tmp_path / "demo.toml"
    path.write_text('[device]\nmodel = "other"\n' + GOOD_POINTS)
    assert any(line.startswith(f"{path}: [device] model: ") for line in errors_of(path))


def test_failsafe_the_type_cannot_hold_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_POINTS.replace("max = 100.0\n", "")
                 .replace("failsafe = 100.0", "failsafe = 1000.0"))
    assert_names(errors_of(path), path, "speed_ref", "failsafe")
