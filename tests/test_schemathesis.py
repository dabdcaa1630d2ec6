"""Schemathesis against /v1/openapi.json on a live gunicorn: requests generated from the
document for every operation, with both keys supplied, each checked against the document.

Checks (schemathesis defaults): no 5xx, every status code documented, the Content-Type, headers
and body of each answer match its documented response, invalid requests are refused and valid
ones accepted, and removing the key is refused (the `ignored_auth` check).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings

from tests.support import ADMIN_KEY, WIDGET_KEY

MAX_EXAMPLES = 50  # per operation and phase; the whole run stays under a minute in CI
DOCUMENT = Path(__file__).resolve().parent.parent / "openapi.json"
CONFIG = schemathesis.Config.from_dict(
    {
        "auth": {"openapi": {"widgetKey": {"api_key": WIDGET_KEY}, "adminKey": {"api_key": ADMIN_KEY}}},
    }
)
# Loaded from the file at import, as parametrize needs; the test checks the service serves it as is.
schema = schemathesis.openapi.from_path(DOCUMENT, config=CONFIG)
SENT: Counter = Counter()  # generated requests per operation


@pytest.fixture(scope="module", autouse=True)
def report_how_many_requests_were_sent():
    yield
    print(
        f"schemathesis sent {sum(SENT.values())} generated requests: "
        + ", ".join(f"{label} {count}" for label, count in sorted(SENT.items()))
    )


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_its_openapi_document_says(case, module_gunicorn, redis_client, upstream):
    assert requests.get(module_gunicorn.url + "/v1/openapi.json", timeout=10).json() == json.loads(DOCUMENT.read_text())
    case.call_and_validate(base_url=module_gunicorn.url)
    SENT[case.operation.label] += 1
