"""Sharing a worker with the other requests it serves: a gevent worker runs all of them in one
thread, as greenlets, so long work must give the others their turn.

Outside gevent (tests, the CLI), both helpers simply do the work or nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import gevent
from gevent import monkey

T = TypeVar("T")


def under_gevent() -> bool:
    return monkey.is_module_patched("threading")


def let_others_run() -> None:
    """Give the worker's other requests their turn: wait until gevent's event loop has handled
    the I/O and timers that are due. (`time.sleep(0)` is not enough: it only runs greenlets that
    are already runnable, and a loop of such yields kept /health waiting 20-35 ms.)"""
    if under_gevent():
        gevent.idle()


def off_the_event_loop(work: Callable[[], T]) -> T:
    """work(), run in a native thread of gevent's pool under gevent, so that the worker's other
    requests go on meanwhile (CPython hands the GIL over at least every 5 ms); else here."""
    if under_gevent():
        return gevent.get_hub().threadpool.apply(work)
    return work()
