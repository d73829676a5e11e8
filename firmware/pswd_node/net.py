"""The socket umqtt.simple runs on: every operation bounded by a timeout, on a board or CPython.

umqtt.simple blocks without limit (its wait_msg() sets the socket blocking): a half-dead
broker would then stop the scan until the watchdog resets the board. Its module-level
`socket` is replaced by this module, whose sockets turn "blocking" into "blocking for at
most TIMEOUT_S" and count when bytes last arrived (`last_rx`, ticks_ms) so the uplink can
tell a silent link from an idle one. Under CPython they also give the MicroPython stream
methods umqtt uses (read/write), and mqtt_client_class() installs the u-module aliases
the 2017 PyPI release of umqtt.simple imports.
"""

import socket as _socket
import sys

from . import compat

TIMEOUT_S = 1.0
AF_INET = _socket.AF_INET
SOCK_STREAM = _socket.SOCK_STREAM
_EAGAIN = (11, 35, 115)  # EAGAIN (Linux, lwIP), EAGAIN (BSD), EINPROGRESS


def getaddrinfo(host, port, *args):
    """IPv4 TCP addresses only: the socket below is AF_INET."""
    return _socket.getaddrinfo(host, port, AF_INET, SOCK_STREAM)


class socket:  # stands in for the socket module's socket()
    """A TCP socket with MicroPython's read/write stream methods and bounded blocking."""

    def __init__(self, *args):
        self.raw = _socket.socket(AF_INET, SOCK_STREAM)
        if hasattr(_socket, "TCP_NODELAY"):  # not on every lwIP port
            # umqtt writes a packet in pieces: without this, Nagle holds each QoS 1 ~40 ms
            self.raw.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        self.raw.settimeout(TIMEOUT_S)
        self.blocking = True
        self.last_rx = compat.ticks_ms()

    def connect(self, addr):
        self.raw.connect(addr)
        self.last_rx = compat.ticks_ms()

    def setblocking(self, flag):
        if flag:
            if not self.blocking:
                self.raw.settimeout(TIMEOUT_S)
        else:
            self.raw.setblocking(False)
        self.blocking = flag

    def settimeout(self, t):
        self.raw.settimeout(TIMEOUT_S if t is None else min(t, TIMEOUT_S))

    def write(self, buf, n=None):
        data = memoryview(buf)
        if n is not None:
            data = data[:n]
        sent = 0
        while sent < len(data):
            k = self.raw.send(data[sent:])
            if not k:
                raise OSError(-1)
            sent += k
        return sent

    def read(self, n):
        """n bytes; None at once if non-blocking and nothing waits; b"" at end of stream."""
        out = b""
        while len(out) < n:
            try:
                chunk = self.raw.recv(n - len(out))
            except OSError as exc:
                if not self.blocking and not out and exc.args and exc.args[0] in _EAGAIN:
                    return None
                raise
            if not chunk:
                return out  # closed by the peer
            out += chunk
            self.last_rx = compat.ticks_ms()
            if not self.blocking:  # got the first byte: the rest is a message in flight
                self.setblocking(True)
        return out

    def close(self):
        self.raw.close()


def mqtt_client_class():
    """umqtt.simple's MQTTClient, running on this module's sockets."""
    try:
        import umqtt.simple as simple
    except ImportError:
        # CPython with PyPI's micropython-umqtt.simple: it imports the u-modules
        import binascii
        import struct
        sys.modules.setdefault("usocket", _socket)
        sys.modules.setdefault("ustruct", struct)
        sys.modules.setdefault("ubinascii", binascii)
        import umqtt.simple as simple
    simple.socket = sys.modules[__name__]
    return simple.MQTTClient
