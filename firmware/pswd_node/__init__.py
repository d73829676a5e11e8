"""PSWD rack sensor node firmware (MicroPython; also runs under CPython for tests)."""

VERSION = "0.1.0"
PSWD_VERSION = "1.0"
