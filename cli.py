"""The ops command line: `flask --app app ocw <command>`, or `python cli.py <command>`.

Both run the same commands. `flask --app app` builds the app before it looks at the command,
so it needs a valid configuration; `python cli.py` builds it only when a command needs it, so
`keygen` works before anything is configured and `check` reports a bad configuration as a
failed check instead of a traceback.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import click
from flask import Flask, current_app
from flask.cli import ScriptInfo

import knowledge
import ops
import services
import storage
from chat import SESSION_ID, SESSION_ID_RULE
from config import ConfigError, Settings
from llm import OpenAIClient, UpstreamError, UpstreamStatusError

APP_PATH = Path(__file__).resolve().with_name("app.py")


def the_app() -> Flask:
    """The app of this command: the one Flask's CLI loaded, else one built from the environment."""
    if current_app:
        return current_app._get_current_object()  # type: ignore[attr-defined]  # the proxy's app
    context = click.get_current_context()
    # Under `python cli.py` there is no ScriptInfo: locate the app as `flask --app app.py` would,
    # by its path (app.py imports this module to register the commands).
    info = context.find_object(ScriptInfo) or ScriptInfo(app_import_path=str(APP_PATH))
    try:
        app = info.load_app()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    context.with_resource(app.app_context())
    return app


def the_store() -> storage.Storage:
    return services.of(the_app()).store


def confirm(question: str, yes: bool) -> None:
    """Ask before a deletion unless --yes was given."""
    if not yes:
        click.confirm(question, abort=True)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def valid_session_id(_context, _param, value: str) -> str:
    if not SESSION_ID.fullmatch(value):
        raise click.BadParameter(SESSION_ID_RULE)
    return value


YES = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")


@click.group("ocw")
def ocw():
    """Operate an Open Chat Widget deployment: keys, conversations, erasure, purge, knowledge, checks."""


@ocw.command()
def keygen():
    """Print a new random key (43 characters) for WIDGET_API_KEY, ADMIN_API_KEY or SECRET_KEY."""
    click.echo(secrets.token_urlsafe(32))


# ---- conversations -------------------------------------------------------------------------


@ocw.group()
def conversations():
    """List, show, export and delete stored conversations."""


@conversations.command("list")
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True, help="Conversations per page.")
@click.option("--cursor", help="The cursor printed at the end of the previous page.")
@click.option(
    "--session",
    "session_id",
    callback=lambda c, p, v: v and valid_session_id(c, p, v),
    help="Only the conversation of this sessionId.",
)
def list_conversations(limit: int, cursor: str | None, session_id: str | None):
    """Conversations, most recently updated first: id, last update (UTC), messages, session."""
    conversations = the_store().conversations
    if session_id:
        found = conversations.of_session(session_id)
        summaries, next_cursor = [found] if found else [], None
    else:
        try:
            page = conversations.page(limit, cursor)
        except storage.InvalidCursor:
            raise click.BadParameter("not a cursor printed by this command", param_hint="--cursor") from None
        summaries, next_cursor = page.conversations, page.next_cursor
    for summary in summaries:
        updated = datetime.fromtimestamp(summary["updatedAt"] / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        click.echo(f"{summary['_id']}  {updated}  {summary['messageCount']:>4} messages  {summary['sessionId']}")
    if next_cursor:
        click.echo(f"More: --cursor {next_cursor}")


@conversations.command()
@click.argument("conversation_id")
def show(conversation_id: str):
    """One conversation and its messages, as JSON."""
    found = the_store().conversations.get(conversation_id)
    if found is None:
        raise click.ClickException("Conversation not found")
    summary, messages = found
    click.echo(json.dumps({"conversation": summary, "messages": messages}, indent=2, ensure_ascii=False))


@conversations.command()
@click.option(
    "--updated-since",
    type=click.IntRange(min=0),
    default=0,
    help="Only conversations updated at or after this time (ms since the epoch).",
)
@click.option("--output", "-o", type=click.File("wb"), default="-", help="File to write (default: stdout).")
def export(updated_since: int, output):
    """Every conversation with its messages as NDJSON, like GET /v1/admin/export."""
    count = 0
    for line in ops.export_lines(the_store(), updated_since):
        output.write(line)
        count += 1
    click.echo(f"Exported {count} conversations", err=True)


@conversations.command()
@click.argument("conversation_id")
@YES
def delete(conversation_id: str, yes: bool):
    """Delete one conversation, its messages and its session mapping."""
    the_app()
    confirm(f"Delete conversation {conversation_id}?", yes)
    if not ops.delete_conversation(conversation_id):
        raise click.ClickException("Conversation not found")
    click.echo(f"Deleted conversation {conversation_id}")


# ---- end users and retention ---------------------------------------------------------------


@ocw.group()
def sessions():
    """Data-subject requests about one end user (a sessionId)."""


@sessions.command()
@click.argument("session_id", callback=valid_session_id)
@YES
def erase(session_id: str, yes: bool):
    """Erase everything stored for one sessionId (conversation, mapping, quota counter)."""
    the_app()
    confirm(f"Erase everything stored for session {session_id}?", yes)
    if not ops.erase_session(session_id):
        raise click.ClickException(f"Nothing is stored for session {session_id}")
    click.echo(f"Erased everything stored for session {session_id}")


@ocw.command()
@click.option(
    "--days",
    type=click.FloatRange(min=0, min_open=True),
    required=True,
    help="Delete conversations idle for more than this many days (fractions allowed).",
)
@YES
def purge(days: float, yes: bool):
    """Delete every conversation idle for more than --days days."""
    the_app()
    confirm(f"Delete every conversation idle for more than {days:g} days?", yes)
    click.echo(f"Purged {ops.purge(days)} conversations idle for more than {days:g} days")


# ---- knowledge -----------------------------------------------------------------------------


@ocw.group("knowledge")
def knowledge_group():
    """The documents the bot answers from: add, list, delete."""


@knowledge_group.command("add")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--base-url", help="Link each document to this URL plus its id's path (e.g. https://shop.example/help/).")
def knowledge_add(paths: tuple[Path, ...], base_url: str | None):
    """Store files, or folders of .md, .txt and .html files, as knowledge documents.

    A document's id is its path relative to the folder given (a file given alone: its name),
    with characters other than A-Z a-z 0-9 . _ : - replaced by -, so add a folder the same way
    each time; its title is its first heading (HTML: its <title>; text: a short first line),
    else its file name. Adding a file again replaces it; a file removed from the folder stays
    stored until `knowledge delete`. With --base-url, replies link each document to
    BASE_URL + its path relative to the folder.
    """
    the_app()
    files = [(path, path.name) for path in paths if path.is_file()]
    for folder in (path for path in paths if path.is_dir()):
        found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in knowledge.FILE_FORMATS)
        if not found:
            click.echo(f"No .md, .markdown, .txt, .html or .htm files under {folder}", err=True)
        files += [(p, p.relative_to(folder).as_posix()) for p in found]
    if not files:
        raise click.ClickException("Nothing to add")
    failed = 0
    for path, name in files:
        url = f"{base_url.rstrip('/')}/{name}" if base_url else None
        try:
            document = knowledge.from_file(name, path.read_bytes(), url)
            chunks = ops.put_document(document)
        except knowledge.InvalidDocument as exc:
            failed += 1
            click.echo(f"FAIL {path}: " + "; ".join(f"{k} {v}" for k, v in exc.details.items()), err=True)
        except UpstreamError as exc:
            failed += 1
            click.echo(f"FAIL {path}: embeddings failed: {exc.detail}", err=True)
        else:
            click.echo(f"{document.id}  {plural(chunks, 'chunk')}  {document.title}")
    if failed:
        raise click.ClickException(f"{failed} of {len(files)} files were not stored")


@knowledge_group.command("list")
def knowledge_list():
    """Every knowledge document: id, chunks, last update (UTC), title."""
    store = the_store()
    cursor = None
    while True:
        documents, cursor = store.knowledge.page(200, cursor)
        width = max((len(document["id"]) for document in documents), default=0)
        for document in documents:
            updated = datetime.fromtimestamp(document["updatedAt"] / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            chunks = plural(document["chunks"], "chunk")
            click.echo(f"{document['id']:<{width}}  {chunks:>11}  {updated}  {document['title']}")
        if cursor is None:
            return


@knowledge_group.command("delete")
@click.argument("document_id")
@YES
def knowledge_delete(document_id: str, yes: bool):
    """Delete one knowledge document."""
    the_app()
    confirm(f"Delete knowledge document {document_id}?", yes)
    if not knowledge.DOCUMENT_ID.fullmatch(document_id) or not ops.delete_document(document_id):
        raise click.ClickException("Document not found")
    click.echo(f"Deleted knowledge document {document_id}")


# ---- check ---------------------------------------------------------------------------------


@ocw.command()
def check():
    """Check the configuration, Redis and the model upstream; exit 1 if any check fails.

    Prints one line per check and a verdict; never prints a key.
    """
    results: list[bool] = []

    def report(ok: bool, name: str, detail: str) -> None:
        results.append(ok)
        click.echo(f"{'ok  ' if ok else 'FAIL'}  {name}: {detail}")

    try:
        app = the_app()
    except click.ClickException as exc:
        report(False, "configuration", exc.message)
    else:
        settings = services.of(app).settings
        report(True, "configuration", describe(settings))
        for note in notes(settings):
            click.echo(f"note  {note}")
        report(*check_redis(app, settings))
        report(*check_model(app, settings))
        if services.of(app).embedder is not None:
            report(*check_embeddings(app, settings))
    failed = results.count(False)
    if failed:
        click.echo(f"Verdict: {failed} of {len(results)} checks failed")
        raise SystemExit(1)
    click.echo(f"Verdict: all {len(results)} checks passed")


def describe(settings: Settings) -> str:
    retention = f"{settings.retention_ms / storage.DAY_MS:g} days" if settings.retention_ms else "forever"
    model = "offline demo responder" if settings.demo_mode else f"{settings.openai_model} at {settings.openai_base_url}"
    return f"{settings.env}; model {model}; conversations kept {retention}"


def notes(settings: Settings) -> list[str]:
    """Settings that are valid but often a mistake."""
    found = []
    if not settings.cors_origins:
        found.append("CORS_ORIGIN is unset: no other site can embed the widget")
    if not settings.admin_keys:
        found.append("ADMIN_API_KEY is unset: the admin API and /metrics answer 503")
    if settings.production and not settings.trusted_proxy_count:
        found.append("TRUSTED_PROXY_COUNT is 0: behind a proxy (Heroku: 1) every client shares one rate limit")
    return found


def check_redis(app: Flask, settings: Settings) -> tuple[bool, str, str]:
    where = redacted(settings.redis_url) if settings.redis_url else f"embedded server in {settings.data_dir}"
    try:
        services.of(app).store.ping()
        documents = services.of(app).store.knowledge.count()
    except storage.UNAVAILABLE as exc:
        return False, "redis", f"{where} does not answer ({type(exc).__name__}: {exc})"
    return True, "redis", f"{where} answers; {plural(documents, 'knowledge document')}"


def check_embeddings(app: Flask, settings: Settings) -> tuple[bool, str, str]:
    """EMBEDDING_MODEL answers: one embedding of one word (a fraction of a cent)."""
    embedder = services.of(app).embedder
    assert embedder is not None  # asked only when EMBEDDING_MODEL is set
    try:
        (vector,) = embedder.embed(["check"])
    except UpstreamError as exc:
        return False, "embeddings", f"{settings.embedding_model} failed: {exc.detail}"
    return True, "embeddings", f"{settings.embedding_model} answers ({len(vector)} dimensions)"


def check_model(app: Flask, settings: Settings) -> tuple[bool, str, str]:
    """The model answers: the upstream lists OPENAI_MODEL (no tokens spent), or, where it does
    not (some servers list only some models, some have no list), a one-token completion works.
    A failure names the upstream's own reason."""
    if settings.demo_mode:
        return True, "model", "no OPENAI_API_KEY in development: replies come from the offline demo responder"
    model = services.of(app).model
    assert isinstance(model, OpenAIClient)  # the demo responder was answered above
    try:
        listed = settings.openai_model in model.list_models()
    except UpstreamStatusError as exc:
        if exc.upstream_status not in (404, 405, 501):
            return False, "model", f"GET {settings.openai_base_url}/models failed: {exc.detail}"
        listed = False  # no model list here: the completion below decides
    except UpstreamError as exc:
        return False, "model", f"GET {settings.openai_base_url}/models failed: {exc.detail}"
    if listed:
        return True, "model", f"{settings.openai_base_url} answers with the key; {settings.openai_model} listed"
    try:
        model.complete([{"role": "user", "content": "Reply with OK."}], max_tokens=1)
    except UpstreamError as exc:
        return False, "model", f"a one-token completion with {settings.openai_model} failed: {exc.detail}"
    return (
        True,
        "model",
        (
            f"{settings.openai_base_url} answers with the key; {settings.openai_model} is not "
            "listed but answered a one-token completion"
        ),
    )


def redacted(url: str) -> str:
    """url without its credentials (Heroku's REDIS_URL carries the password)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


if __name__ == "__main__":
    ocw()
