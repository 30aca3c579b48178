"""The one free-port helper that tuneops, its tests and benchmarks use."""

from __future__ import annotations

import socket

from tuneops.ports import free_port


def test_a_free_port_can_be_bound_on_loopback():
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
