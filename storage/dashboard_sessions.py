"""Open dashboard sessions: a signed cookie opens the dashboard only while its id is here."""

from __future__ import annotations

from .keys import Keys


class DashboardSessions:
    """The ids of the open dashboard sessions, each expiring with its cookie."""

    def __init__(self, client, keys: Keys):
        self.client, self.keys = client, keys

    def open(self, session_id: str, lifetime_ms: int) -> None:
        """Record a dashboard session as open, for lifetime_ms at most (its cookie's lifetime)."""
        self.client.set(self.keys.dashboard_session(session_id), 1, px=lifetime_ms)

    def is_open(self, session_id: str) -> bool:
        """True while the session has neither been signed out nor expired."""
        return bool(self.client.exists(self.keys.dashboard_session(session_id)))

    def close(self, session_id: str) -> None:
        """Sign a session out on the server: a copy of its cookie no longer opens anything."""
        self.client.delete(self.keys.dashboard_session(session_id))
