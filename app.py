"""The application factory: settings, the objects built from them (each module's init_app), hooks and blueprints."""

from __future__ import annotations

import os
from collections.abc import Mapping

from flask import Flask

import auth
import cli
import connections
import cors
import dashboard
import errors
import logs
import requestlog
import services
from admin import admin
from chat import chat
from config import load_settings
from public import public

# Anything larger is refused before a view reads it (the chat routes allow far less: chat.py).
MAX_BODY_BYTES = 2 * 1024 * 1024


def create_app(config: Mapping[str, str] | None = None) -> Flask:
    """Build the app from the environment; `config` overrides environment variables (tests).

    Raises config.ConfigError naming every invalid variable.
    """
    settings = load_settings({**os.environ, **(config or {})})
    app = Flask(__name__, static_folder=None)
    # werkzeug would answer "//x" and "/x/" with a redirect to an absolute URL built from the
    # request's Host header (and an HTML page): no route redirects, so a forged Host leads nowhere.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY_BYTES)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # the default provider has it
    if settings.trusted_proxy_count:
        app.wsgi_app = auth.TrustedProxies(  # type: ignore[method-assign]
            app.wsgi_app, settings.trusted_proxy_count, settings.trusted_proxy_networks
        )
    logs.configure(app.logger, settings.log_format)
    services.init_app(app, settings)
    auth.init_app(app)

    # Hooks run in registration order: the request id first, so every refusal is logged with one.
    requestlog.init_app(app)
    connections.init_app(app)
    errors.init_app(app)
    cors.init_app(app)
    app.register_blueprint(public)
    app.register_blueprint(chat)
    app.register_blueprint(admin)
    dashboard.init_app(app)
    app.cli.add_command(cli.ocw)
    return app
