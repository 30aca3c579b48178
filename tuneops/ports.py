"""Free loopback ports, for the servers tuneops starts itself (the local Prefect API, torchrun's rendezvous) and for
the tests and benchmarks that start servers."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago: the OS picks it (a bind to port 0), the probe closes.

    Another process may take it before the caller binds it; fine for a server started right away on loopback.
    """
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
