"""Free loopback ports, and waiting for servers on them.

Standard library and requests only (both runtime packages), so scripts/deploy_smoke.py can use
it from a virtualenv that has requirements.txt alone.
"""

from __future__ import annotations

import socket
import time

import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout=15.0, interval=0.05) -> bool:
    """True as soon as predicate() is; False if it never is within timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def answers_ok(url: str) -> bool:
    """True if a GET of url answers 200 within a second."""
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False
