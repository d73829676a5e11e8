"""`discover`: a bounded, rate-limited Modbus TCP scan that names what answers.

The technician names the hosts (loopback by default, at most 256 addresses), ports and unit
ids; the scan never exceeds `max_requests` and paces itself at `rate` requests a second. Per
host:port one TCP connect (a closed port costs one attempt); per unit id one presence probe,
then identification:
- SunSpec: the "SunS" marker at 40000, 0 or 50000, then the model chain walked with the
  lengths the device publishes, each model named from pysunspec2's model definitions, and
  model 1 (common) decoded for manufacturer, model, version and serial number;
- io_map probes: a candidate model must answer every read block of its readable points and
  give values inside each point's declared range. The candidate covering the most registers
  wins; models that fit equally well are reported as ambiguous.
The result proposes node configs (one per role: CDU devices, rack devices) for `validate`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sunspec2 import device as sunspec_device  # model definitions, as JSON in the package
from sunspec2.mdef import ModelDefinitionError

from edge_runtime.config.codec import decode
from edge_runtime.config.iomap import load_io_map
from edge_runtime.config.reader import ErrorLog
from edge_runtime.config.schema import IoMap, Table
from edge_runtime.io.blocks import plan_reads
from pswd_commission.fieldlink import FieldError, FieldLink
from pswd_commission.session import CommissionError
from pswd_commission.verify import plausible

SUNSPEC_BASES = (40000, 0, 50000)
SUNS = (0x5375, 0x6E53)
ABSENT_CODES = (10,)  # gateway path unavailable: nothing configured at that unit id
MAX_HOSTS = 256
MAX_MODELS = 64
# io_map model -> the node role it belongs to in a proposed config
ROLE_OF = {"battery_inverter": "rack", "rack_power_meter": "rack"}


@dataclass(slots=True)
class Found:
    """One unit that answered."""

    host: str
    port: int
    unit_id: int
    model: str = ""  # io_map model, "" when nothing fits
    candidates: list[str] = field(default_factory=list)  # every io_map that fits
    sunspec: dict[str, Any] | None = None
    note: str = ""  # e.g. "gateway target failed to respond"

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"host": self.host, "port": self.port, "unit_id": self.unit_id,
                "model": self.model, "candidates": self.candidates, "sunspec": self.sunspec,
                "note": self.note}


def parse_hosts(text: str) -> list[str]:
    """Comma-separated addresses or CIDR blocks, at most MAX_HOSTS addresses in all."""
    hosts: list[str] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            if "/" in part:
                net = ipaddress.ip_network(part, strict=False)
                if net.num_addresses > MAX_HOSTS:
                    raise CommissionError(f"--hosts {part}: {net.num_addresses} addresses; "
                                          f"scan at most {MAX_HOSTS} at once")
                hosts += [str(a) for a in (net.hosts() if net.num_addresses > 2 else net)]
            else:
                hosts.append(str(ipaddress.ip_address(part)))
        except ValueError:
            raise CommissionError(f"--hosts: {part!r} is not an IP address or CIDR "
                                  f"block") from None
    if not hosts:
        raise CommissionError("--hosts: give at least one address")
    if len(hosts) > MAX_HOSTS:
        raise CommissionError(f"--hosts: {len(hosts)} addresses; at most {MAX_HOSTS}")
    return hosts


def parse_ints(text: str, what: str, lo: int, hi: int) -> list[int]:
    """"1-16,20" -> [1..16, 20], each within lo..hi."""
    out: list[int] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise CommissionError(f"--{what}: {part!r} is not a number or a range like 1-16")
        a, b = int(m[1]), int(m[2] or m[1])
        if not (lo <= a <= b <= hi):
            raise CommissionError(f"--{what}: {part!r} must lie within {lo}..{hi}")
        out += range(a, b + 1)
    if not out:
        raise CommissionError(f"--{what}: give at least one value")
    return sorted(set(out))


def load_maps(directory: Path) -> list[IoMap]:
    """The Modbus io_maps of a directory (a broken map is an error: validate it first)."""
    maps: list[IoMap] = []
    for file in sorted(directory.glob("*.toml")):
        errors = ErrorLog()
        m = load_io_map(file, errors)
        if errors.lines or m is None:
            raise CommissionError(f"io_map {file} does not load: {errors.lines[0]}"
                                  if errors.lines else f"io_map {file} does not load")
        if m.protocol == "modbus" and m.inputs:
            maps.append(m)
    if not maps:
        raise CommissionError(f"--io-maps {directory}: no Modbus io_maps there")
    return maps


def sunspec_string(words: Sequence[int]) -> str:
    """A SunSpec string: two ASCII characters per register, NUL padded."""
    raw = b"".join(w.to_bytes(2, "big") for w in words)
    return raw.split(b"\0", 1)[0].decode("ascii", errors="replace").strip()


class Scanner:
    """One discovery run."""

    def __init__(self, link: FieldLink, maps: Sequence[IoMap], *, max_requests: int) -> None:
        self.link, self.maps, self.max_requests = link, list(maps), max_requests

    def _budget(self) -> None:
        if self.link.stats.requests >= self.max_requests:
            raise CommissionError(f"scan stopped at --max-requests {self.max_requests}; "
                                  f"narrow the hosts, ports or unit ids", code=1)

    async def _read(self, f: Found, table: Table, start: int, count: int) -> list[int]:
        self._budget()
        return await self.link.read(f.host, f.port, f.unit_id, table, start, count)

    async def present(self, f: Found) -> bool:
        """Anything but 'nothing at this unit id' (exception 10) or silence counts; a gateway
        saying the target failed to answer (exception 11) is a device that is there but down."""
        answered = False
        for table in (Table.HOLDING, Table.INPUT):
            try:
                await self._read(f, table, 0, 1)
                return True
            except FieldError as exc:
                if exc.kind == "exception" and exc.code == 11:
                    f.note = "gateway target failed to respond (device offline?)"
                    return True
                if exc.kind == "exception" and exc.code not in ABSENT_CODES:
                    answered = True  # e.g. illegal address: a device, not at register 0
                elif exc.kind in ("timeout", "disconnected"):
                    return answered
        return answered

    async def sunspec(self, f: Found) -> dict[str, Any] | None:
        """The SunSpec model chain, or None when there is no marker."""
        for base in SUNSPEC_BASES:
            try:
                if tuple(await self._read(f, Table.HOLDING, base, 2)) != SUNS:
                    continue
            except FieldError:
                continue
            models: list[dict[str, Any]] = []
            addr = base + 2
            for _ in range(MAX_MODELS):
                try:
                    mid, length = await self._read(f, Table.HOLDING, addr, 2)
                except FieldError as exc:
                    return {"base": base, "models": models, "error": exc.reason}
                if mid == 0xFFFF:
                    break
                info: dict[str, Any] = {"id": mid, "address": addr, "length": length}
                try:
                    mdef = sunspec_device.get_model_def(mid)
                    info["name"] = mdef["group"].get("label") or mdef["group"]["name"]
                    if mid == 1:
                        info.update(await self._common(f, addr, mdef))
                except ModelDefinitionError:  # a vendor model id: name it so
                    info["name"] = "unknown model"
                models.append(info)
                addr += 2 + length
            return {"base": base, "models": models}
        return None

    async def _common(self, f: Found, addr: int, mdef: dict[str, Any]) -> dict[str, str]:
        """Manufacturer, model, options, version and serial from model 1's definition."""
        out: dict[str, str] = {}
        offset = 0
        for point in mdef["group"]["points"]:
            size = int(point.get("size", 1))
            if point.get("type") == "string" and point["name"] in ("Mn", "Md", "Opt", "Vr",
                                                                    "SN"):
                try:
                    words = await self._read(f, Table.HOLDING, addr + offset, size)
                    out[point["name"]] = sunspec_string(words)
                except FieldError:
                    pass
            offset += size
        return out

    async def identify(self, f: Found) -> None:
        """The io_maps whose every block reads and whose values are all in range."""
        fits: list[tuple[int, str]] = []
        for m in self.maps:
            ok, covered = True, 0
            for block in plan_reads(m.inputs, max_gap=0):
                try:
                    words = await self._read(f, block.table, block.start, block.count)
                except FieldError:
                    ok = False
                    break
                for bp in block.points:
                    w = words[bp.offset:bp.offset + bp.spec.count]
                    if not plausible(bp.spec, float(decode(w, bp.spec.encoding))):
                        ok = False
                covered += block.count
                if not ok:
                    break
            if ok:
                fits.append((covered, m.model))
        fits.sort(reverse=True)
        f.candidates = [name for _, name in fits]
        if fits:
            best = [name for covered, name in fits if covered == fits[0][0]]
            f.model = best[0]
            if len(best) > 1:
                f.note = f"ambiguous: also fits {', '.join(best[1:])}"

    async def scan(self, hosts: Sequence[str], ports: Sequence[int], units: Sequence[int],
                   advance: Callable[[int], None] = lambda n: None,
                   ) -> tuple[list[Found], list[str]]:
        """Found units, and one line per host:port that could not be reached."""
        found: list[Found] = []
        unreachable: list[str] = []
        for host in hosts:
            for port in ports:
                self._budget()
                why = await self.link.connect(host, port)
                if why:
                    unreachable.append(why)
                    advance(len(units))
                    continue
                for unit in units:
                    f = Found(host, port, unit)
                    if await self.present(f):
                        if not f.note:
                            f.sunspec = await self.sunspec(f)
                            await self.identify(f)
                        found.append(f)
                    advance(1)
        return found, unreachable


def propose(found: Sequence[Found], *, site: str = "site") -> dict[str, str]:
    """Proposed node configs as TOML text, by role ("cdu", "rack")."""
    by_role: dict[str, list[Found]] = {}
    for f in found:
        if f.model:
            by_role.setdefault(ROLE_OF.get(f.model, "cdu"), []).append(f)
    out: dict[str, str] = {}
    for role, units in by_role.items():
        lines = ["# Proposed by pswd-commission discover: check every name and role, then run",
                 "# pswd-commission validate on it. Device names are <model>_<port>_<unit id>.",
                 "[node]", f'name = "{role}-01"', f'role = "{role}"', f'site = "{site}"', ""]
        for f in units:
            lines += [f"[devices.{f.model}_{f.port}_{f.unit_id}]", f'io_map = "{f.model}"',
                      f'endpoint = "{f.host}:{f.port}"', f"unit_id = {f.unit_id}",
                      "poll_ms = 100"]
            if f.note:
                lines.append(f"# {f.note}")
            if f.sunspec:
                common: dict[str, Any] = next(
                    (m for m in f.sunspec.get("models", []) if m.get("id") == 1), {})
                if common:
                    lines.append(f"# SunSpec: {common.get('Mn', '')} {common.get('Md', '')} "
                                 f"version {common.get('Vr', '')} serial {common.get('SN', '')}")
            lines.append("")
        if role == "rack":
            lines += ["# a rack node needs [smoothing] before it runs: see examples/rack.toml"]
        out[role] = "\n".join(lines).rstrip() + "\n"
    return out
