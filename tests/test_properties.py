"""Property tests (Hypothesis): the chat request validation, the key parsing and the history sent
to the model hold for every input, not only for the examples the other tests list.

Each property compares the code with the rule as CONTRACT.md states it, plus the one field this
service adds (`retry`, true or false when present).
"""

from __future__ import annotations

import json
import re
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import auth
import chat
import services
from config import ConfigError, load_settings, split_list
from tests.support import WIDGET_KEY

SESSION_ID_RULE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# ECMAScript's whitespace and line terminators: what trim() removes in the original backend.
ECMA_SPACE = (
    "\t\n\v\f\r \xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000\ufeff"
)
FIXTURES_OK = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
session_ids = st.from_regex(SESSION_ID_RULE, fullmatch=True)
messages = st.text(min_size=1, max_size=4000).filter(lambda m: m.strip(ECMA_SPACE))
# Anything a client might put in those two fields, valid or not.
session_id_fields = session_ids | st.text(max_size=140) | json_values
# JSON can carry a lone surrogate ("\ud800") that UTF-8 cannot.
lone_surrogates = st.builds(
    str.__add__,
    messages.map(lambda m: m[:20]),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, categories=["Cs"]),
)
message_fields = (
    messages | st.text(max_size=60) | st.integers(3995, 4005).map("y".__mul__) | lone_surrogates | json_values
)


def contract_problems(body) -> set[str]:
    """The fields CONTRACT.md (and docs/API.md, for `retry`) says are wrong in this body ("body"
    if it is not an object)."""
    if not isinstance(body, dict):
        return {"body"}
    problems = set()
    session_id, message = body.get("sessionId"), body.get("message")
    if not (isinstance(session_id, str) and SESSION_ID_RULE.fullmatch(session_id)):
        problems.add("sessionId")
    if not (
        isinstance(message, str)
        and message.strip(ECMA_SPACE)
        and len(message) <= 4000
        and not re.search("[\ud800-\udfff]", message)
    ):
        problems.add("message")
    if not isinstance(body.get("retry", False), bool):
        problems.add("retry")
    return problems


def validate(data: bytes):
    """What the chat request parser makes of a body: (sessionId, message) or the set of fields named."""
    try:
        turn = chat.parse(data)
    except chat.InvalidBody as refused:
        return set(refused.details)
    return turn.session_id, turn.message


@FIXTURES_OK
@given(
    body=st.dictionaries(
        st.sampled_from(["sessionId", "message", "retry", "other"]), st.one_of(session_id_fields, message_fields)
    )
    | json_values
)
def test_validation_names_exactly_the_fields_the_contract_forbids(body):
    outcome = validate(json.dumps(body).encode())
    problems = contract_problems(body)
    if problems:
        assert outcome == problems
    else:
        assert outcome == (body["sessionId"], body["message"].strip(ECMA_SPACE))


@FIXTURES_OK
@given(
    session_id=session_ids,
    message=messages,
    extra=st.dictionaries(st.text(max_size=8).filter(lambda name: name != "retry"), json_values, max_size=5),
)
def test_every_valid_request_is_accepted_whatever_else_it_carries(session_id, message, extra):
    body = {**extra, "sessionId": session_id, "message": message}
    assert validate(json.dumps(body).encode()) == (session_id, message.strip(ECMA_SPACE))


@FIXTURES_OK
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_are_either_a_valid_request_or_refused_never_an_error(data):
    outcome = validate(data)
    if isinstance(outcome, set):
        assert outcome and outcome <= {"body", "sessionId", "message", "retry"}
    else:
        assert contract_problems(json.loads(data)) == set()


# ---- key parsing ---------------------------------------------------------------------------

keys = (
    st.text(st.characters(codec="utf-8", exclude_characters=","), min_size=24, max_size=60)
    .map(str.strip)
    .filter(lambda key: len(key) >= 24)
)
padding = st.text(" \t", max_size=3)


@given(
    key_list=st.lists(keys, min_size=1, max_size=4),
    pads=st.lists(padding, min_size=10, max_size=10),
    blanks=st.integers(0, 2),
)
def test_a_key_list_parses_back_to_its_keys_whatever_the_spacing_and_blank_entries(key_list, pads, blanks):
    raw = ",".join(f"{pads[i % 10]}{key}{pads[(i + 1) % 10]}" for i, key in enumerate(key_list)) + "," * blanks
    assert split_list(raw) == tuple(key_list)
    settings_ = load_settings({"WIDGET_API_KEY": raw, "OPENAI_API_KEY": "sk-x", "DATA_DIR": "/tmp"})
    assert settings_.widget_keys == tuple(key_list)


@given(short=st.text(st.characters(exclude_characters=","), max_size=23).filter(str.strip))
def test_a_short_key_is_refused_by_a_message_that_does_not_echo_it(short):
    with pytest.raises(ConfigError) as refused:
        load_settings({"WIDGET_API_KEY": f"{WIDGET_KEY},{short}", "OPENAI_API_KEY": "sk-x", "DATA_DIR": "/tmp"})
    assert refused.value.problems == ["WIDGET_API_KEY: every key must be at least 24 characters"]


@given(key_list=st.lists(keys, min_size=1, max_size=4), presented=st.none() | st.text(max_size=60) | keys)
def test_a_key_ring_accepts_exactly_its_keys(key_list, presented):
    ring = auth.KeyRing(key_list)
    assert ring.accepts(presented) == (presented in key_list)
    assert all(ring.accepts(key) for key in key_list)


header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40)
KEY_HEADERS = ("X-Api-Key", "X-Widget-Api-Key", "Authorization")


def contract_presented_key(headers: dict) -> str | None:
    """The widget key as CONTRACT.md places it: X-Api-Key, X-Widget-Api-Key, then Bearer."""
    for name in ("X-Api-Key", "X-Widget-Api-Key"):
        if headers[name].strip():
            return headers[name].strip()
    scheme, _, token = headers["Authorization"].partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


@FIXTURES_OK
@given(
    headers=st.fixed_dictionaries(
        {},
        optional={
            "X-Api-Key": header_values,
            "X-Widget-Api-Key": header_values,
            "Authorization": st.sampled_from(["", "Bearer ", "bEaReR ", "Basic ", "Bearer  "]).flatmap(
                lambda scheme: header_values.map(lambda value: scheme + value)
            ),
        },
    )
)
def test_the_presented_widget_key_is_read_from_the_documented_headers_in_order(app, headers):
    with app.test_request_context("/v1/chat", method="POST", headers=headers) as context:
        received = {name: context.request.headers.get(name, "") for name in KEY_HEADERS}
        assert auth.presented_key(("X-Api-Key", "X-Widget-Api-Key")) == contract_presented_key(received)


# ---- the history sent to the model ---------------------------------------------------------

stored_messages = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "assistant"]),
            "content": st.sampled_from(["hi", "hello", "price?", "It is 5 EUR.", "and shipping?"]),
            "interrupted": st.booleans(),
        }
    ),
    max_size=14,
)


@FIXTURES_OK
@given(
    history=stored_messages,
    new_message=st.sampled_from(["hi", "price?", "anything else?"]),
    retry=st.booleans(),
    window=st.integers(1, 16),
)
def test_every_prompt_alternates_from_a_user_message_to_the_new_one_whatever_storage_holds(
    make_app, upstream, history, new_message, retry, window
):
    """Whatever failures, interruptions, retries and window cuts left in storage, the model gets
    the system message, then user and assistant strictly alternating, from a user message to
    the new one (strict chat templates refuse anything else)."""
    upstream.reset()
    app = make_app(MAX_HISTORY_MESSAGES=str(window))
    store = services.of(app).store
    session_id = f"property-{uuid.uuid4().hex}"
    conversation_id = store.conversations.id_for_session(session_id)
    for message in history:
        store.conversations.append_message(
            conversation_id,
            session_id,
            message["role"],
            message["content"],
            interrupted=message["role"] == "assistant" and message["interrupted"],
        )
    body = {"sessionId": session_id, "message": new_message, "retry": retry}
    assert app.test_client().post("/v1/chat", json=body, headers={"X-Api-Key": WIDGET_KEY}).status_code == 200

    sent = upstream.requests[-1]["messages"]
    roles = [m["role"] for m in sent]
    assert roles[0] == "system" and roles[1] == "user" and roles[-1] == "user"
    assert roles[1:] == ["user", "assistant"] * (len(roles) // 2 - 1) + ["user"], roles
    assert sent[-1]["content"].endswith(new_message)
    assert all(m["content"] for m in sent)
