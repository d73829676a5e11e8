"""Intrusion detection on the OPC UA server (issue 10 item 6): failed logins and untrusted
certificates are counted by the node's one detector; five wrong passwords on an account block
that account (even the right password is refused until the block ends), raise an
"intrusion" alarm, and every failure is an audit-worthy "auth_failure" event."""

from __future__ import annotations

from pathlib import Path

import pytest
from asyncua.ua.uaerrors import BadCertificateUntrusted, BadUserAccessDenied

from edge_runtime.security.ids import IntrusionDetector
from tests.opcua_helpers import serving
from tests.test_opcua_server import build_node

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


async def test_password_guessing_blocks_the_account_and_raises_an_alarm(tmp_path: Path) -> None:
    node = build_node(tmp_path)
    clock = Clock()
    ids = IntrusionDetector(node.events, clock, block_s=300.0)
    async with serving(node, tmp_path, guard=ids) as rig:
        for _ in range(5):
            with pytest.raises(BadUserAccessDenied):
                await rig.client("bms", password="guess")
        assert ids.blocked("opcua:user:bms") == pytest.approx(300.0)
        with pytest.raises(BadUserAccessDenied):  # the right password, while blocked
            await rig.client("bms")
        assert ids.blocked("opcua:user:grid") == 0.0
        ok = await rig.client("grid")  # another account is not blocked
        await ok.disconnect()
        with pytest.raises(BadCertificateUntrusted):
            await rig.client("grid", cert=rig.stranger)
        clock.t += 301  # the block ends by itself
        ok = await rig.client("bms")
        await ok.disconnect()
    codes = [e.code for e in node.events.recent(200)]
    assert codes.count("intrusion") == 1
    assert codes.count("auth_failure") == 6  # five guesses and the stranger's certificate
