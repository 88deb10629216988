"""What every benchmark driver here needs: free ports, waiting for a condition or a
listener, and progress on stderr. Imported by the `*_bench.py` scripts, which run from
this folder."""

from __future__ import annotations

import socket
import sys
import time

LOCALHOST = "127.0.0.1"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that was free a moment ago (TCP unless `kind` says UDP)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def free_udp_tcp_port() -> int:
    """A port free for UDP and TCP both (DNS binds both; RADIUS ports are UDP)."""
    while True:
        port = free_port(socket.SOCK_DGRAM)
        try:
            with socket.socket() as s:
                s.bind((LOCALHOST, port))
            return port
        except OSError:
            continue


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    """Polls `predicate` until it returns something true, which is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def wait_port(port: int, timeout: float = 30) -> None:
    """Waits until something accepts TCP connections on 127.0.0.1:`port`."""

    def accepts() -> bool:
        try:
            socket.create_connection((LOCALHOST, port), timeout=1).close()
            return True
        except OSError:
            return False

    wait_for(accepts, timeout, f"something to listen on port {port}", 0.2)
