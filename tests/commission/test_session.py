"""A whole commissioning session against the simulator, in one work directory: discover,
validate, verify, loopcheck, provision, report; then the report is parsed (tables, plots,
inventory), its SHA-256 recomputed independently, and a tampered copy refused."""

from __future__ import annotations

import hashlib
import json
import re
import stat
from html.parser import HTMLParser
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.commission.rig import (
    cdu_config,
    flowing,
    port_of,
    running_plant,
    tool,
    tool_json,
)


class _Report(HTMLParser):
    """Headings, table cells, SVG polylines and the stated hash of a report."""

    def __init__(self) -> None:
        super().__init__()
        self.h2: list[str] = []
        self.cells: list[str] = []
        self.svgs = self.polylines = 0
        self.meta_hash = ""
        self._tag = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag = tag
        a = dict(attrs)
        if tag == "svg":
            self.svgs += 1
        elif tag == "polyline":
            self.polylines += 1
        elif tag == "meta" and a.get("name") == "content-sha256":
            self.meta_hash = a.get("content") or ""

    def handle_data(self, data: str) -> None:
        if self._tag == "h2":
            self.h2.append(data.strip())
        elif self._tag == "td":
            self.cells.append(data.strip())

    def handle_endtag(self, tag: str) -> None:
        self._tag = ""


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_a_session_from_discovery_to_the_report(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = str(tmp_path / "work")
    common = ("--work-dir", work, "--technician", "Ada Field")
    async with running_plant() as sim:
        config = str(cdu_config(tmp_path, sim))
        sim.inject("return_pressure", "offline")  # the faulted device discovery must report
        code, doc = await tool_json(
            capsys, "discover", "--ports", f"{port_of(sim, 'cdu')},{port_of(sim, 'rack')}",
            "--units", "1-10", *common)
        assert code == 0, doc
        found = {(f["port"], f["unit_id"]): f for f in doc["found"]}
        cdu, rack = port_of(sim, "cdu"), port_of(sim, "rack")
        assert len(found) == 11
        assert found[(cdu, 1)]["model"] == "cdu_pump_vfd"
        assert found[(cdu, 3)]["model"] == "control_valve"
        assert found[(cdu, 6)]["model"] == "flow_meter"
        assert found[(cdu, 9)]["model"] == "leak_detector"
        assert found[(rack, 1)]["model"] == "rack_power_meter"
        assert "gateway target failed" in found[(cdu, 8)]["note"]
        battery = found[(rack, 2)]
        assert battery["model"] == "battery_inverter"
        models = battery["sunspec"]["models"]
        assert [m["id"] for m in models] == [1, 701, 704, 802]
        assert models[0]["Mn"] == "PSWD" and models[0]["Vr"] == "1.0.0"
        assert models[3]["name"] == "Battery Base Model"  # from pysunspec2's definitions
        assert doc["stats"]["requests"] <= 5000
        # the proposals load (the rack one needs [smoothing], so validate names only that)
        code, val = await tool_json(capsys, "validate", doc["proposed"][0], *common)
        assert code == 0, val
        sim.clear("return_pressure")

        code, val = await tool_json(capsys, "validate", config, *common)
        assert code == 0 and val["findings"] == []
        await flowing(sim, 100.0)
        code, _ = await tool_json(capsys, "verify", "--config", config, *common)
        assert code == 0
        code, lc = await tool_json(capsys, "loopcheck", "--config", config, "--output",
                                   "pump2.speed_ref", "--timeout-s", "8", *common)
        assert code == 0, lc

    code, prov = await tool_json(capsys, "provision", "--config", config, "--roles",
                                 "infrastructure_manager,grid_operator", *common)
    assert code == 0, prov
    items = {i["name"]: i for i in prov["items"]}
    pki = Path(prov["out"])
    assert prov["start_check"] == []  # the runtime's own start check accepts the files
    tls = x509.load_pem_x509_certificate((pki / "cdu-01.crt").read_bytes())
    opcua = x509.load_der_x509_certificate((pki / "opcua" / "server_cert.der").read_bytes())
    for name, cert, key in (("node TLS", tls, pki / "cdu-01.key"),
                            ("OPC UA", opcua, pki / "opcua" / "server_key.pem")):
        assert items[name]["fingerprint_sha256"] == cert.fingerprint(hashes.SHA256()).hex(
            ":").upper()
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    uris = opcua.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "urn:pswd-edge:demo:cdu-01" in uris.get_values_for_type(
        x509.UniformResourceIdentifier)
    assert stat.S_IMODE((pki / "command_keys" / "grid_operator.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "work" / "ca" / "ca.key").stat().st_mode) == 0o600
    code, again = await tool_json(capsys, "provision", "--config", config, *common)
    assert code == 0 and {i["action"] for i in again["items"]} == {"kept", "copied"}

    code, rep = await tool_json(capsys, "report", *common)
    assert code == 0
    text = Path(rep["path"]).read_text()
    parsed = _Report()
    parsed.feed(text)
    for heading in ("Who did what and when", "Discovery and scan statistics",
                    "Firmware and device inventory", "Configuration validation", "Points",
                    "Loop checks", "Certificates and keys", "Field bus statistics"):
        assert heading in parsed.h2, parsed.h2
    assert parsed.svgs >= 1 and parsed.polylines >= 1
    assert "SimInverter 500" in parsed.cells and "1.0.0" in parsed.cells
    assert "Ada Field" in parsed.cells
    assert "pump2.speed_ref" in parsed.cells and "PASS" in parsed.cells
    # independent check of the hash: the document with the hash zeroed hashes to it
    assert re.fullmatch(r"[0-9a-f]{64}", parsed.meta_hash)
    zeroed = text.replace(parsed.meta_hash, "0" * 64)
    assert hashlib.sha256(zeroed.encode()).hexdigest() == parsed.meta_hash == rep["sha256"]
    # no secret anywhere: neither key material in the report, the journal nor any output
    journal = (tmp_path / "work" / "journal.jsonl").read_text()
    for key_file in [*pki.glob("*.key"), *(pki / "command_keys").glob("*.key"),
                     pki / "opcua" / "server_key.pem",
                     tmp_path / "work" / "ca" / "ca.key"]:
        secret = key_file.read_text()
        body = re.sub(r"-----(?:BEGIN|END) PRIVATE KEY-----", "", secret).split()
        for chunk in body[:2]:
            assert chunk not in text and chunk not in journal
    assert "PRIVATE KEY" not in text and "PRIVATE KEY" not in journal
    assert [json.loads(line)["command"] for line in journal.splitlines()] == [
        "discover", "validate", "validate", "verify", "loopcheck", "provision", "provision",
        "report"]

    code, _out, _err = await tool(capsys, "report", "--verify", rep["path"], *common)
    assert code == 0
    tampered = tmp_path / "tampered.html"
    tampered.write_text(text.replace(">PASS<", ">FAIL<", 1))
    code, out, _err = await tool(capsys, "report", "--verify", str(tampered), *common)
    assert code == 1 and "NOT intact" in out


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_validate_catches_planted_config_errors(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    maps = tmp_path / "maps"
    maps.mkdir()
    src = Path(__file__).resolve().parents[2] / "io_maps"
    for name in ("cdu_pump_vfd", "temperature_transmitter"):
        (maps / f"{name}.toml").write_text((src / f"{name}.toml").read_text())
    # an io_map with overlapping points and an output without failsafe or class
    (maps / "bad_valve.toml").write_text(
        '[device]\nmodel = "bad_valve"\n'
        '[points.cmd]\naddress = 0\ntype = "uint32"\naccess = "w"\nmax_hold_s = 2.0\n'
        '[points.fb]\naddress = 1\ntype = "uint16"\n')
    cfg = tmp_path / "node.toml"
    cfg.write_text(
        '[node]\nname = "cdu-x"\nrole = "cdu"\nio_maps_dir = "maps"\n'
        '[devices.pump1]\nio_map = "cdu_pump_vfd"\nendpoint = "127.0.0.1:1502"\nunit_id = 1\n'
        '[devices.t1]\nio_map = "temperature_transmitter"\nendpoint = "127.0.0.1:1502"\n'
        'unit_id = 1\n'
        '[devices.t1.limits.temperature]\nlow = 20.0\nhigh = 15.0\n')
    code, doc = await tool_json(capsys, "validate", str(cfg), "--work-dir", str(tmp_path / "w"))
    assert code == 1
    text = "\n".join(f"{f['where']}: {f['message']}" for f in doc["findings"])
    assert "unit 1 at 127.0.0.1:1502 is already used by device 'pump1'" in text
    assert "thresholds must rise" in text
    assert "overlap point 'cmd'" in text
    assert "[points.cmd] failsafe: required for an output" in text
    assert "[points.cmd] class: required for an output" in text

    # loads, but a threshold beyond the point's range and a rights table nobody can reset by
    cfg.write_text(
        '[node]\nname = "cdu-y"\nrole = "cdu"\nio_maps_dir = "maps"\n'
        '[devices.pump1]\nio_map = "cdu_pump_vfd"\nendpoint = "127.0.0.1:1502"\nunit_id = 1\n'
        '[devices.t1]\nio_map = "temperature_transmitter"\nendpoint = "127.0.0.1:1502"\n'
        'unit_id = 2\n'
        '[devices.t1.limits.temperature]\nhigh = 45.0\nhigh_high = 450.0\n'
        '[safety.interlocks.hot]\nwhen = "t1.temperature >= high_high"\naction = "trip"\n'
        'outputs = ["pump1.speed_ref"]\nreset_role = "grid_operator"\n'
        '[rights.grid_operator]\nreset_trip = false\n')
    (maps / "bad_valve.toml").unlink()
    code, doc = await tool_json(capsys, "validate", str(cfg), "--work-dir", str(tmp_path / "w"))
    assert code == 1
    text = "\n".join(f"{f['where']}: {f['message']}" for f in doc["findings"])
    assert "high_high: 450 is outside the point's range -50..150 degC" in text
    assert "the latch could never be reset" in text
    out_code, out, err = await tool(capsys, "validate", str(cfg), "--work-dir",
                                    str(tmp_path / "w"))
    assert out_code == 1 and "ERROR" in out and "Traceback" not in err
