"""The development launcher, as a newcomer meets it: `devserver.py` (what scripts/dev.sh runs)
from the runtime-only virtualenv, its banner, the demo page, and the ops command line beside it
(scripts/ops.sh)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import requests

from tests.support import ROOT, RUNTIME_PYTHON, answers_ok, found, free_port, wait_until


@pytest.fixture
def devserver(tmp_path):
    """devserver.py on a free port with an empty HOME and no keys set; yields (url, env, banner)."""
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "PORT": str(port),
        "DATA_DIR": str(tmp_path / "data"),
        "WEB_CONCURRENCY": "1",
    }
    log = tmp_path / "devserver.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [RUNTIME_PYTHON, "devserver.py"], cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: answers_ok(url + "/health"), 30), log.read_text()
        yield url, env, log.read_text()
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_launcher_starts_with_nothing_configured_and_serves_the_demo_page_and_icon(devserver):
    url, env, _ = devserver
    page = requests.get(url + "/", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "chat-widget.js" in page.text
    icon = requests.get(url + "/favicon.ico", timeout=10)
    assert icon.status_code == 200 and icon.content[:4] == b"\x00\x00\x01\x00"  # an ICO header
    assert list(Path(env["HOME"]).iterdir()) == []  # nothing written to HOME (no gunicorn control socket)


def test_the_banners_curl_example_works_as_pasted(devserver):
    url, env, banner = devserver
    command = found(re.search(r"Try: (curl .*)", banner), 1)
    command = command.replace(f"http://localhost:{env['PORT']}", url)  # the same server, by address
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[0]["type"] == "start" and events[-1]["type"] == "done", result.stdout + result.stderr


def test_the_ops_command_line_beside_the_launcher_needs_no_exported_keys(devserver):
    url, env, banner = devserver
    widget_key = found(re.search(r"WIDGET_API_KEY=(\S+)", banner), 1)
    chat = requests.post(
        url + "/v1/chat",
        json={"sessionId": "from-the-demo", "message": "hi"},
        headers={"X-Widget-Api-Key": widget_key},
        timeout=30,
    )
    assert chat.status_code == 200
    ops = {k: v for k, v in env.items() if k != "PORT"}
    listed = subprocess.run(
        ["bash", "scripts/ops.sh", "conversations", "list"],
        cwd=ROOT,
        env=ops,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert "from-the-demo" in listed.stdout
    checked = subprocess.run(
        [RUNTIME_PYTHON, "devserver.py", "ops", "check"], cwd=ROOT, env=ops, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0 and "all" in checked.stdout and "checks passed" in checked.stdout, checked.stdout
    assert widget_key not in listed.stdout + listed.stderr + checked.stdout + checked.stderr


def test_a_setting_that_cannot_work_stops_the_launcher_before_its_banner(tmp_path):
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "PORT": str(free_port()),
        "DATA_DIR": str(tmp_path / "data"),
        "CORS_ORIGIN": "https://shop.example.com/path",
    }
    result = subprocess.run(
        [RUNTIME_PYTHON, "devserver.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "CORS_ORIGIN" in result.stderr and "Try: curl" not in result.stdout
