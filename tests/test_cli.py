"""The ops CLI (`flask --app app ocw ...` and `python cli.py ...`): every command and its --help."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

import services
from config import load_settings
from tests.support import ADMIN_KEY, ROOT, RUNTIME_PYTHON, WIDGET_KEY, chat_headers, chat_turn, free_port

COMMANDS = [
    [],
    ["keygen"],
    ["conversations"],
    ["conversations", "list"],
    ["conversations", "show"],
    ["conversations", "export"],
    ["conversations", "delete"],
    ["sessions"],
    ["sessions", "erase"],
    ["purge"],
    ["knowledge"],
    ["knowledge", "add"],
    ["knowledge", "list"],
    ["knowledge", "delete"],
    ["check"],
]


@pytest.fixture
def ocw(runner):
    """Run `ocw <args>` through the app's Flask CLI, as `flask --app app` does."""
    return lambda *args, **kwargs: runner.invoke(args=["ocw", *args], **kwargs)


def run_script(*args, env):
    """`python cli.py <args>` in a fresh process with exactly env (plus PATH)."""
    return subprocess.run(
        [RUNTIME_PYTHON, "cli.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], **env},
    )


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "ocw")
def test_every_command_has_help(ocw, command):
    result = ocw(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and len(result.output.splitlines()) > 3


def test_keygen_prints_a_strong_key_the_configuration_accepts(ocw):
    keys = {ocw("keygen").output.strip() for _ in range(3)}
    assert len(keys) == 3
    for key in keys:
        assert len(key) == 43 and key.replace("-", "").replace("_", "").isalnum()
    widget, admin, secret = sorted(keys)
    settings = load_settings(
        {"WIDGET_API_KEY": widget, "ADMIN_API_KEY": admin, "SECRET_KEY": secret, "OPENAI_API_KEY": "sk"}
    )
    assert settings.widget_keys == (widget,) and settings.secret_key == secret


def test_keygen_works_before_anything_is_configured():
    result = run_script("keygen", env={})
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip()) == 43


# ---- conversations -------------------------------------------------------------------------


def test_list_shows_newest_first_with_session_and_pages_with_a_cursor(app, ocw):
    ids = []
    for i in range(3):
        ids.append(chat_turn(app.test_client(), f"visitor-{i}"))
        time.sleep(0.002)
    first = ocw("conversations", "list", "--limit", "2")
    assert first.exit_code == 0, first.output
    lines = first.output.splitlines()
    assert [line.split()[0] for line in lines[:2]] == [ids[2], ids[1]]
    assert lines[0].endswith("visitor-2") and "2 messages" in lines[0]
    cursor = lines[2].removeprefix("More: --cursor ")
    rest = ocw("conversations", "list", "--limit", "2", "--cursor", cursor).output.splitlines()
    assert [line.split()[0] for line in rest] == [ids[0]]
    assert ocw("conversations", "list", "--session", "visitor-1").output.split()[0] == ids[1]


@pytest.mark.parametrize("args", [["--limit", "0"], ["--limit", "201"], ["--cursor", "nonsense"], ["--session", "a b"]])
def test_list_refuses_bad_options_naming_them(ocw, redis_client, args):
    result = ocw("conversations", "list", *args)
    assert result.exit_code == 2
    assert args[0] in result.output


def test_show_prints_the_conversation_as_json_or_fails_when_unknown(app, ocw):
    conversation_id = chat_turn(app.test_client(), "shown", "what is shown")
    body = json.loads(ocw("conversations", "show", conversation_id).output)
    assert body["conversation"]["_id"] == conversation_id
    assert body["messages"][0]["content"] == "what is shown"
    missing = ocw("conversations", "show", "0123456789abcdef0123456789abcdef")
    assert missing.exit_code == 1 and "Conversation not found" in missing.output


def test_export_writes_ndjson_to_a_file(app, ocw, tmp_path):
    store = services.of(app).store
    store.clock.seconds = lambda: 1_700_000_000
    chat_turn(app.test_client(), "old")
    store.clock.seconds = lambda: 1_700_000_100
    recent = chat_turn(app.test_client(), "recent")
    target = tmp_path / "export.ndjson"
    result = ocw("conversations", "export", "--output", str(target))
    assert result.exit_code == 0 and "Exported 2 conversations" in result.output
    assert [json.loads(line)["conversation"]["sessionId"] for line in target.read_text().splitlines()] == [
        "old",
        "recent",
    ]
    since = ocw("conversations", "export", "--updated-since", "1700000100000")
    assert json.loads(since.stdout.splitlines()[0])["conversation"]["_id"] == recent


def test_delete_asks_first_and_deletes_with_yes(app, ocw):
    conversation_id = chat_turn(app.test_client(), "doomed")
    declined = ocw("conversations", "delete", conversation_id, input="n\n")
    assert declined.exit_code == 1 and "Aborted" in declined.output
    assert services.of(app).store.conversations.get(conversation_id) is not None
    assert ocw("conversations", "delete", conversation_id, "--yes").exit_code == 0
    assert services.of(app).store.conversations.get(conversation_id) is None
    again = ocw("conversations", "delete", conversation_id, "--yes")
    assert again.exit_code == 1 and "Conversation not found" in again.output


# ---- sessions and purge --------------------------------------------------------------------


def test_sessions_erase_removes_everything_of_the_session(app, ocw, redis_client):
    conversation_id = chat_turn(app.test_client(), "data-subject")
    result = ocw("sessions", "erase", "data-subject", input="y\n")
    assert result.exit_code == 0 and "Erased everything stored for session data-subject" in result.output
    assert [key for key in redis_client.keys("*") if "data-subject" in key or conversation_id in key] == []
    again = ocw("sessions", "erase", "data-subject", "--yes")
    assert again.exit_code == 1 and "Nothing is stored" in again.output
    assert ocw("sessions", "erase", "not valid", "--yes").exit_code == 2


def test_purge_deletes_conversations_idle_for_more_than_the_given_days(app, ocw):
    store = services.of(app).store
    now = time.time()
    store.clock.seconds = lambda: now - 10 * 86400
    old = chat_turn(app.test_client(), "old")
    store.clock.seconds = lambda: now - 0.5 * 86400
    recent = chat_turn(app.test_client(), "recent")
    store.clock.seconds = lambda: now
    result = ocw("purge", "--days", "5", "--yes")
    assert result.exit_code == 0 and "Purged 1 conversations idle for more than 5 days" in result.output
    assert store.conversations.get(old) is None and store.conversations.get(recent) is not None
    assert ocw("purge", "--days", "0", "--yes").exit_code == 2
    assert ocw("purge", "--days", "0.25", "--yes").output.startswith("Purged 1 ")


# ---- check ---------------------------------------------------------------------------------


def test_check_passes_against_working_redis_and_upstream_without_printing_keys(ocw, upstream):
    result = ocw("check")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines if not line.startswith(("note", "Verdict"))] == ["ok"] * 3
    assert lines[-1] == "Verdict: all 3 checks passed"
    assert "gpt-4.1-mini listed" in result.output
    assert upstream.model_listings == ["Bearer sk-test-upstream-key"]  # the key was sent, not printed
    for key in (WIDGET_KEY, ADMIN_KEY, "sk-test-upstream-key"):
        assert key not in result.output


def test_check_fails_when_redis_does_not_answer(make_app):
    app = make_app(REDIS_URL=f"redis://:hunter2-password@127.0.0.1:{free_port()}/0")
    result = app.test_cli_runner().invoke(args=["ocw", "check"])
    assert result.exit_code == 1
    assert "FAIL  redis:" in result.output and "Verdict: 1 of 3 checks failed" in result.output
    assert "hunter2" not in result.output


@pytest.mark.parametrize("status, cause", [(401, "refused this service's key"), (500, "the model server failed")])
def test_check_fails_with_the_upstreams_reason_when_the_model_upstream_refuses(ocw, upstream, status, cause):
    upstream.fault, upstream.status = "status", status
    result = ocw("check")
    assert result.exit_code == 1
    assert f"FAIL  model: GET {upstream.url}/models failed: " in result.output
    assert cause in result.output and f"(HTTP {status}: fault)" in result.output


def test_check_fails_when_the_upstream_does_not_know_the_model(make_app, upstream):
    upstream.strict_models = True
    app = make_app(OPENAI_MODEL="gpt-nonexistent")
    result = app.test_cli_runner().invoke(args=["ocw", "check"])
    assert result.exit_code == 1, result.output
    assert (
        "FAIL  model: a one-token completion with gpt-nonexistent failed: the model server does not know "
        "OPENAI_MODEL='gpt-nonexistent' (HTTP 404: The model `gpt-nonexistent` does not exist)" in result.output
    )
    chat = app.test_client().post("/v1/chat", json={"sessionId": "s", "message": "hi"}, headers=chat_headers())
    assert chat.status_code == 502  # what every chat would answer: check tells the truth


def test_check_passes_for_a_model_the_upstream_answers_but_does_not_list(make_app, upstream):
    upstream.models = ["something-else"]
    result = make_app(OPENAI_MODEL="unlisted-but-served").test_cli_runner().invoke(args=["ocw", "check"])
    assert result.exit_code == 0, result.output
    assert "answered a one-token completion" in result.output
    assert upstream.requests[-1]["max_tokens"] == 1


def test_check_fails_when_the_model_upstream_is_unreachable(make_app):
    app = make_app(OPENAI_BASE_URL=f"http://127.0.0.1:{free_port()}/v1")
    result = app.test_cli_runner().invoke(args=["ocw", "check"])
    assert result.exit_code == 1 and "FAIL  model:" in result.output


def test_check_reports_a_bad_configuration_as_a_failed_check_without_the_key():
    short_key = "short-widget-key"
    result = run_script("check", env={"WIDGET_API_KEY": short_key, "CORS_ORIGIN": "*"})
    assert result.returncode == 1
    assert "FAIL  configuration: Invalid configuration:" in result.stdout
    assert "WIDGET_API_KEY" in result.stdout and "CORS_ORIGIN" in result.stdout
    assert short_key not in result.stdout + result.stderr and "Traceback" not in result.stderr


def test_flask_cli_runs_the_commands_with_the_deployment_environment(base_env, app):
    chat_turn(app.test_client(), "through-flask")
    result = subprocess.run(
        [RUNTIME_PYTHON, "-m", "flask", "--app", "app", "ocw", "conversations", "list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **base_env},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("through-flask")


def test_check_reports_an_openai_key_with_a_pasted_dash_as_a_bad_configuration_not_a_traceback(base_env):
    env = {**base_env, "OPENAI_API_KEY": "sk-proj\u2013pasted-from-a-document"}
    result = run_script("check", env=env)
    assert result.returncode == 1
    assert "FAIL  configuration: Invalid configuration:" in result.stdout and "OPENAI_API_KEY" in result.stdout
    assert "Traceback" not in result.stderr and "pasted-from-a-document" not in result.stdout + result.stderr
