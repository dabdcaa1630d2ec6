"""What clients may spend: rate windows, session quotas, the daily budgets and sign-in attempts."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from . import scripts
from .clock import DAY_MS, Clock
from .counts import HOURLY_COUNT_LIFETIME_MS, Change, add_expiring
from .keys import Keys


class Verdict(StrEnum):
    """What admission decided about a chat request (the values admit.lua returns)."""

    OK = "ok"
    CLIENT_RATE = "ip"  # the client's rate window is full
    KEY = "key"  # no valid widget key
    SESSION_QUOTA = "session"  # the session's quota window is full
    BUDGET = "budget"  # the day's requests or tokens are spent


@dataclass(frozen=True)
class Admission:
    """The verdict on one chat request, and what was learnt on the way."""

    verdict: Verdict
    retry_after_ms: int
    conversation_id: str | None  # the session's conversation, if it already has one
    # The knowledge documents' version (storage.knowledge), read by the admission script itself;
    # None while no document was ever stored, so a turn without knowledge costs nothing more.
    knowledge_version: str | None = None


class Limits:
    """Rate windows, session quotas, daily budgets and dashboard sign-in attempts; all in the
    {admission} slot, all expiring on their own."""

    def __init__(self, client, keys: Keys, clock: Clock, retention_ms: int | None):
        self.client, self.keys, self.clock, self.retention_ms = client, keys, clock, retention_ms

    def admit(self, client: str, session_id: str | None, limits, key_valid: bool = True) -> Admission:
        """Count a chat request against its client's window and, for a turn of session_id,
        against the session's quota and the daily budgets (config.Limits); look up the session's
        conversation in the same round trip. session_id is None when the request is not a valid
        turn. The request and its refusal, if any, go into this hour's counts. An admitted turn
        also learns the knowledge version, so a deployment without documents pays nothing for them.
        """
        day, until_tomorrow_ms = self.clock.utc_day()
        hour = self.clock.utc_hour()
        pipe = self.client.pipeline(transaction=False)
        scripts.run(
            pipe,
            scripts.ADMIT,
            [
                self.keys.client_requests(client),
                self.keys.session_quota(session_id or ""),
                self.keys.daily_requests(day),
                self.keys.daily_tokens(day),
                self.keys.hourly_count("chatRequests", hour),
                self.keys.hourly_count("unauthorized", hour),
                self.keys.hourly_count("rateLimited", hour),
                self.keys.knowledge_version(),
            ],
            [
                limits.window_ms,
                limits.max_requests,
                "1" if session_id else "0",
                limits.session_window_ms,
                limits.session_max_messages,
                limits.daily_max_requests,
                limits.daily_max_tokens,
                until_tomorrow_ms + DAY_MS,
                "1" if key_valid else "0",
                HOURLY_COUNT_LIFETIME_MS,
                limits.turn_token_reservation,
            ],
        )
        if session_id:
            # Reading the mapping also moves its expiry (or removes it, without a retention), so
            # it lives as long as the conversation that this turn is about to write.
            if self.retention_ms:
                pipe.getex(self.keys.session(session_id), px=self.retention_ms)
            else:
                pipe.getex(self.keys.session(session_id), persist=True)
        (verdict, retry_ms, *version), *conversation = pipe.execute()
        retry_ms = until_tomorrow_ms if verdict == Verdict.BUDGET else max(int(retry_ms), 0)
        return Admission(
            Verdict(verdict), retry_ms, conversation[0] if conversation else None, version[0] if version else None
        )

    def tokens_spent(self, amount: int) -> Change:
        """The change to today's token budget for amount tokens (negative: given back), for add_expiring."""
        day, until_tomorrow_ms = self.clock.utc_day()
        return self.keys.daily_tokens(day), amount, until_tomorrow_ms + DAY_MS

    def release_tokens(self, reserved_tokens: int) -> None:
        """Give back to the day's token budget what an admitted turn reserved and never spent
        (its reply failed before any text). One command; nothing when nothing was reserved."""
        if reserved_tokens:
            add_expiring(self.client, [self.tokens_spent(-reserved_tokens)])

    def take_sign_in_attempt(self, client: str, max_attempts: int, window_ms: int) -> tuple[bool, int]:
        """Take one dashboard sign-in attempt of client's window (an address's identity, or a
        known device): (True, 0), or (False, ms until the window ends) once max_attempts are
        taken. Checked and counted in one step; a successful sign-in gives its attempt back."""
        taken, retry_ms = scripts.run(
            self.client, scripts.TAKE_SIGN_IN_ATTEMPT, [self.keys.sign_in_attempts(client)], [max_attempts, window_ms]
        )
        return bool(taken), max(int(retry_ms), 0)

    def give_back_sign_in_attempt(self, client: str) -> None:
        """Un-count the attempt of a sign-in that succeeded: only failures fill the window."""
        scripts.run(self.client, scripts.GIVE_BACK_SIGN_IN_ATTEMPT, [self.keys.sign_in_attempts(client)])
