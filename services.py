"""What every request uses, built once per process: the settings, the storage, the model and
the knowledge search index.

`app.extensions["ocw"]` holds one Services; views reach it through current(), tests and the
server hooks through of(app). The modules with objects of their own (auth's key rings, cors's
origins, connections' counts, the dashboard's cookie signer) keep them the same way, each
through its own init_app.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

import embedded_redis
import knowledge
import llm
import storage
from config import Settings

EXTENSION = "ocw"


@dataclass(frozen=True)
class Services:
    """The settings and the long-lived objects built from them."""

    settings: Settings
    store: storage.Storage
    model: llm.Model
    # EMBEDDING_MODEL's client (the model's upstream), or None: knowledge is ranked lexically only.
    embedder: llm.OpenAIClient | None
    library: knowledge.Library  # this process's search index over the knowledge documents


def init_app(app: Flask, settings: Settings) -> None:
    """Build the services of app; the embedded Redis is started when REDIS_URL is unset."""
    redis_url = settings.redis_url or embedded_redis.ensure_running(settings.data_dir, settings.env)
    client = storage.connect(redis_url, tls_verify=settings.redis_tls_verify)
    model = llm.from_settings(settings, app.logger)
    app.extensions[EXTENSION] = Services(
        settings=settings,
        store=storage.Storage(client, settings.redis_prefix, retention_ms=settings.retention_ms),
        model=model,
        embedder=model if isinstance(model, llm.OpenAIClient) and settings.embedding_model else None,
        library=knowledge.Library(),
    )


def of(app: Flask) -> Services:
    """The services of app."""
    return app.extensions[EXTENSION]


def current() -> Services:
    """The services of the app handling the current request or command."""
    return current_app.extensions[EXTENSION]
