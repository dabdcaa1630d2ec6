"""The service against an OpenAI-compatible server nobody here wrote: LiteLLM's proxy, serving a
`mock_response` model offline (tests/peers/litellm.yaml), from its own virtualenv
(scripts/litellm-venv.sh, which .ci/run runs). Whole and streamed turns, a model the proxy does
not know, and `cli.py check`, all through real HTTP and the real gunicorn.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import requests

from tests.support import ROOT, RUNTIME_PYTHON, WIDGET_KEY, answers_ok, free_port, wait_until

VENV = ROOT / ".venv-litellm"
MASTER_KEY = "sk-litellm-test-master-key"  # tests/peers/litellm.yaml
MOCK_REPLY = "Hello from the LiteLLM proxy, an OpenAI-compatible server."
CHAT = {"X-Widget-Api-Key": WIDGET_KEY}


@pytest.fixture(scope="module")
def litellm(tmp_path_factory):
    """LiteLLM's proxy on a free loopback port; its base URL."""
    if not (VENV / "bin" / "litellm").exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the LiteLLM test, but {VENV} is missing (.ci/run makes it)")
        pytest.skip("no LiteLLM proxy: run `bash scripts/litellm-venv.sh` first")
    port = free_port()
    log = tmp_path_factory.mktemp("litellm") / "proxy.log"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(log.parent),
        # Offline: the bundled model cost map, no telemetry, no database, no schema migration.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY_DISABLED": "true",
        "LITELLM_DONT_SHOW_FEEDBACK_BOX": "true",
        "DISABLE_SCHEMA_UPDATE": "true",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [
                str(VENV / "bin" / "litellm"),
                "--config",
                str(ROOT / "tests" / "peers" / "litellm.yaml"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: answers_ok(url + "/health/liveliness"), timeout=90), log.read_text(errors="replace")[
            -3000:
        ]
        yield url + "/v1"
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def service(start_gunicorn, litellm):
    return start_gunicorn(
        OPENAI_BASE_URL=litellm, OPENAI_API_KEY=MASTER_KEY, OPENAI_MODEL="mock-gpt", WEB_CONCURRENCY="1"
    )


def test_a_whole_turn_through_the_litellm_proxy(service):
    answer = requests.post(
        service.url + "/v1/chat", json={"sessionId": "peer", "message": "hi"}, headers=CHAT, timeout=30
    )
    assert answer.status_code == 200 and answer.json()["message"] == MOCK_REPLY
    assert "finishReason" not in answer.json()


def test_a_streamed_turn_through_the_litellm_proxy(service):
    streamed = requests.post(
        service.url + "/v1/chat/stream", json={"sessionId": "peer-s", "message": "hi"}, headers=CHAT, timeout=30
    )
    events = [json.loads(line) for line in streamed.text.splitlines()]
    tokens = [e["token"] for e in events if e["type"] == "token"]
    assert events[0]["type"] == "start" and events[-1]["type"] == "done", events
    assert len(tokens) > 1 and "".join(tokens) == MOCK_REPLY == events[-1]["message"]
    assert "finishReason" not in events[-1]
    assert "Skipped" not in service.output() and "Model call failed" not in service.output()


def test_a_model_the_proxy_does_not_serve_is_a_clear_failure(start_gunicorn, litellm):
    server = start_gunicorn(
        OPENAI_BASE_URL=litellm, OPENAI_API_KEY=MASTER_KEY, OPENAI_MODEL="not-configured", WEB_CONCURRENCY="1"
    )
    answer = requests.post(
        server.url + "/v1/chat", json={"sessionId": "peer-x", "message": "hi"}, headers=CHAT, timeout=60
    )
    assert answer.status_code == 502 and answer.json() == {"error": "The assistant is not available right now."}
    assert wait_until(lambda: "Model call failed: " in server.output(), timeout=5)
    assert MASTER_KEY not in server.output()


def test_cli_check_passes_against_the_litellm_proxy(base_env, litellm):
    env = {
        **base_env,
        "OPENAI_BASE_URL": litellm,
        "OPENAI_API_KEY": MASTER_KEY,
        "OPENAI_MODEL": "mock-gpt",
        "PATH": os.environ["PATH"],
    }
    result = subprocess.run(
        [RUNTIME_PYTHON, "cli.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mock-gpt listed" in result.stdout and MASTER_KEY not in result.stdout
