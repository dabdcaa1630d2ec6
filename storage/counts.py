"""Counters that expire on their own: the hourly counts behind /v1/admin/stats and /metrics."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import redis

from . import scripts
from .clock import HOUR_FORMAT, HOUR_MS, Clock
from .keys import Keys

# Hourly counts are read for the last 25 hours (see Counts.read); 26 h of life covers that.
HOURLY_COUNT_LIFETIME_MS = 26 * HOUR_MS
# What the service counts per hour: chat-route requests, model output tokens of replies, 401s,
# 429s, 403s for a foreign Origin, replies that failed upstream, and replies the model stopped
# early (a finish reason other than "stop": "length", "content_filter"...).
COUNTERS = (
    "chatRequests",
    "outputTokens",
    "unauthorized",
    "rateLimited",
    "refusedOrigins",
    "upstreamErrors",
    "incompleteReplies",
)

# (key, amount, lifetime ms): one change to an expiring counter.
Change = tuple[str, int, int]


def add_expiring(target, changes: list[Change]) -> None:
    """Add to counters of one slot, each then living its lifetime more, so they clean
    themselves up; one command, run on target (a client) or queued (a pipeline)."""
    scripts.run(
        target,
        scripts.ADD_EXPIRING,
        [key for key, _, _ in changes],
        [value for _, amount, lifetime_ms in changes for value in (amount, lifetime_ms)],
    )


class Counts:
    """This hour's count of each of COUNTERS, kept 26 hours."""

    def __init__(self, client, keys: Keys, clock: Clock):
        self.client, self.keys, self.clock = client, keys, clock

    def change(self, name: str, amount: int = 1) -> Change:
        """The change that adds amount to this hour's count of name, for add_expiring."""
        return self.keys.hourly_count(name, self.clock.utc_hour()), amount, HOURLY_COUNT_LIFETIME_MS

    def add(self, name: str) -> None:
        """Add one to this hour's count of name (one of COUNTERS).

        Best effort: these counts describe refusals and failures, and losing one to a Redis
        failure must not turn the answer being counted into a 503.
        """
        try:
            add_expiring(self.client, [self.change(name)])
        except redis.exceptions.RedisError:
            logging.getLogger(__name__).warning("Could not count %s: Redis unavailable", name)

    def queue_read(self, pipe) -> datetime:
        """Queue on pipe one MGET per counter of the last 25 hours' counts; the time they are of.

        The counts share the {admission} slot, so one MGET reads them even on a cluster, whose
        pipelines refuse mget() but route a single-slot MGET command.
        """
        now = datetime.fromtimestamp(self.clock.seconds(), UTC)
        hours = [(now - timedelta(hours=back)).strftime(HOUR_FORMAT) for back in range(25)]
        for name in COUNTERS:
            pipe.execute_command("MGET", *[self.keys.hourly_count(name, hour) for hour in hours])
        return now

    @staticmethod
    def windows(now: datetime, hourly: list[list[str | None]]) -> dict:
        """{"lastHour": {name: n}, "lastDay": {name: n}} from what queue_read's MGETs returned."""
        into_hour = (now.minute * 60 + now.second + now.microsecond / 1e6) / 3600
        per_name = [[int(count or 0) for count in counts] for counts in hourly]
        return {
            "lastHour": {name: _window(counts, 1, into_hour) for name, counts in zip(COUNTERS, per_name, strict=True)},
            "lastDay": {name: _window(counts, 24, into_hour) for name, counts in zip(COUNTERS, per_name, strict=True)},
        }


def _window(hourly: list[int], hours: int, into_hour: float) -> int:
    """Events in the last `hours` hours, from hourly counts (newest first, this hour's so far).

    The window covers this hour so far, the hours - 1 before it, and the part of the hour
    before those that still lies inside the window; that oldest hour is taken pro rata,
    assuming its events were spread evenly. Rounded to a whole number.
    """
    return round(sum(hourly[:hours]) + hourly[hours] * (1 - into_hour))
