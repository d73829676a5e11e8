"""Controller heartbeat: a counter written every scan to devices that watch for it.

A SunSpec battery inverter (model 802 CtrlHb) reverts to its safe state when the counter stops
changing, so the plant is safe even if this node dies without a word.
"""

from __future__ import annotations

from edge_runtime.core.image import ProcessImage


class Heartbeat:
    """Increments every heartbeat output (io_map class "heartbeat") once per scan, wrapping at
    16 bits."""

    name = "heartbeat"

    def __init__(self, outputs: list[str]) -> None:
        self.outputs = outputs
        self.counter = 0

    def step(self, image: ProcessImage, now: float, dt: float) -> None:
        """Advance the counter and write it."""
        self.counter = (self.counter + 1) & 0xFFFF
        for name in self.outputs:
            image.write(name, self.counter)
