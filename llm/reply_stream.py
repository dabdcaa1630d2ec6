"""A streamed reply as the chat relay reads it: deltas in batches, with silence and the
shutdown deadline noticed while a read is pending."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass

from drain import Drain, ServiceStopping

MAX_BATCH = 256  # deltas handed over at once, so one write stays small


_END = object()  # marks the end of a reply on the reader's queue


_WAKE = object()  # put on the reader's queue when draining begins: the consumer re-checks the deadline


@dataclass
class StreamFacts:
    """What a stream reports besides its text, filled in while it is read."""

    output_tokens: int | None = None  # as counted by the upstream (a `usage` chunk)
    finish_reason: str | None = None  # the model's, from the chunk that carries it
    skipped_lines: int = 0  # `data:` lines that were not JSON, skipped as the original backend does


class ReplyStream:
    """Text deltas of one streamed completion; iterate once, then close.

    `interrupt` (if given) must wake a read blocked on another thread; the deltas generator
    releases its own resources when it ends or is closed.
    """

    def __init__(self, deltas: Generator[str, None, None], interrupt=lambda: None, facts: StreamFacts | None = None):
        self._deltas = deltas
        self.facts = facts if facts is not None else StreamFacts()  # filled in while streaming
        self._interrupt = interrupt
        self._closed = False
        self._read_elsewhere = False

    def __iter__(self) -> Iterator[str]:
        return self._deltas

    @property
    def output_tokens(self) -> int | None:
        return self.facts.output_tokens

    def batches(self, idle_seconds: float, drain: Drain | None = None) -> Iterator[list[str]]:
        """The deltas in lists of those that arrived together; an empty list after every
        idle_seconds of upstream silence. Raises ServiceStopping once `drain`'s deadline passes.

        The upstream is read on a helper thread (a greenlet under gevent) so that silence, and
        the deadline, can be noticed while a read is pending. Handing over what has piled up as
        one list lets the caller write it at once: one socket write for many tokens from a fast
        upstream. That thread owns the deltas generator from then on: it stops at close() and
        finishes it.
        """
        events: queue.SimpleQueue = queue.SimpleQueue()
        self._read_elsewhere = True

        def read_upstream():
            try:
                for delta in self._deltas:
                    if self._closed:
                        break
                    events.put(delta)
                events.put(_END)
            except BaseException as exc:  # handed to the consumer, which re-raises it
                events.put(exc)
            finally:
                self._deltas.close()

        threading.Thread(target=read_upstream, daemon=True, name="upstream-reader").start()
        with drain.watching(lambda: events.put(_WAKE)) if drain else contextlib.nullcontext():
            while True:
                wait, deadline_wait = idle_seconds, False
                left = drain.seconds_left() if drain else None
                if left is not None:
                    if left <= 0:
                        raise ServiceStopping()
                    wait, deadline_wait = min(idle_seconds, left), left < idle_seconds
                try:
                    pending = [events.get(timeout=wait)]
                except queue.Empty:
                    if not deadline_wait:
                        yield []
                    continue
                while not events.empty() and len(pending) < MAX_BATCH:
                    pending.append(events.get())
                batch = [item for item in pending if isinstance(item, str)]
                if batch:
                    yield batch
                for item in pending:  # a _WAKE may follow the end
                    if item is _END:
                        return
                    if isinstance(item, BaseException):
                        raise item

    def close(self) -> None:
        """Stop reading: the upstream connection is closed at once, not when the reply ends."""
        self._closed = True
        self._interrupt()
        if not self._read_elsewhere:
            self._deltas.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
