"""`report`: the HTML commissioning report, rendered from the session journal.

Per-point table (verify), loop checks with their responses as inline SVG plots, validation
findings, scan statistics, firmware and certificate inventory, forces and resets, and who
did what and when. The document carries its own SHA-256: computed over the document with
the hash replaced by 64 zeros, so anyone can recompute it (`report --verify FILE`).
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from string import Template
from typing import Any

from pswd_commission.session import utc_now

ZERO_HASH = "0" * 64


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _num(value: object, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return _e(value)


def table(columns: Sequence[str], rows: Iterable[Sequence[object]],
          status_col: int | None = None) -> str:
    """An HTML table; the status column's cell gets its word as CSS class."""
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = f' class="{_e(str(cell).split(" ", 1)[0])}"' if i == status_col else ""
            cells.append(f"<td{cls}>{_num(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def svg_plot(result: Mapping[str, Any], width: int = 480, height: int = 180) -> str:
    """A loop-check response: feedback over time, the test value and its tolerance band,
    siblings dotted (a miswired output shows the sibling following), response time marked."""
    samples: list[list[float]] = result.get("samples") or []
    siblings: Mapping[str, list[list[float]]] = result.get("sibling_samples") or {}
    test, tol = result.get("test_value"), result.get("tolerance") or 0.0
    series = [samples, *siblings.values()]
    values = [v for s in series for _, v in s]
    values += [x for x in (test, result.get("before")) if isinstance(x, int | float)]
    times = [t for s in series for t, _ in s]
    if not values or not times:
        return ""
    lo, hi = min(values) - tol, max(values) + tol
    if hi - lo < 1e-9:
        lo, hi = lo - 1.0, hi + 1.0
    pad = 0.08 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    t_max = max(max(times), 1e-3)
    left, right, top, bottom = 48, 10, 10, 28
    pw, ph = width - left - right, height - top - bottom

    def x(t: float) -> float:
        return left + pw * t / t_max

    def y(v: float) -> float:
        return top + ph * (hi - v) / (hi - lo)

    def line(points: list[list[float]]) -> str:
        return " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" class="loopcheck-plot" '
             f'aria-label="{_e(result.get("output"))} response">',
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" '
             f'stroke="#888"/>']
    if isinstance(test, int | float):
        parts.append(f'<rect x="{left}" y="{y(test + tol):.1f}" width="{pw}" '
                     f'height="{max(y(test - tol) - y(test + tol), 1.0):.1f}" fill="#cfe8cf"/>')
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(test):.1f}" y2="{y(test):.1f}" '
                     f'stroke="#2a7" stroke-dasharray="6 3"/>')
    for pts in siblings.values():
        if pts:
            parts.append(f'<polyline fill="none" stroke="#c60" stroke-width="1.5" '
                         f'stroke-dasharray="2 3" points="{line(pts)}"/>')
    if samples:
        parts.append(f'<polyline fill="none" stroke="#14c" stroke-width="2" '
                     f'points="{line(samples)}"/>')
    rt = result.get("response_s")
    if isinstance(rt, int | float):
        parts.append(f'<line x1="{x(rt):.1f}" x2="{x(rt):.1f}" y1="{top}" y2="{top + ph}" '
                     f'stroke="#2a7"/>')
    parts += [f'<text x="{left - 4}" y="{top + 10}" text-anchor="end" font-size="10">'
              f'{hi:.3g}</text>',
              f'<text x="{left - 4}" y="{top + ph}" text-anchor="end" font-size="10">'
              f'{lo:.3g}</text>',
              f'<text x="{left}" y="{height - 8}" font-size="10">0 s</text>',
              f'<text x="{left + pw}" y="{height - 8}" text-anchor="end" font-size="10">'
              f'{t_max:.1f} s</text>', "</svg>"]
    return "".join(parts)


def _latest(entries: Sequence[Mapping[str, Any]], command: str) -> Mapping[str, Any] | None:
    found: Mapping[str, Any] | None = None
    for entry in reversed(entries):
        if entry.get("command") == command:
            found = entry
            break
    return found


def _args(entry: Mapping[str, Any]) -> str:
    """The arguments given, compactly (defaults left out where they are None)."""
    args = entry.get("args") or {}
    return " ".join(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
                    for k, v in sorted(args.items()) if v not in (None, False, "", []))


def _summary(entry: Mapping[str, Any]) -> str:
    result = entry.get("result") or {}
    if "summary" in result:
        return str(result["summary"])
    return str(result.get("error", ""))


def render(entries: Sequence[Mapping[str, Any]], *, title: str = "") -> str:
    """The report document, hash included."""
    sections: list[str] = []
    nodes = sorted({str(e["args"].get("config")) for e in entries
                    if isinstance(e.get("args"), dict) and e["args"].get("config")})
    people = sorted({str(e.get("technician")) for e in entries})
    title = title or "Commissioning report"
    first = entries[0]["ts"] if entries else ""
    last = entries[-1]["ts"] if entries else ""
    sections.append(
        "<h2>Session</h2>" + table(("", ""), [
            ("configs", ", ".join(nodes) or "-"), ("technicians", ", ".join(people)),
            ("first entry", first), ("last entry", last), ("report generated", utc_now()),
            ("journal entries", len(entries))]))
    sections.append("<h2>Who did what and when</h2>" + table(
        ("time (UTC)", "technician", "host", "command", "arguments", "exit", "outcome"),
        [(e.get("ts"), e.get("technician"), e.get("host"), e.get("command"), _args(e),
          e.get("exit"), _summary(e)) for e in entries]))
    bus = [e for e in entries if isinstance((e.get("result") or {}).get("stats"), dict)]
    if bus:
        sections.append("<h2>Field bus statistics</h2>" + table(
            ("time (UTC)", "command", "requests", "answered", "errors", "p50 (ms)", "p99 (ms)",
             "max (ms)"),
            [(e["ts"], e["command"], st.get("requests"), st.get("answered"),
              ", ".join(f"{k} {v}" for k, v in (st.get("errors") or {}).items()) or "-",
              st.get("latency_p50_ms"), st.get("latency_p99_ms"), st.get("latency_max_ms"))
             for e in bus if (st := e["result"]["stats"])]))

    if (d := _latest(entries, "discover")) is not None:
        res = d["result"]
        stats = res.get("stats", {})
        sections.append("<h2>Discovery and scan statistics</h2>" + table(
            ("measure", "value"),
            [("hosts", res.get("hosts")), ("ports", res.get("ports")),
             ("unit ids", res.get("units")), ("requests", stats.get("requests")),
             ("answered", stats.get("answered")), ("errors", stats.get("errors")),
             ("latency p50 / p99 (ms)",
              f"{stats.get('latency_p50_ms')} / {stats.get('latency_p99_ms')}"),
             ("duration (s)", res.get("duration_s")), ("units found", len(res.get("found", []))),
             ("unreachable", "; ".join(res.get("unreachable", [])) or "-")]))
        rows: list[tuple[object, ...]] = []
        for f in res.get("found", []):
            common: dict[str, Any] = next((m for m in (f.get("sunspec") or {}).get("models", [])
                           if m.get("id") == 1), {})
            chain = ", ".join(str(m.get("id")) for m in (f.get("sunspec") or {}).get("models", []))
            rows.append((f"{f.get('host')}:{f.get('port')}", f.get("unit_id"),
                         f.get("model") or "unidentified", common.get("Mn", ""),
                         common.get("Md", ""), common.get("Vr", ""), common.get("SN", ""),
                         chain, f.get("note", "")))
        sections.append("<h2>Firmware and device inventory</h2>" + table(
            ("endpoint", "unit", "io_map", "manufacturer", "model", "firmware", "serial",
             "SunSpec models", "note"), rows))

    if (v := _latest(entries, "validate")) is not None:
        findings = v["result"].get("findings", [])
        sections.append(f"<h2>Configuration validation</h2><p>{_e(_summary(v))}</p>" + table(
            ("severity", "where", "finding"),
            [(f["severity"], f["where"], f["message"]) for f in findings], status_col=0))

    if (p := _latest(entries, "verify")) is not None:
        rows = [(r["point"], r.get("endpoint"), r.get("unit_id"), r.get("value"), r.get("unit"),
                 r.get("range"), r["status"], r["reason"]) for r in p["result"].get("points", [])]
        sections.append(f"<h2>Points</h2><p>{_e(_summary(p))}; checked {_e(p['ts'])} by "
                        f"{_e(p.get('technician'))}</p>" + table(
                            ("point", "endpoint", "unit id", "value", "unit", "range", "result",
                             "reason"), rows, status_col=6))

    loops: dict[str, tuple[Mapping[str, Any], Mapping[str, Any]]] = {}
    for e in entries:
        if e.get("command") == "loopcheck":
            for r in e["result"].get("outputs", []):
                loops[r["output"]] = (r, e)
    if loops:
        rows = [(r["output"], r.get("feedback"), r.get("pairing"), r.get("before"),
                 r.get("test_value"), r.get("tolerance"), r.get("response_s"), r.get("restored"),
                 r["status"], r["reason"], e.get("ts"), e.get("technician"))
                for r, e in loops.values()]
        plots = "".join(f"<figure>{svg}<figcaption>{_e(r['output'])}: {_e(r['status'])}"
                        f"</figcaption></figure>" for r, _ in loops.values()
                        if (svg := svg_plot(r)))
        sections.append("<h2>Loop checks</h2>" + table(
            ("output", "feedback", "pairing", "before", "test value", "tolerance",
             "response (s)", "restored", "result", "reason", "time (UTC)", "technician"),
            rows, status_col=8) + f"<div class='plots'>{plots}</div>")

    if (pr := _latest(entries, "provision")) is not None:
        items = pr["result"].get("items", [])
        sections.append("<h2>Certificates and keys</h2><p>Fingerprints and expiry only; no "
                        "key material is in this report.</p>" + table(
                            ("item", "purpose", "kind", "path", "mode", "fingerprint (SHA-256)",
                             "subject", "expires", "action"),
                            [(i["name"], i.get("purpose"), i["kind"], i["path"], i["mode"],
                              i["fingerprint_sha256"], i.get("subject"), i.get("not_after"),
                              i.get("action")) for i in items]))

    forces = [e for e in entries if e.get("command") in ("force", "release", "reset")]
    if forces:
        sections.append("<h2>Forces, releases and trip resets</h2>" + table(
            ("time (UTC)", "technician", "command", "target", "value", "expiry (s)", "reason",
             "outcome"),
            [(e["ts"], e.get("technician"), e["command"],
              e["args"].get("point") or e["args"].get("interlock"), e["args"].get("value"),
              e["args"].get("expiry_s"), e["args"].get("reason"), _summary(e))
             for e in forces]))

    document = Template(_template()).substitute(title=_e(title), body="\n".join(sections),
                                                hash=ZERO_HASH)
    digest = hashlib.sha256(document.encode("utf-8")).hexdigest()
    return document.replace(ZERO_HASH, digest)


def _template() -> str:
    return resources.files("pswd_commission").joinpath("templates/report.html").read_text(
        encoding="utf-8")


def verify_report(text: str) -> tuple[bool, str, str]:
    """(intact, hash the document states, hash of its content)."""
    m = re.search(r'<meta name="content-sha256" content="([0-9a-f]{64})">', text)
    stated = m.group(1) if m else ""
    if not stated or stated == ZERO_HASH:
        return False, stated, ""
    actual = hashlib.sha256(text.replace(stated, ZERO_HASH).encode("utf-8")).hexdigest()
    return actual == stated, stated, actual
