"""Tests of the MicroPython firmware (firmware/).

Importing this package puts firmware/ on sys.path, so the firmware's package `pswd_node`
imports under CPython as it does on a board (`from pswd_node.app import App`), and the
fakes (tests.firmware.fakehw, tests.firmware.fakemqtt) with it.
"""

import sys
from pathlib import Path

FIRMWARE_DIR = str(Path(__file__).resolve().parents[2] / "firmware")
if FIRMWARE_DIR not in sys.path:
    sys.path.insert(0, FIRMWARE_DIR)
