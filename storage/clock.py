"""Time as storage names it: milliseconds, UTC hours and days."""

from __future__ import annotations

import time

HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS
HOUR_FORMAT = "%Y-%m-%dT%H"


class Clock:
    """Reads the time from `seconds` (time.time; tests replace it to cross a day)."""

    def __init__(self, seconds=time.time):
        self.seconds = seconds

    def now_ms(self) -> int:
        return int(self.seconds() * 1000)

    def utc_hour(self) -> str:
        """This UTC hour as YYYY-MM-DDTHH, the name of its hourly counts."""
        return time.strftime(HOUR_FORMAT, time.gmtime(self.seconds()))

    def utc_day(self) -> tuple[str, int]:
        """Today's UTC date as YYYY-MM-DD, and the ms left until the next UTC day."""
        now_ms = self.now_ms()
        # Unix time has no leap seconds: every UTC day starts at a multiple of DAY_MS. (Plain
        # arithmetic: these run twice per chat turn, and datetime objects cost more.)
        return time.strftime("%Y-%m-%d", time.gmtime(now_ms // 1000)), DAY_MS - now_ms % DAY_MS
