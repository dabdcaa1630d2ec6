"""The application factory: settings, the services built from them, and the blueprints."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from flask import Flask

import auth
import cli
import connections
import cors
import dashboard
import embedded_redis
import errors
import llm
import logs
import requestlog
import services
import storage
from admin import admin
from chat import chat
from config import Settings, load_settings
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
    app.extensions[services.EXTENSION] = build_services(settings, app.logger)

    # Hooks run in registration order: the request id first, so every refusal is logged with one.
    requestlog.init_app(app)
    connections.init_app(app)
    errors.init_app(app)
    cors.init_app(app)
    app.register_blueprint(public)
    app.register_blueprint(chat)
    app.register_blueprint(admin)
    app.register_blueprint(dashboard.dashboard)
    app.cli.add_command(cli.ocw)
    return app


def build_services(settings: Settings, logger: logging.Logger) -> services.Services:
    """Everything the requests share, built once per process; the embedded Redis is started
    when REDIS_URL is unset."""
    redis_url = settings.redis_url or embedded_redis.ensure_running(settings.data_dir, settings.env)
    client = storage.connect(redis_url, tls_verify=settings.redis_tls_verify)
    return services.Services(
        settings=settings,
        store=storage.Storage(client, settings.redis_prefix, retention_ms=settings.retention_ms),
        model=llm.from_settings(settings, logger),
        widget_keys=auth.KeyRing(settings.widget_keys),
        admin_keys=auth.KeyRing(settings.admin_keys),
        allowed_origins=cors.AllowedOrigins(settings.cors_origins),
        open_requests=connections.OpenRequests(),
        dashboard_cookies=dashboard.DashboardCookies(dashboard.session_secret(settings), settings.admin_keys),
    )
