"""Heroku one-click deploy: app.json, .python-version, and Redis over TLS with a self-signed
certificate (as Heroku Redis serves it)."""

from __future__ import annotations

import json
import re
import secrets
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
import redis
import requests

import storage
from tests.support import ROOT, RUNTIME_PYTHON, Gunicorn

APP_JSON = json.loads((ROOT / "app.json").read_text())
# tests/tls/self-signed.pem: a throwaway key and self-signed certificate (CN redis.test.invalid,
# made with `openssl req -x509 -newkey rsa:2048 -nodes -days 36500`), for tests only.
SELF_SIGNED = ROOT / "tests" / "tls" / "self-signed.pem"


def app_json_environment(redis_url: str) -> dict:
    """The config vars Heroku sets from app.json: generated secrets (Heroku's generator makes 64
    hex characters), the given values, what the user must fill in, and the add-on's REDIS_URL."""
    filled_in_by_the_user = {"OPENAI_API_KEY": "sk-user-supplied-key", "CORS_ORIGIN": "https://www.example.com"}
    env = {"REDIS_URL": redis_url}
    for name, spec in APP_JSON["env"].items():
        if spec.get("generator") == "secret":
            env[name] = secrets.token_hex(32)
        elif "value" in spec:
            env[name] = spec["value"]
        elif spec.get("required", True):
            env[name] = filled_in_by_the_user[name]
    return env


def test_app_json_describes_a_production_deploy_with_generated_keys_and_heroku_redis():
    env = APP_JSON["env"]
    assert env["WIDGET_API_KEY"]["generator"] == "secret" and env["ADMIN_API_KEY"]["generator"] == "secret"
    assert env["SECRET_KEY"]["generator"] == "secret"  # required in production with ADMIN_API_KEY
    assert env["APP_ENV"]["value"] == "production"
    assert env["TRUSTED_PROXY_COUNT"]["value"] == "1"
    assert env["REDIS_TLS_VERIFY"]["value"] == "false"
    for name in ("OPENAI_API_KEY", "CORS_ORIGIN"):
        assert env[name].get("required", True) is True and "value" not in env[name], name  # Heroku asks for them
    assert any(addon.startswith("heroku-redis") for addon in APP_JSON["addons"])
    assert APP_JSON["formation"]["web"]["quantity"] >= 1
    assert APP_JSON["name"] and APP_JSON["description"]


def test_every_variable_of_app_json_is_documented_in_the_configuration_reference():
    reference = (ROOT / "docs" / "CONFIGURATION.md").read_text()
    for name in APP_JSON["env"]:
        assert f"| `{name}` |" in reference, name


def test_python_version_file_names_a_supported_python():
    assert (ROOT / ".python-version").read_text().strip() == "3.11"


def test_the_app_boots_with_exactly_the_environment_app_json_describes(redis_server, redis_client, tmp_path):
    env = app_json_environment(redis_server.url)
    server = Gunicorn(env, tmp_path / "heroku.log", inherit_environment=False)
    try:
        server.wait_ready()
        ready = requests.get(server.url + "/ready", timeout=10)
        assert ready.status_code == 200 and ready.json() == {"status": "ok"}
        assert ready.headers["Strict-Transport-Security"]  # APP_ENV=production
        stats = requests.get(
            server.url + "/v1/admin/stats", headers={"Authorization": f"Bearer {env['ADMIN_API_KEY']}"}, timeout=10
        )
        assert stats.status_code == 200  # the generated admin key is accepted
        assert env["WIDGET_API_KEY"] not in server.output() and env["ADMIN_API_KEY"] not in server.output()
    finally:
        server.stop()


# ---- Redis over TLS (REDIS_TLS_VERIFY) -----------------------------------------------------


@pytest.mark.parametrize(
    "url, verify, cert_checks_off",
    [
        ("rediss://redis.example:6380/0", False, True),
        ("rediss://redis.example:6380/0", True, False),
        ("redis://redis.example:6379/0", False, False),
        ("redis://redis.example:6379/0", True, False),
    ],
)
def test_certificate_checks_are_off_only_for_rediss_with_verify_false(url, verify, cert_checks_off):
    client = storage.connect(url, tls_verify=verify)
    assert isinstance(client, redis.Redis)
    pool = client.connection_pool
    if cert_checks_off:
        assert pool.connection_kwargs["ssl_cert_reqs"] is None  # redis-py: no certificate check
    else:
        assert "ssl_cert_reqs" not in pool.connection_kwargs  # redis-py's default: "required"
    assert issubclass(pool.connection_class, redis.SSLConnection) is url.startswith("rediss://")


class TlsRedis:
    """A TLS endpoint with a self-signed certificate in front of the test Redis, like Heroku Redis."""

    def __init__(self, redis_port: int):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(SELF_SIGNED)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"rediss://127.0.0.1:{self.listener.getsockname()[1]}/0"
        self.redis_port = redis_port
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client = self.listener.accept()[0]
            except OSError:
                return  # closed
            try:
                secure = self.context.wrap_socket(client, server_side=True)
            except (ssl.SSLError, OSError):
                client.close()  # the client refused the certificate
                continue
            backend = socket.create_connection(("127.0.0.1", self.redis_port))
            for source, target in ((secure, backend), (backend, secure)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source, target):
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, target):
                end.close()

    def close(self):
        self.listener.close()


@pytest.fixture
def tls_redis(redis_server, redis_client):
    proxy = TlsRedis(redis_server.port)
    yield proxy
    proxy.close()


def test_rediss_with_a_self_signed_certificate_works_with_verify_false(make_app, tls_redis, upstream):
    client = make_app(REDIS_URL=tls_redis.url, REDIS_TLS_VERIFY="false").test_client()
    assert client.get("/ready").status_code == 200
    chat = client.post(
        "/v1/chat", json={"sessionId": "tls", "message": "hi"}, headers={"X-Api-Key": "widget-key-0123456789abcdef"}
    )
    assert chat.status_code == 200


def test_rediss_with_a_self_signed_certificate_is_refused_by_default(make_app, tls_redis):
    client = make_app(REDIS_URL=tls_redis.url).test_client()
    ready = client.get("/ready")
    assert ready.status_code == 503 and ready.get_json() == {"status": "unavailable"}


# ---- what a deploy installs -----------------------------------------------------------------


def normalized(name: str) -> str:
    """A distribution name as PyPI compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(requirements: Path) -> dict[str, str]:
    """name -> version of every `name[extras]==version` line of a pip-compile output."""
    found = {}
    for line in requirements.read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", line.strip())
        if match:
            found[normalized(match.group(1))] = match.group(2)
    return found


def test_requirements_txt_pins_everything_a_deploy_installs_and_nothing_is_missing():
    frozen = subprocess.run(
        [RUNTIME_PYTHON, "-m", "pip", "freeze", "--all"], capture_output=True, text=True, check=True
    ).stdout
    installed = {
        normalized(name): version
        for name, version in (line.split("==") for line in frozen.splitlines() if "==" in line)
    }
    installed.pop("pip")  # the virtualenv's own installer
    assert installed == pinned(ROOT / "requirements.txt")
    broken = subprocess.run([RUNTIME_PYTHON, "-m", "pip", "check"], capture_output=True, text=True)
    assert broken.returncode == 0, broken.stdout  # every package's own requirements are there
    assert "gunicorn[gevent]==" in (ROOT / "requirements.txt").read_text()  # the extra the gevent worker needs


def test_the_dev_set_uses_the_runtime_pins():
    runtime, dev = pinned(ROOT / "requirements.txt"), pinned(ROOT / "requirements-dev.txt")
    assert {name: dev.get(name) for name in runtime} == runtime


def test_the_heroku_button_deploys_the_repository_it_is_clicked_from():
    readme = (ROOT / "README.md").read_text()
    assert "(https://heroku.com/deploy)" in readme  # no template=: Heroku uses the page the click came from
    assert "OWNER/REPOSITORY" not in readme


def test_production_refuses_the_data_folder_of_a_running_development_server(start_gunicorn, tmp_path):
    """The same checkout's default DATA_DIR: production would share the development server's
    conversations, then answer 503 for good when it stops."""
    data = tmp_path / "shared-data"
    development = start_gunicorn(
        APP_ENV="development",
        REDIS_URL=None,
        DATA_DIR=str(data),
        OPENAI_API_KEY=None,
        CORS_ORIGIN="*",
        WEB_CONCURRENCY="1",
    )
    assert requests.get(development.url + "/ready", timeout=5).status_code == 200
    production = start_gunicorn(wait=False, REDIS_URL=None, DATA_DIR=str(data), WEB_CONCURRENCY="1")
    assert production.process.wait(timeout=30) == 1
    assert "holds the embedded Redis of a running development service" in production.output()
    assert requests.get(development.url + "/ready", timeout=5).status_code == 200  # untouched


def test_the_master_loads_nothing_that_gevent_must_patch_first(start_gunicorn):
    """gunicorn.conf.py runs in the master, before the gevent workers patch ssl and sockets: a
    module that imports ssl there (redis-py, requests) makes every worker warn, and may break TLS."""
    server = start_gunicorn(WEB_CONCURRENCY="2")
    assert requests.get(server.url + "/ready", timeout=5).status_code == 200
    assert "MonkeyPatchWarning" not in server.output()
