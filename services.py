"""What create_app builds once per process and every request uses, kept in one place.

`app.extensions["ocw"]` holds one Services; views reach it through current(), tests and the
server hooks through of(app). Building it is create_app's job (app.build_services).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Flask, current_app

if TYPE_CHECKING:  # types only: the modules below use this one at run time
    import storage
    from auth import KeyRing
    from config import Settings
    from connections import OpenRequests
    from cors import AllowedOrigins
    from dashboard import DashboardCookies
    from llm import Model

EXTENSION = "ocw"


@dataclass(frozen=True)
class Services:
    """The settings and the long-lived objects built from them."""

    settings: Settings
    store: storage.Storage
    model: Model
    widget_keys: KeyRing
    admin_keys: KeyRing
    allowed_origins: AllowedOrigins
    open_requests: OpenRequests
    dashboard_cookies: DashboardCookies


def of(app: Flask) -> Services:
    """The services of app."""
    return app.extensions[EXTENSION]


def current() -> Services:
    """The services of the app handling the current request or command."""
    return current_app.extensions[EXTENSION]
