"""The write side every field driver shares (Modbus, OPC UA, sensor nodes over MQTT).

The scan stages its output values (`stage`, never blocking); a writer task wakes on a change
or when a refresh, a max-hold expiry or the safe image falls due (blocks.OutputSchedule says
when) and calls the driver's own `write_due`. Only how a value reaches the device differs
between drivers, so only `write_due` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping

from edge_runtime.config.codec import CodecError
from edge_runtime.config.schema import DeviceConfig
from edge_runtime.core.clock import Clock
from edge_runtime.io.blocks import OutputSchedule, output_words

log = logging.getLogger(__name__)


def raise_if_cancel_was_swallowed() -> None:
    """Honour a cancel that never reached us as CancelledError.

    Python 3.11's asyncio.wait_for, which pymodbus and asyncua await every response with,
    returns the result and drops the cancellation when both arrive together. The task still
    counts the request, so a driver loop checks it each turn: otherwise one unlucky response
    keeps a driver alive and the node's shutdown (failsafe writes included) waits for it
    forever.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class OutputWriter:
    """Mixin of a field driver's write side. The driver sets `outputs`, `clock`, `_config`,
    `errors`, `last_error` and `_wake` in its __init__, and implements `write_due`."""

    outputs: OutputSchedule
    clock: Clock
    _config: DeviceConfig
    errors: Counter[str]
    last_error: str
    _wake: asyncio.Event
    # The safety layer's safe image of the last scan (set by it at node start), and the one
    # already taken into the failsafe words.
    safe_source: Callable[[], Mapping[str, float]] | None
    _safe_seen: Mapping[str, float] | None

    def _error(self, kind: str, message: str, n: int = 1) -> None:
        self.errors[kind] += n
        self.last_error = message

    def stage(self, values: Mapping[str, float], now: float) -> None:
        """Take the scan's output values (bad ones refused); wake the writer on change."""
        refused = self.outputs.refused
        if self.outputs.stage(values, now):
            self._wake.set()
        if self.outputs.refused != refused:
            self._error("refused", self.outputs.last_refusal, self.outputs.refused - refused)

    def _use_safe_image(self) -> None:
        """Max-hold expiry falls back to the safe image of the last scan, not the io_map
        failsafe: an output the last scan isolated stays isolated when the scan stops."""
        source = self.safe_source
        values = source() if source is not None else None
        if values is None or values is self._safe_seen:
            return
        self._safe_seen = values
        outputs, device = self.outputs, self._config.name
        for name in outputs.failsafe:
            value = values.get(f"{device}.{name}")
            if value is None:
                continue
            try:
                outputs.failsafe[name] = output_words(outputs.specs[name], value)
            except CodecError as exc:  # keep the io_map failsafe rather than nothing
                self._error("safe_image", f"{name}: safe value {value!r} refused: {exc}")

    async def write_due(self) -> None:
        """Write what is due now (the driver's own protocol)."""
        raise NotImplementedError

    async def _write_loop(self) -> None:
        while True:
            raise_if_cancel_was_swallowed()
            delay = self.outputs.next_wake() - self.clock.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(None if math.isinf(delay) else delay):
                        await self._wake.wait()
            else:
                await asyncio.sleep(0)  # always yield: a due time that does not move must not spin
            self._wake.clear()
            try:
                await self.write_due()
            except Exception as exc:  # a driver bug must not end writing
                self._error("internal", repr(exc))
                log.exception("%s: write failed", self._config.name)
                self.outputs.finished(self.clock.monotonic(), False, self._config.poll_s)
