"""Shared fixtures: the anyio backend for async tests and free loopback ports."""

from __future__ import annotations

import socket

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio, the loop the runtime uses."""
    return "asyncio"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def port() -> int:
    """One free loopback port."""
    return free_port()
