"""Deploy smoke test, run by .ci/run before the test suite with the Python of a virtualenv that
holds requirements.txt only (scripts/deploy-smoke.sh makes it).

Starts the Procfile's `web:` command as a platform would (only the platform's environment,
APP_ENV=production, a real Redis, the test upstream), plays one `POST /v1/chat` and one
`POST /v1/chat/stream` turn, then sends SIGTERM and expects a clean exit. Exits non-zero, with
the server's output, on any failure.
"""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import embedded_redis  # noqa: E402  (needs ROOT on the path)
from tests.fake_upstream import FakeUpstream  # noqa: E402  (standard library only)
from tests.loopback import answers_ok, free_port, wait_until  # noqa: E402  (standard library and requests)

WIDGET_KEY = "smoke-widget-key-0123456789abcdef"
ADMIN_KEY = "smoke-admin-key-0123456789abcdefgh"


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="deploy-smoke-"))
    redis_port, port = free_port(), free_port()
    redis_server = subprocess.Popen(
        [
            embedded_redis.server_binary(),
            "--port",
            str(redis_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
    )
    upstream = FakeUpstream()
    env = {  # what a platform gives the process: its config vars, PORT and PATH, nothing else
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(workdir),
        "PORT": str(port),
        "APP_ENV": "production",
        "WIDGET_API_KEY": WIDGET_KEY,
        "ADMIN_API_KEY": ADMIN_KEY,
        "SECRET_KEY": "smoke-secret-key-signs-dashboard-sessions",
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "OPENAI_API_KEY": "sk-smoke",
        "OPENAI_BASE_URL": upstream.url,
        "CORS_ORIGIN": "https://www.example.com",
    }
    command = (ROOT / "Procfile").read_text().split("web:", 1)[1].strip()
    log_path = workdir / "web.log"
    with open(log_path, "wb") as log:
        web = subprocess.Popen(shlex.split(command), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    failures = []
    try:
        if not wait_until(lambda: answers_ok(url + "/ready"), 60):
            failures.append("the web process did not become ready")
        else:
            headers = {"X-Widget-Api-Key": WIDGET_KEY}
            reply = requests.post(
                url + "/v1/chat", json={"sessionId": "smoke", "message": "hi"}, headers=headers, timeout=30
            )
            if reply.status_code != 200 or reply.json().get("message") != upstream.reply:
                failures.append(f"POST /v1/chat: {reply.status_code} {reply.text[:200]}")
            stream = requests.post(
                url + "/v1/chat/stream", json={"sessionId": "smoke", "message": "again"}, headers=headers, timeout=30
            )
            events = [json.loads(line) for line in stream.text.splitlines() if line]
            if stream.status_code != 200 or not events or events[-1].get("type") != "done":
                failures.append(f"POST /v1/chat/stream: {stream.status_code} {stream.text[:300]}")
        web.send_signal(signal.SIGTERM)
        try:
            code = web.wait(timeout=40)
            if code != 0:
                failures.append(f"exit status {code} after SIGTERM")
        except subprocess.TimeoutExpired:
            failures.append("still running 40 s after SIGTERM")
    finally:
        if web.poll() is None:
            web.kill()
        redis_server.kill()
        upstream.close()
    output = log_path.read_text(errors="replace")
    if "Traceback" in output:
        failures.append("a traceback in the output")
    if failures:
        print("Deploy smoke test FAILED:\n  " + "\n  ".join(failures) + "\n--- web output ---\n" + output)
        return 1
    print("Deploy smoke test passed: Procfile web process served /v1/chat and /v1/chat/stream, exited 0 on SIGTERM")
    return 0


if __name__ == "__main__":
    sys.exit(main())
