"""Loop checks against a running node, through its OPC UA methods: for each output Force the
test value (with an expiry, a reason and the technician's identity), watch the feedback in the
node's own image, time it, then Release (the node's control takes the output back).

The node decides: the rights table, precedence, and the safety layer (an interlock or a
latched trip beats a force, so a forbidden output is refused or does not move; the row says
which). Pairing, test values and tolerances are the direct mode's (loopcheck.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from edge_runtime.assembly.config import NodeConfig
from edge_runtime.config.schema import DeviceConfig, PointSpec
from pswd_commission.loopcheck import LoopResult, Pairing, Settings, default_test, infer_pairing
from pswd_commission.node_client import NodeSession
from pswd_commission.session import CommissionError

REASON = "commissioning loop check"


class NodeLoopChecker:
    """The loop checks of one node config through the running node's OPC UA server."""

    def __init__(self, cfg: NodeConfig, session: NodeSession, settings: Settings,
                 pairs: dict[str, Pairing] | None = None) -> None:
        self.cfg, self.session, self.settings = cfg, session, settings
        self.pairs = dict(pairs or {})

    async def _feedback(self, pairing: Pairing) -> float | None:
        value = await self.session.read(pairing.feedback)
        if value is None or pairing.bit is None:
            return value
        return float((int(value) >> pairing.bit) & 1)

    async def check(self, dev: DeviceConfig, spec: PointSpec,
                    progress: Callable[[str], None] = lambda s: None) -> LoopResult:
        """Force, watch, release."""
        name = f"{dev.name}.{spec.name}"
        res = LoopResult(name, "SKIP", "", unit=spec.unit)
        if spec.mirrors:
            res.reason = f"device comms-loss parameter (mirrors {spec.mirrors}): no feedback"
            return res
        pairing = self.pairs.get(name) or infer_pairing(dev, spec)
        if pairing is None:
            res.reason = "no feedback declared or inferable (add it to a --pairs file)"
            return res
        res.feedback, res.pairing = pairing.feedback, pairing.source
        start = await self._feedback(pairing)
        if start is None:
            res.status, res.reason = "FAIL", f"feedback {pairing.feedback} is bad in the node"
            return res
        before = await self.session.read(name)
        res.before = before
        test = pairing.test_value if pairing.test_value is not None else default_test(
            spec, start if pairing.bit is not None else before, pairing.bit)
        span = (spec.maximum - spec.minimum) if spec.maximum is not None and \
            spec.minimum is not None else 100.0
        tol = pairing.tolerance if pairing.tolerance is not None else (
            0.0 if pairing.bit is not None else max(self.settings.tolerance_frac * span, 1e-6))
        timeout = pairing.timeout_s or self.settings.timeout_s
        res.test_value, res.tolerance = test, tol
        progress(f"{name}: Force {test:g} through the node, watching {pairing.feedback}")
        try:
            await self.session.force(name, test, timeout + 10.0, REASON)
        except CommissionError as exc:
            res.status, res.reason = "REFUSED", f"the node refused the force: {exc}"
            return res
        try:
            t0 = time.monotonic()
            in_row, first_in = 0, None
            while True:
                fb = await self._feedback(pairing)
                t = time.monotonic() - t0
                if fb is not None:
                    res.samples.append((t, fb))
                    if abs(fb - test) <= tol:
                        first_in = t if first_in is None else first_in
                        in_row += 1
                    else:
                        in_row, first_in = 0, None
                if in_row >= self.settings.settle_samples or t >= timeout:
                    break
                await asyncio.sleep(self.settings.sample_s)
        finally:
            await self.session.release(name)
            res.restored = True  # released: the node's own control drives it again
        if in_row >= self.settings.settle_samples and first_in is not None:
            res.status, res.response_s = "PASS", round(first_in, 3)
            res.reason = f"{pairing.feedback} reached {test:g} (tolerance {tol:g}) in " \
                         f"{first_in:.2f} s; released"
        else:
            last = res.samples[-1][1] if res.samples else None
            holding = await self.session.holding()
            if holding:
                res.status = "REFUSED"
                res.reason = (f"{', '.join(holding)} holds the outputs (a force never beats "
                              f"it): {pairing.feedback} stayed at {last}; released")
            else:
                res.status = "FAIL"
                res.reason = (f"no response: {pairing.feedback} stayed at {last} (forced "
                              f"{test:g}, tolerance {tol:g}, {timeout:g} s); released")
        return res
