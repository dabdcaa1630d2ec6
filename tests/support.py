"""What the tests share besides fixtures: the keys they configure, request helpers, and the
processes they start (a Redis server of their own, gunicorn as the Procfile starts it), all from
the runtime-only virtualenv where a user's process would run."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import redis

import embedded_redis
from tests.loopback import answers_ok, free_port, wait_until

__all__ = [
    "ADMIN_KEY",
    "ADMIN_KEY_2",
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "require_chromium",
    "ROOT",
    "RUNTIME_BIN",
    "RUNTIME_PYTHON",
    "SECRET_KEY",
    "WIDGET_KEY",
    "WIDGET_KEY_2",
    "Gunicorn",
    "RedisServer",
    "admin_headers",
    "answers_ok",
    "chat_headers",
    "chat_turn",
    "deployment_env",
    "free_port",
    "post_chat",
    "rss_kib",
    "tcp_connections",
    "wait_until",
]

ROOT = Path(__file__).resolve().parent.parent
# Debian's Chromium: Playwright never downloads a browser here (see the `browser` fixture).
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


def require_chromium() -> None:
    """Skip the calling test without Debian's Chromium, or fail it when CI is set (.ci/run
    installs Chromium, so CI must never pass by skipping the browser tests)."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests, but {CHROMIUM} is missing (.ci/run installs it)")
        pytest.skip(f"no Chromium at {CHROMIUM}: `apt-get install chromium` to run the browser tests")


def _runtime_bin() -> Path:
    """bin/ of the virtualenv that holds requirements.txt only (scripts/runtime-venv.sh).

    Every process a test starts the way a user does (gunicorn under the Procfile's command, the
    ops CLI, the launcher) runs from it, never from the test tools' environment: a runtime
    package that only a test tool brings in must not make a test pass.
    """
    venv = Path(os.environ.get("RUNTIME_VENV", ROOT / ".venv-runtime"))
    if not (venv / "bin" / "gunicorn").exists():
        pytest.exit(
            f"No runtime-only virtualenv at {venv}: run scripts/test.sh, or "
            f"`bash scripts/runtime-venv.sh {venv}` first",
            returncode=4,
        )
    return venv / "bin"


RUNTIME_BIN = _runtime_bin()
RUNTIME_PYTHON = str(RUNTIME_BIN / "python")

WIDGET_KEY = "widget-key-0123456789abcdef"
WIDGET_KEY_2 = "widget-key-rotated-9876543210"
ADMIN_KEY = "admin-key-0123456789abcdefgh"
ADMIN_KEY_2 = "admin-key-rotated-9876543210xy"
SECRET_KEY = "test-secret-key-signs-dashboard-sessions-0123"


class RedisServer:
    """A redis-server process of our own on a free loopback port."""

    def __init__(self, directory: Path, *extra: str):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = directory
        self.extra = extra
        self.start()

    def start(self):
        self.process = subprocess.Popen(
            [
                embedded_redis.server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--dir",
                str(self.directory),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        assert wait_until(lambda: _pings(client)), "test Redis did not start"

    def stop(self):
        self.process.kill()
        self.process.wait()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)


def rss_kib(pid: int) -> int:
    """Resident memory of a process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError(f"no VmRSS for {pid}")


def tcp_connections(pid: int) -> list[tuple[int, int]]:
    """(local port, remote port) of every TCP connection a process holds open, in any state
    but LISTEN (so a leaked socket waiting in CLOSE_WAIT counts). IPv4 loopback only."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:  # closed while we looked
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    connections = []
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        _, local, remote, state, *_, inode = line.split()[:10]
        if inode in inodes and state != "0A":  # 0A: LISTEN
            connections.append((int(local.split(":")[1], 16), int(remote.split(":")[1], 16)))
    return connections


def _pings(client) -> bool:
    try:
        return client.ping()
    except redis.RedisError:
        return False


def deployment_env(redis_url: str, upstream_url: str, data_dir: Path) -> dict:
    """Environment of a correctly configured production deployment for tests."""
    return {
        "APP_ENV": "production",
        "WIDGET_API_KEY": WIDGET_KEY,
        "ADMIN_API_KEY": ADMIN_KEY,
        "REDIS_URL": redis_url,
        "OPENAI_API_KEY": "sk-test-upstream-key",
        "OPENAI_BASE_URL": upstream_url,
        "CORS_ORIGIN": "https://allowed.example",
        "RATE_LIMIT_MAX_REQUESTS": "1000",
        "DATA_DIR": str(data_dir),
        "SECRET_KEY": SECRET_KEY,
    }


def chat_headers(key=WIDGET_KEY, **extra):
    return {"X-Widget-Api-Key": key, **extra}


def admin_headers(key=ADMIN_KEY):
    return {"X-Admin-Api-Key": key}


def found(match: re.Match[str] | None, group: int = 1) -> str:
    """The group of a regular expression's match; the test fails (not an AttributeError) when
    nothing matched."""
    assert match is not None, "the expected text is not there"
    return match.group(group)


def post_chat(
    client, session: str = "s-1", message: str = "Hi", path: str = "/v1/chat", key: str = WIDGET_KEY, **options
):
    """One chat request with the widget key through a Flask test client (or a requests.Session);
    the response. options go to client.post (e.g. buffered=True)."""
    return client.post(path, json={"sessionId": session, "message": message}, headers=chat_headers(key), **options)


def chat_turn(client, session: str = "s-1", message: str = "Hi", path: str = "/v1/chat") -> str:
    """One answered turn through a Flask test client; its conversation id. Fails the test unless
    the turn is answered 200."""
    response = post_chat(client, session, message, path)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["conversationId"]


class Gunicorn:
    """`gunicorn wsgi:app` started exactly as the Procfile says, on a free port, from the
    runtime-only virtualenv."""

    first_workers: set[int] = set()  # its worker pids at start, when a fixture records them

    def __init__(self, env: dict, log_path: Path, inherit_environment: bool = True):
        """inherit_environment=False starts it with env, PORT and PATH only, as a platform would."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = (ROOT / "Procfile").read_text().split("web:", 1)[1].strip()
        self.log = open(log_path, "wb")
        inherited = os.environ if inherit_environment else {"PATH": os.environ.get("PATH", "")}
        full_env = {**inherited, **env, "PORT": str(self.port)}
        full_env["PATH"] = f"{RUNTIME_BIN}:{full_env.get('PATH', '')}"
        self.process = subprocess.Popen(
            shlex.split(command), cwd=ROOT, env=full_env, stdout=self.log, stderr=subprocess.STDOUT
        )
        self.log_path = log_path

    def wait_ready(self, timeout=30):
        assert wait_until(lambda: answers_ok(self.url + "/health"), timeout), (
            f"gunicorn did not start:\n{self.output()}"
        )
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> set[int]:
        """The master's child processes: its workers (a replaced worker gets a new pid)."""
        tasks = Path(f"/proc/{self.process.pid}/task").iterdir()
        return {int(pid) for task in tasks for pid in (task / "children").read_text().split()}

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
