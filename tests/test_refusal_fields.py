"""Every refusal of a command message names its field, NaN and Infinity included (they used to
be refused with field None: the JSON parser refuses them before any field is known)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from edge_runtime.federation.inbound import Invalid, parse_command

STAMP = "2026-11-27T00:00:00Z"


class Image:
    """One output, 0..100 (the part of the process image a command is checked against)."""

    outputs_info: Mapping[str, Any] = {"pump1.speed_ref": object()}

    def check_output(self, name: str, value: float) -> None:
        if not 0.0 <= value <= 100.0:
            raise TypeError(f"{value} outside 0..100")


def body(value: str = "55.0", **extra: str) -> bytes:
    fields = {"PSWD_version": '"1.0"', "timestamp": f'"{STAMP}"', "action": '"set_output"',
              "point": '"pump1.speed_ref"', "value": value, **extra}
    return ("{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}").encode()


@pytest.mark.parametrize(("kind", "payload", "retain", "category", "field"), [
    ("thermal_control", body("NaN"), False, "malformed", "value"),
    ("thermal_control", body("Infinity"), False, "malformed", "value"),
    ("battery_control", body("-Infinity"), False, "malformed", "value"),
    ("grid_signal", body("1e400"), False, "malformed", "value"),
    ("thermal_control", body(command_id="NaN"), False, "malformed", "command_id"),
    ("workload", b'{"power_profile": {"peak_power_mw": NaN}}', False, "malformed",
     "power_profile.peak_power_mw"),
    ("thermal_control", b"{not json", False, "malformed", "$"),
    ("thermal_control", b"\xff\xfe", False, "malformed", "$"),
    ("thermal_control", b"[1, 2]", False, "malformed", "$"),
    ("thermal_control", b"{" + b" " * 2000 + b"}", False, "oversized", "$"),
    ("thermal_control", body(), True, "retained", "retain"),
    ("thermal_control", body('"fast"'), False, "schema", "value"),
    ("thermal_control", body("150"), False, "refused", "value"),
    ("reboot", b"{}", False, "unknown_topic", "topic"),
])
def test_every_refusal_names_its_field(kind: str, payload: bytes, retain: bool, category: str,
                                       field: str) -> None:
    with pytest.raises(Invalid) as info:
        parse_command(kind, payload, retain=retain, max_bytes=1024, image=Image())
    assert (info.value.category, info.value.field) == (category, field), info.value.reason


def test_a_valid_command_still_parses() -> None:
    request = parse_command("thermal_control", body("42"), retain=False, max_bytes=1024,
                            image=Image())
    assert (request.point, request.value) == ("pump1.speed_ref", 42.0)  # type: ignore[union-attr]
    assert json.loads(body("42"))["value"] == 42


def test_a_refusal_without_a_narrower_field_names_the_whole_message() -> None:
    assert Invalid("internal", "internal error: KeyError('x')").field == "$"
