"""The OpenAPI document: valid, served as is, and true to the routes the app registers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from tests.support import admin_headers, chat_headers

DOCUMENT_PATH = Path(__file__).resolve().parent.parent / "openapi.json"
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
WIDGET_SCHEMES = {"widgetKey", "widgetKeyAlt", "widgetBearer"}
ADMIN_SCHEMES = {"adminKey", "adminBearer"}
PUBLIC_PATHS = {"/", "/health", "/ready", "/v1/openapi.json", "/favicon.ico", "/widget/chat-widget.js"}
CHAT_PATHS = {"/v1/chat", "/v1/chat/stream", "/chat", "/v1/chat/history"}
ADMIN_PATHS = {
    "/v1/admin/conversations",
    "/v1/admin/conversations/{conversationId}",
    "/v1/admin/export",
    "/v1/admin/sessions/{sessionId}",
    "/v1/admin/stats",
    "/v1/admin/knowledge",
    "/v1/admin/knowledge/{documentId}",
    "/metrics",
}
PATH_VARIABLES = {"conversation_id": "{conversationId}", "session_id": "{sessionId}", "document_id": "{documentId}"}


@pytest.fixture(scope="module")
def document() -> dict:
    return json.loads(DOCUMENT_PATH.read_text())


def operations(document):
    """(path, method, operation) for every operation of the document."""
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


def deref(document, node):
    """The target of a local `$ref` (the document's references are one level deep), else node."""
    if isinstance(node, dict) and "$ref" in node:
        assert node["$ref"].startswith("#/"), node["$ref"]
        for part in node["$ref"][2:].split("/"):
            document = document[part]
        return document
    return node


def schema_validator(document, name: str) -> OAS31Validator:
    """A validator of the component schema `name`, its `$ref`s resolved inside the document."""
    return OAS31Validator({"$ref": f"#/components/schemas/{name}", "components": document["components"]})


def assert_matches(document, name: str, instance):
    errors = [e.message for e in schema_validator(document, name).iter_errors(instance)]
    assert not errors, f"{name} does not describe {instance!r}: {errors}"


# ---- the document itself -------------------------------------------------------------------


def test_openapi_document_is_valid_openapi_3_1(document):
    assert document["openapi"] == "3.1.0"
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema or unresolved $ref
    assert document["info"]["title"] == "Open Chat Widget API"
    assert document["info"]["version"] == "1.0.0"
    assert document["info"]["description"]
    assert document["servers"][0]["url"] == "/"


def test_openapi_file_is_readable_two_space_json():
    text = DOCUMENT_PATH.read_text()
    assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n"


def test_openapi_route_serves_the_document_without_a_key(client, document):
    response = client.get("/v1/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == document


# ---- routes and security -------------------------------------------------------------------


def test_openapi_documents_every_route(app, document):
    registered = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        if rule.endpoint.startswith("dashboard."):
            continue  # the dashboard's HTML pages are for browsers, not part of the JSON API
        path = re.sub(r"<(?:[^:<>]+:)?([a-z_]+)>", lambda m: PATH_VARIABLES.get(m.group(1), m.group(0)), rule.rule)
        assert "<" not in path, f"unmapped path variable in {rule.rule}"
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            registered.add((path, method.lower()))
    documented = {(path, method) for path, method, _ in operations(document)}
    assert documented == registered
    assert {path for path, _ in registered} == PUBLIC_PATHS | CHAT_PATHS | ADMIN_PATHS


def test_every_operation_has_a_unique_operation_id(document):
    ids = [operation["operationId"] for _, _, operation in operations(document)]
    assert len(ids) == len(set(ids))


def test_openapi_declares_both_security_schemes(document):
    schemes = document["components"]["securitySchemes"]
    assert schemes["widgetKey"] == schemes["widgetKey"] | {"type": "apiKey", "in": "header", "name": "X-Widget-Api-Key"}
    assert schemes["widgetKeyAlt"] == schemes["widgetKeyAlt"] | {"type": "apiKey", "in": "header", "name": "X-Api-Key"}
    assert schemes["adminKey"] == schemes["adminKey"] | {"type": "apiKey", "in": "header", "name": "X-Admin-Api-Key"}
    for name in ("widgetBearer", "adminBearer"):
        assert schemes[name]["type"] == "http"
        assert schemes[name]["scheme"].lower() == "bearer"
    assert set(schemes) == WIDGET_SCHEMES | ADMIN_SCHEMES


def _alternatives(operation) -> set[str]:
    """The schemes of an operation's security; each requirement must be one scheme on its own."""
    requirements = operation["security"]
    for requirement in requirements:
        assert len(requirement) == 1 and list(requirement.values()) == [[]], requirement
    return {name for requirement in requirements for name in requirement}


def test_every_protected_operation_requires_a_key(client, document):
    for path, method, operation in operations(document):
        assert "security" in operation, f"{method.upper()} {path} does not say whether it needs a key"
        if path in PUBLIC_PATHS:
            assert operation["security"] == [], f"{method.upper()} {path} should need no key"
            continue
        expected = WIDGET_SCHEMES if path in CHAT_PATHS else ADMIN_SCHEMES
        assert _alternatives(operation) == expected, f"{method.upper()} {path}"
        assert "401" in operation["responses"], f"{method.upper()} {path} does not document 401"
        # ...and the running service agrees: no key, no answer.
        url = path.replace("{conversationId}", "0123456789abcdef0123456789abcdef").replace("{sessionId}", "visitor-1")
        answer = client.open(url, method=method.upper(), json={"sessionId": "s", "message": "hi"})
        assert answer.status_code == 401, f"{method.upper()} {path} answered {answer.status_code} without a key"
        assert answer.get_json() == {"error": "Unauthorized"}


def test_no_document_level_security_hides_a_public_route(document):
    assert document.get("security", []) == []


# ---- status codes --------------------------------------------------------------------------


def _codes(document, path, method) -> set[str]:
    return set(document["paths"][path][method]["responses"])


def test_chat_operations_document_every_status_they_answer(document):
    assert _codes(document, "/v1/chat", "post") >= {"200", "400", "401", "403", "413", "429", "502", "503", "504"}
    for path in ("/v1/chat/stream", "/chat"):
        # Upstream failures happen after the `start` line, so they travel as an `error` event.
        assert _codes(document, path, "post") >= {"200", "400", "401", "403", "413", "429", "503"}
        ok = deref(document, document["paths"][path]["post"]["responses"]["200"])
        assert "application/x-ndjson" in ok["content"]
    assert _codes(document, "/v1/chat/history", "get") >= {"200", "400", "401", "429", "503"}
    assert document["paths"]["/chat"]["post"]["responses"] == document["paths"]["/v1/chat/stream"]["post"]["responses"]
    assert (
        document["paths"]["/chat"]["post"]["requestBody"] == document["paths"]["/v1/chat/stream"]["post"]["requestBody"]
    )


def test_admin_operations_document_every_status_they_answer(document):
    conversations = "/v1/admin/conversations"
    one = "/v1/admin/conversations/{conversationId}"
    assert _codes(document, conversations, "get") >= {"200", "400", "401", "503"}
    assert _codes(document, one, "get") >= {"200", "401", "404", "503"}
    assert _codes(document, one, "delete") >= {"204", "401", "403", "404", "503"}
    limit = deref(document, document["paths"][conversations]["get"]["parameters"][0])
    assert limit["in"] == "query" and limit["name"] == "limit"
    assert limit["schema"] == {"type": "integer", "minimum": 1, "maximum": 200, "default": 100}


def test_public_operations_document_their_statuses(document):
    assert _codes(document, "/ready", "get") >= {"200", "503"}
    assert _codes(document, "/health", "get") >= {"200"}


def test_every_operation_documents_json_errors_for_anything_else(document):
    for path, _method, operation in operations(document):
        default = deref(document, operation["responses"]["default"])
        assert default["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}, path


def test_rate_limited_answer_documents_retry_after(document):
    for path, method, operation in operations(document):
        if path in CHAT_PATHS:
            too_many = deref(document, operation["responses"]["429"])
            assert "Retry-After" in too_many["headers"], f"{method.upper()} {path}"


def test_every_error_response_is_the_error_shape(document):
    for path, method, operation in operations(document):
        for code, response in operation["responses"].items():
            if code.startswith(("4", "5")) and path != "/ready":
                schema = deref(document, response)["content"]["application/json"]["schema"]
                assert schema["$ref"] in ("#/components/schemas/Error", "#/components/schemas/ValidationError"), (
                    f"{method.upper()} {path} {code}"
                )


# ---- the schemas describe what the service really sends ------------------------------------


def test_chat_request_schema_states_the_body_rules(document):
    schema = document["components"]["schemas"]["ChatRequest"]
    assert schema["required"] == ["sessionId", "message"]
    assert schema["properties"]["sessionId"]["pattern"] == "^[A-Za-z0-9._:-]{1,128}$"
    assert schema["properties"]["message"]["minLength"] == 1
    assert schema["properties"]["message"]["maxLength"] == 4000
    assert schema.get("additionalProperties", True) is True
    validator = schema_validator(document, "ChatRequest")
    assert validator.is_valid({"sessionId": "visitor-1", "message": "hello", "extra": 1})
    assert not validator.is_valid({"sessionId": "bad id", "message": "hello"})
    assert not validator.is_valid({"sessionId": "ok", "message": "   "})
    assert not validator.is_valid({"sessionId": "ok", "message": "x" * 4001})


def test_documented_schemas_match_real_responses(client, document):
    assert_matches(document, "Health", client.get("/health").get_json())
    assert_matches(document, "Health", client.get("/ready").get_json())

    body = {"sessionId": "openapi-check", "message": "Hello?"}
    reply = client.post("/v1/chat", json=body, headers=chat_headers())
    assert reply.status_code == 200
    assert_matches(document, "ChatReply", reply.get_json())

    streamed = client.post("/v1/chat/stream", json=body, headers=chat_headers())
    assert streamed.status_code == 200
    assert streamed.mimetype == "application/x-ndjson"
    lines = [json.loads(line) for line in streamed.get_data(as_text=True).splitlines()]
    assert [line["type"] for line in lines][0] == "start" and lines[-1]["type"] == "done"
    for line in lines:
        assert_matches(document, "StreamEvent", line)

    listing = client.get("/v1/admin/conversations?limit=1", headers=admin_headers())
    assert listing.status_code == 200
    assert_matches(document, "ConversationList", listing.get_json())

    history = client.get("/v1/chat/history?sessionId=openapi-check", headers=chat_headers())
    assert history.status_code == 200 and len(history.get_json()["messages"]) == 4
    assert_matches(document, "ChatHistory", history.get_json())
    bad_session = client.get("/v1/chat/history?sessionId=bad%20id", headers=chat_headers())
    assert bad_session.status_code == 400
    assert_matches(document, "ValidationError", bad_session.get_json())
    assert_matches(document, "ServiceInfo", client.get("/").get_json())

    conversation_id = reply.get_json()["conversationId"]
    thread = client.get(f"/v1/admin/conversations/{conversation_id}", headers=admin_headers())
    assert thread.status_code == 200
    assert_matches(document, "ConversationThread", thread.get_json())

    invalid = client.post("/v1/chat", json={"sessionId": "bad id"}, headers=chat_headers())
    assert invalid.status_code == 400
    assert_matches(document, "ValidationError", invalid.get_json())
    bad_limit = client.get("/v1/admin/conversations?limit=0", headers=admin_headers())
    assert bad_limit.status_code == 400
    assert_matches(document, "ValidationError", bad_limit.get_json())
    missing = client.get("/v1/admin/conversations/nope", headers=admin_headers())
    assert missing.status_code == 404
    assert_matches(document, "Error", missing.get_json())
    assert client.delete(f"/v1/admin/conversations/{conversation_id}", headers=admin_headers()).status_code == 204


def test_stream_event_schema_covers_every_event_type(document):
    validator = schema_validator(document, "StreamEvent")
    assert validator.is_valid({"type": "start", "conversationId": "c"})
    assert validator.is_valid({"type": "token", "token": " hi"})
    assert validator.is_valid({"type": "done", "message": "hi", "conversationId": "c"})
    assert validator.is_valid({"type": "error", "error": "The model stopped answering"})
    assert validator.is_valid({"type": "ping"})
    assert not validator.is_valid({"type": "done", "message": "hi"})


def test_message_and_summary_schemas_use_integer_millisecond_timestamps(document):
    schemas = document["components"]["schemas"]
    for name, fields in (
        ("ConversationSummary", ("_creationTime", "createdAt", "updatedAt")),
        ("Message", ("createdAt",)),
    ):
        for field in fields:
            assert schemas[name]["properties"][field]["type"] == "integer", f"{name}.{field}"
    assert schemas["Message"]["properties"]["role"]["enum"] == ["user", "assistant"]
    assert "interrupted" not in schemas["Message"]["required"]
    assert schemas["ConversationList"]["properties"]["nextCursor"]["type"] == ["string", "null"]


def test_ops_operations_document_every_status_they_answer(document):
    assert _codes(document, "/v1/admin/export", "get") >= {"200", "400", "401", "503"}
    assert _codes(document, "/v1/admin/sessions/{sessionId}", "delete") >= {"204", "400", "401", "403", "404", "503"}
    assert _codes(document, "/v1/admin/stats", "get") >= {"200", "401", "503"}
    assert _codes(document, "/metrics", "get") >= {"200", "401", "503"}
    export = deref(document, document["paths"]["/v1/admin/export"]["get"]["responses"]["200"])
    assert "application/x-ndjson" in export["content"]


def test_documented_schemas_match_the_operations_answers(client, document):
    body = {"sessionId": "openapi-ops", "message": "Hello?"}
    assert client.post("/v1/chat", json=body, headers=chat_headers()).status_code == 200
    stats = client.get("/v1/admin/stats", headers=admin_headers())
    assert_matches(document, "Stats", stats.get_json())
    for line in client.get("/v1/admin/export", headers=admin_headers()).get_data(as_text=True).splitlines():
        assert_matches(document, "ConversationThread", json.loads(line))
    by_session = client.get("/v1/admin/conversations?sessionId=openapi-ops", headers=admin_headers())
    assert_matches(document, "ConversationList", by_session.get_json())
    for bad in ("/v1/admin/export?updatedSince=x", "/v1/admin/conversations?sessionId=a%20b"):
        assert_matches(document, "ValidationError", client.get(bad, headers=admin_headers()).get_json())
    missing = client.delete("/v1/admin/sessions/nobody", headers=admin_headers())
    assert missing.status_code == 404
    assert_matches(document, "Error", missing.get_json())


def test_knowledge_operations_document_every_status_they_answer(document):
    one = "/v1/admin/knowledge/{documentId}"
    assert _codes(document, "/v1/admin/knowledge", "get") >= {"200", "400", "401", "503"}
    assert _codes(document, one, "put") >= {"200", "400", "401", "403", "413", "502", "503"}
    assert _codes(document, one, "get") >= {"200", "401", "404", "503"}
    assert _codes(document, one, "delete") >= {"204", "401", "403", "404", "503"}


def test_documented_schemas_match_the_knowledge_answers(client, document):
    body = {"title": "Policies", "url": "https://shop.example/p", "content": "# Refunds\n\nWithin 30 days."}
    stored = client.put("/v1/admin/knowledge/policies", json=body, headers=admin_headers())
    assert_matches(document, "KnowledgeStored", stored.get_json())
    assert_matches(document, "KnowledgeList", client.get("/v1/admin/knowledge", headers=admin_headers()).get_json())
    one = client.get("/v1/admin/knowledge/policies", headers=admin_headers()).get_json()
    assert_matches(document, "KnowledgeDocument", one)
    refused = client.put("/v1/admin/knowledge/policies", json={"title": ""}, headers=admin_headers())
    assert_matches(document, "ValidationError", refused.get_json())
    reply = client.post("/v1/chat", json={"sessionId": "openapi-k", "message": "refunds?"}, headers=chat_headers())
    assert_matches(document, "ChatReply", reply.get_json())
    assert reply.get_json()["sources"]
    body = {"sessionId": "openapi-k", "message": "refunds?"}
    with client.post("/v1/chat/stream", json=body, headers=chat_headers()) as streamed:
        for line in streamed.get_data(as_text=True).splitlines():
            assert_matches(document, "StreamEvent", json.loads(line))
