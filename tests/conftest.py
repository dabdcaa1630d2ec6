"""Shared fixtures, as flaskr has them: `app`, `client`, `runner`, `store` and a `chat` helper,
over a real Redis server and the fake model upstream; gunicorn runners. Everything else the
tests share (keys, headers, process helpers) is in tests/support.py."""

from __future__ import annotations

from functools import partial

import pytest

import services
from app import create_app
from tests.browser import HostSite
from tests.fake_upstream import FakeUpstream
from tests.support import CHROMIUM, CHROMIUM_ARGS, Gunicorn, RedisServer, chat_turn, deployment_env, require_chromium


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server):
    """A client of the test Redis, emptied before each test."""
    client = redis_server.client()
    client.flushall()
    return client


@pytest.fixture(scope="session")
def upstream_server():
    server = FakeUpstream()
    yield server
    server.close()


@pytest.fixture
def upstream(upstream_server):
    upstream_server.reset()
    yield upstream_server
    upstream_server.release.set()


@pytest.fixture
def base_env(redis_server, redis_client, upstream, tmp_path):
    """deployment_env for one test: Redis emptied and the upstream reset first."""
    return deployment_env(redis_server.url, upstream.url, tmp_path / "data")


@pytest.fixture
def make_app(base_env):
    """Build an app with base_env plus overrides (None removes a variable)."""

    def build(**overrides):
        env = {**base_env, **overrides}
        return create_app({k: v for k, v in env.items() if v is not None} | _unset(overrides))

    return build


def _unset(overrides):
    # create_app merges over os.environ; an empty string reads as unset.
    return {k: "" for k, v in overrides.items() if v is None}


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    """The app's CLI runner (`flask --app app ocw ...` in process)."""
    return app.test_cli_runner()


@pytest.fixture
def store(app):
    """The app's storage.Storage, to arrange and inspect what Redis holds."""
    return services.of(app).store


@pytest.fixture
def chat(client):
    """chat(session="s-1", message="Hi", path="/v1/chat") sends one turn through `client` and
    returns its conversation id; the test fails unless it is answered 200."""
    return partial(chat_turn, client)


@pytest.fixture
def start_gunicorn(base_env, tmp_path):
    """Start gunicorn with base_env plus overrides; stopped after the test."""
    started: list[Gunicorn] = []

    def start(wait=True, **overrides):
        env = {**base_env, "WEB_CONCURRENCY": "3", **overrides}
        server = Gunicorn({k: v for k, v in env.items() if v is not None}, tmp_path / f"gunicorn-{len(started)}.log")
        started.append(server)
        return server.wait_ready() if wait else server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def module_gunicorn(redis_server, upstream_server, tmp_path_factory):
    """One gunicorn (two workers, rate limit out of the way) for a whole test module.

    `first_workers` holds its worker pids at start, so tests can check that none was lost.
    """
    directory = tmp_path_factory.mktemp("gunicorn")
    env = {
        **deployment_env(redis_server.url, upstream_server.url, directory / "data"),
        "WEB_CONCURRENCY": "2",
        "RATE_LIMIT_MAX_REQUESTS": "1000000",
    }
    server = Gunicorn(env, directory / "gunicorn.log")
    try:
        server.wait_ready()
        server.first_workers = server.worker_pids()
        yield server
    finally:
        server.stop()


# ---- the browser tests: Chromium, a host site, the widget's API ---------------------------


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright, one per test module. Not one per session: the
    sync driver runs an asyncio loop in this thread while it lives, and the tests that call
    asyncio.run() (test_e2e.py) fail under it; not two at once either (one driver a thread).
    With CI set, a missing Chromium fails the run rather than skipping."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def host_site():
    """A web site on its own origin, so every call the widget makes is cross-origin."""
    site = HostSite()
    yield site
    site.close()


@pytest.fixture(scope="module")
def api(redis_server, upstream_server, host_site, tmp_path_factory):
    """The widget's API for a test module: one gunicorn for every test that needs no special
    settings. Each test is a new visitor (a fresh browser context, so a fresh session id), and
    starting a server per test is slow."""
    folder = tmp_path_factory.mktemp("widget-api")
    env = deployment_env(redis_server.url, upstream_server.url, folder / "data")
    server = Gunicorn({**env, "CORS_ORIGIN": host_site.origin, "WEB_CONCURRENCY": "2"}, folder / "gunicorn.log")
    yield server.wait_ready()
    server.stop()


@pytest.fixture
def start_api(start_gunicorn, host_site):
    """A gunicorn of the test's own, with special settings, that lets the host site's origin in."""

    def start(**overrides):
        return start_gunicorn(**{"CORS_ORIGIN": host_site.origin, "WEB_CONCURRENCY": "2", **overrides})

    return start


@pytest.fixture
def context(browser, start_gunicorn):
    # Set up after start_gunicorn, so closed before the test's own servers stop: gunicorn would
    # otherwise spend its graceful timeout on the browser's idle keep-alive connections.
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    yield context
    context.close()


@pytest.fixture
def page(context):
    """A tab of a fresh browser context: each test is a new visitor with an empty localStorage."""
    return context.new_page()
