"""A worker's graceful shutdown: streams in flight get until a deadline, then end cleanly.

Platforms send SIGTERM on every deploy and restart and kill the process a fixed time later
(Heroku: SIGKILL 30 s after SIGTERM). gunicorn stops accepting connections at SIGTERM and waits
for the requests in flight, but a streaming generator is never told. So the worker's SIGTERM
handler (gunicorn.conf.py) calls `begin()`, and every stream being relayed watches the deadline
(`llm.ReplyStream.batches`): when it passes, the stream raises `ServiceStopping`, closes its
upstream, stores its partial reply as interrupted and sends a last `error` line.

One drain per process: a worker stops as a whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

RESTARTING_MESSAGE = "The service is restarting. Please send your message again in a moment."


class ServiceStopping(Exception):
    """The worker is shutting down and the stream's time is up."""


class Drain:
    """The shutdown deadline of one process, and the streams waiting on it."""

    def __init__(self) -> None:
        self._deadline: float | None = None
        self._watchers: set[Callable[[], None]] = set()

    def begin(self, seconds: float) -> None:
        """Start draining: streams may go on for `seconds` more (only the first call counts).

        Wakes every watcher so that it can shorten its wait to the deadline. Called from a
        signal handler, so it neither blocks nor takes locks.
        """
        if self._deadline is None:
            self._deadline = time.monotonic() + seconds
        for wake in list(self._watchers):
            wake()

    def seconds_left(self) -> float | None:
        """None while the process is not stopping; else seconds until the deadline (<= 0 once past)."""
        return None if self._deadline is None else self._deadline - time.monotonic()

    @contextmanager
    def watching(self, wake: Callable[[], None]) -> Iterator[None]:
        """Call `wake()` (from a signal handler: it must not block) when draining begins."""
        self._watchers.add(wake)
        try:
            yield
        finally:
            self._watchers.discard(wake)


current = Drain()  # this process's drain
