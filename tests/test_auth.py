"""Key checks of the chat and admin routes, rotation, and the rate limit."""

from __future__ import annotations

import hmac
import logging
import time

import pytest

import auth
from tests.support import ADMIN_KEY, ADMIN_KEY_2, WIDGET_KEY, WIDGET_KEY_2

CHAT_ROUTES = [("POST", "/v1/chat"), ("POST", "/v1/chat/stream"), ("POST", "/chat"), ("GET", "/v1/chat/history")]
ADMIN_ROUTES = [
    ("GET", "/v1/admin/conversations"),
    ("GET", "/v1/admin/conversations/unknownid"),
    ("DELETE", "/v1/admin/conversations/unknownid"),
]
# What each admin route answers once the key is accepted (the conversation does not exist).
PAST_THE_KEY = {
    ("GET", "/v1/admin/conversations"): (200, None),
    ("GET", "/v1/admin/conversations/unknownid"): (404, {"error": "Conversation not found"}),
    ("DELETE", "/v1/admin/conversations/unknownid"): (404, {"error": "Conversation not found"}),
}
BODY = {"sessionId": "auth-test", "message": "hello"}

WRONG_SAME_LENGTH = "x" * len(WIDGET_KEY)
WRONG_PREFIX = WIDGET_KEY[:-1] + "Z"
WRONG_LENGTH = WIDGET_KEY + "-longer"

BAD_CHAT_HEADERS = {
    "no key": {},
    "wrong key": {"X-Widget-Api-Key": WRONG_SAME_LENGTH},
    "wrong last character": {"X-Widget-Api-Key": WRONG_PREFIX},
    "key of another length": {"X-Widget-Api-Key": WRONG_LENGTH},
    "prefix of the key": {"X-Widget-Api-Key": WIDGET_KEY[:10]},
    "admin key": {"X-Widget-Api-Key": ADMIN_KEY},
    "admin key as bearer": {"Authorization": f"Bearer {ADMIN_KEY}"},
    "admin key in admin header": {"X-Admin-Api-Key": ADMIN_KEY},
    "basic scheme": {"Authorization": f"Basic {WIDGET_KEY}"},
    "empty bearer": {"Authorization": "Bearer "},
}
GOOD_CHAT_HEADERS = {
    "X-Api-Key": {"X-Api-Key": WIDGET_KEY},
    "X-Widget-Api-Key": {"X-Widget-Api-Key": WIDGET_KEY},
    "Bearer": {"Authorization": f"Bearer {WIDGET_KEY}"},
    "lower-case bearer": {"Authorization": f"bearer {WIDGET_KEY}"},
}
BAD_ADMIN_HEADERS = {
    "no key": {},
    "wrong key": {"X-Admin-Api-Key": "y" * len(ADMIN_KEY)},
    "key of another length": {"X-Admin-Api-Key": ADMIN_KEY + "0"},
    "widget key": {"X-Admin-Api-Key": WIDGET_KEY},
    "widget key as bearer": {"Authorization": f"Bearer {WIDGET_KEY}"},
    "widget key in widget header": {"X-Widget-Api-Key": WIDGET_KEY},
    "admin key in a chat header": {"X-Api-Key": ADMIN_KEY},
}
GOOD_ADMIN_HEADERS = {
    "X-Admin-Api-Key": {"X-Admin-Api-Key": ADMIN_KEY},
    "Bearer": {"Authorization": f"Bearer {ADMIN_KEY}"},
}


def call(client, method, path, headers, query=None):
    """One request: chat POSTs carry BODY, the history GET its sessionId, each plus `query`."""
    args = dict(query or {})
    kwargs = {}
    if method == "POST":
        kwargs["json"] = BODY
    elif path == "/v1/chat/history":
        args["sessionId"] = BODY["sessionId"]
    return client.open(path, method=method, headers=headers, query_string=args, **kwargs)


@pytest.mark.parametrize("case", BAD_CHAT_HEADERS)
@pytest.mark.parametrize("method, path", CHAT_ROUTES)
def test_chat_route_refuses_missing_wrong_or_other_role_key(client, upstream, redis_client, method, path, case):
    response = call(client, method, path, BAD_CHAT_HEADERS[case])
    assert response.status_code == 401
    assert response.get_json() == {"error": "Unauthorized"}
    assert upstream.requests == []
    assert not any(key.startswith("ocw:conv") for key in redis_client.keys("*"))


@pytest.mark.parametrize("case", GOOD_CHAT_HEADERS)
@pytest.mark.parametrize("method, path", CHAT_ROUTES)
def test_chat_route_accepts_widget_key_in_each_header(client, method, path, case):
    assert call(client, method, path, GOOD_CHAT_HEADERS[case]).status_code == 200


@pytest.mark.parametrize("method, path", CHAT_ROUTES)
def test_widget_key_in_query_string_is_not_accepted(client, method, path):
    for name in ("key", "apiKey", "api_key", "X-Widget-Api-Key"):
        assert call(client, method, path, {}, query={name: WIDGET_KEY}).status_code == 401


@pytest.mark.parametrize("case", BAD_ADMIN_HEADERS)
@pytest.mark.parametrize("method, path", ADMIN_ROUTES)
def test_admin_route_refuses_missing_wrong_or_other_role_key(client, method, path, case):
    response = call(client, method, path, BAD_ADMIN_HEADERS[case])
    assert response.status_code == 401
    assert response.get_json() == {"error": "Unauthorized"}


@pytest.mark.parametrize("case", GOOD_ADMIN_HEADERS)
@pytest.mark.parametrize("method, path", ADMIN_ROUTES)
def test_admin_route_accepts_admin_key_in_each_header(client, method, path, case):
    response = call(client, method, path, GOOD_ADMIN_HEADERS[case])
    status, body = PAST_THE_KEY[(method, path)]
    assert response.status_code == status
    if body is not None:
        assert response.get_json() == body


@pytest.mark.parametrize("method, path", ADMIN_ROUTES)
def test_admin_key_in_query_string_is_not_accepted(client, method, path):
    assert call(client, method, path, {}, query={"key": ADMIN_KEY}).status_code == 401


@pytest.mark.parametrize("headers", [{}, {"X-Admin-Api-Key": ADMIN_KEY}, {"X-Admin-Api-Key": "z" * 30}])
@pytest.mark.parametrize("method, path", ADMIN_ROUTES)
def test_admin_routes_answer_503_when_no_admin_key_is_configured(make_app, method, path, headers):
    client = make_app(ADMIN_API_KEY=None).test_client()
    response = call(client, method, path, headers)
    assert response.status_code == 503
    assert response.get_json() == {"error": "ADMIN_API_KEY is not configured on this deployment"}


def test_two_active_keys_per_role_both_work_during_rotation(make_app):
    client = make_app(
        WIDGET_API_KEY=f"{WIDGET_KEY_2}, {WIDGET_KEY}", ADMIN_API_KEY=f"{ADMIN_KEY_2},{ADMIN_KEY}"
    ).test_client()
    for key in (WIDGET_KEY, WIDGET_KEY_2):
        assert client.post("/v1/chat", json=BODY, headers={"X-Api-Key": key}).status_code == 200
    for key in (ADMIN_KEY, ADMIN_KEY_2):
        assert client.get("/v1/admin/conversations", headers={"X-Admin-Api-Key": key}).status_code == 200
    assert client.post("/v1/chat", json=BODY, headers={"X-Api-Key": ADMIN_KEY_2}).status_code == 401


def test_removed_key_stops_working_after_rotation(make_app):
    client = make_app(WIDGET_API_KEY=WIDGET_KEY_2).test_client()
    assert client.post("/v1/chat", json=BODY, headers={"X-Api-Key": WIDGET_KEY}).status_code == 401


def test_every_configured_key_is_compared_through_fixed_length_digests(monkeypatch):
    compared = []
    real_compare = hmac.compare_digest

    def recording_compare(a, b):
        compared.append((len(a), len(b)))
        return real_compare(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", recording_compare)
    ring = auth.KeyRing(["a" * 24, "b" * 40, "c" * 90])
    for presented in ("a" * 24, "c" * 90, "nope", "", None, "a" * 1000):
        compared.clear()
        ring.accepts(presented)
        assert compared == [(32, 32)] * 3, presented


def test_key_ring_accepts_exactly_its_keys():
    ring = auth.KeyRing([WIDGET_KEY, WIDGET_KEY_2])
    assert ring.accepts(WIDGET_KEY) and ring.accepts(WIDGET_KEY_2)
    for presented in (None, "", WRONG_PREFIX, WRONG_LENGTH, WIDGET_KEY.upper(), " " + WIDGET_KEY):
        assert not ring.accepts(presented)
    assert not auth.KeyRing([]).accepts("")


def test_401_is_logged_with_route_ip_and_fingerprint_never_the_key(client, caplog):
    presented = "presented-secret-key-123456789"
    with caplog.at_level(logging.WARNING):
        client.post("/v1/chat", json=BODY, headers={"X-Api-Key": presented})
    record = "\n".join(r.getMessage() for r in caplog.records)
    assert "401 POST /v1/chat from 127.0.0.1" in record
    assert f"key={auth.fingerprint(presented)}" in record and len(auth.fingerprint(presented)) == 8
    assert presented not in record and presented[:12] not in record


def test_rate_limit_answers_429_with_retry_after_and_counts_before_the_key(make_app, upstream):
    client = make_app(RATE_LIMIT_MAX_REQUESTS="3", RATE_LIMIT_WINDOW_MS="60000").test_client()
    statuses = [client.post("/v1/chat", json=BODY, headers={"X-Api-Key": "wrong" * 6}).status_code for _ in range(3)]
    assert statuses == [401, 401, 401]
    limited = client.post("/v1/chat", json=BODY, headers={"X-Api-Key": WIDGET_KEY})
    assert limited.status_code == 429
    assert limited.get_json() == {"error": "Too many requests"}
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert upstream.requests == []


def test_rate_limit_window_resets(make_app):
    client = make_app(RATE_LIMIT_MAX_REQUESTS="1", RATE_LIMIT_WINDOW_MS="300").test_client()
    assert client.post("/v1/chat", json=BODY, headers={"X-Api-Key": WIDGET_KEY}).status_code == 200
    assert client.post("/v1/chat", json=BODY, headers={"X-Api-Key": WIDGET_KEY}).status_code == 429
    time.sleep(0.4)
    assert client.post("/v1/chat", json=BODY, headers={"X-Api-Key": WIDGET_KEY}).status_code == 200


def test_rate_limit_keys_expire_so_idle_ips_leave_nothing(make_app, redis_client):
    client = make_app(RATE_LIMIT_WINDOW_MS="60000").test_client()
    client.post("/v1/chat", json=BODY, headers={"X-Api-Key": WIDGET_KEY})
    keys = [k for k in redis_client.keys("*") if ":ip:" in k]
    assert keys == ["ocw:{admission}:ip:127.0.0.1"]
    assert 0 < redis_client.pttl(keys[0]) <= 60000


def test_x_forwarded_for_is_ignored_without_trusted_proxies(make_app):
    client = make_app(RATE_LIMIT_MAX_REQUESTS="2").test_client()
    codes = [
        client.post(
            "/v1/chat", json=BODY, headers={"X-Api-Key": WIDGET_KEY, "X-Forwarded-For": f"10.0.0.{i}"}
        ).status_code
        for i in range(3)
    ]
    assert codes == [200, 200, 429]


def test_with_one_trusted_proxy_the_last_forwarded_hop_is_the_client(make_app, redis_client):
    client = make_app(RATE_LIMIT_MAX_REQUESTS="1", TRUSTED_PROXY_COUNT="1").test_client()

    def from_client(ip, spoofed="6.6.6.6"):
        # The client may send any X-Forwarded-For; the trusted proxy appends the real address.
        headers = {"X-Api-Key": WIDGET_KEY, "X-Forwarded-For": f"{spoofed}, {ip}"}
        return client.post("/v1/chat", json=BODY, headers=headers).status_code

    assert from_client("203.0.113.1") == 200
    assert from_client("203.0.113.1", spoofed="7.7.7.7") == 429
    assert from_client("203.0.113.2") == 200
    assert "ocw:{admission}:ip:203.0.113.1" in redis_client.keys("*")


@pytest.mark.parametrize(
    "spellings",
    [
        [f"203.0.113.7:{port}" for port in range(50001, 50006)],  # a proxy that appends the source port
        ["203.0.113.7", "::ffff:203.0.113.7", "[::ffff:203.0.113.7]:443", "203.0.113.7:1", "::FFFF:cb00:7107"],
        [
            "2001:db8:1:2::1",
            "2001:db8:1:2::2",
            "[2001:db8:1:2:ffff::9]:443",
            "2001:DB8:1:2:0:0:0:3",
            "2001:db8:1:2::4%eth0",
        ],
    ],
    ids=["ports", "ipv4-mapped", "one-ipv6-64"],
)
def test_nothing_a_client_can_vary_without_changing_who_it_is_gives_it_a_new_bucket(make_app, spellings):
    client = make_app(RATE_LIMIT_MAX_REQUESTS="3", TRUSTED_PROXY_COUNT="1").test_client()
    codes = [
        client.post("/v1/chat", json=BODY, headers={"X-Api-Key": WIDGET_KEY, "X-Forwarded-For": spelling}).status_code
        for spelling in spellings
    ]
    assert codes == [200, 200, 200, 429, 429]


def test_clients_in_different_ipv6_64s_have_their_own_buckets(make_app):
    client = make_app(RATE_LIMIT_MAX_REQUESTS="1", TRUSTED_PROXY_COUNT="1").test_client()
    for prefix in ("2001:db8:1:1", "2001:db8:1:2", "2001:db8:2:1"):
        headers = {"X-Api-Key": WIDGET_KEY, "X-Forwarded-For": f"{prefix}::1"}
        assert client.post("/v1/chat", json=BODY, headers=headers).status_code == 200


@pytest.mark.parametrize(
    "address, identity",
    [
        ("203.0.113.7:50001", "203.0.113.7"),
        ("[2001:db8::1]:443", "2001:db8::/64"),
        ("::ffff:10.1.2.3", "10.1.2.3"),
        ("2001:DB8:0:0:1::5", "2001:db8::/64"),
        ("not an address", "unknown"),
        ("", "unknown"),
        ("010.1.2.3", "unknown"),
    ],
)
def test_a_client_address_has_one_name(address, identity):
    assert auth.client_identity(address) == identity


def test_with_trusted_proxy_ips_only_the_named_proxies_forwarded_for_is_read(make_app):
    client = make_app(
        RATE_LIMIT_MAX_REQUESTS="3", TRUSTED_PROXY_COUNT="1", TRUSTED_PROXY_IPS="10.0.0.0/8"
    ).test_client()

    def post(forwarded_for, peer):
        headers = {"X-Api-Key": WIDGET_KEY, "X-Forwarded-For": forwarded_for}
        return client.post("/v1/chat", json=BODY, headers=headers, environ_base={"REMOTE_ADDR": peer}).status_code

    # Around the proxy, straight to the app's port: writing X-Forwarded-For buys nothing.
    assert [post(f"198.51.100.{i}", "192.0.2.50") for i in range(5)] == [200, 200, 200, 429, 429]
    # Through the proxy, each client is who the proxy says.
    assert [post(f"198.51.100.{i}", "10.0.0.2") for i in range(5)] == [200] * 5


def test_trusted_proxy_ips_that_are_not_addresses_refuse_start_up():
    from config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="TRUSTED_PROXY_IPS must list IP addresses or networks"):
        load_settings(
            {"WIDGET_API_KEY": WIDGET_KEY, "OPENAI_API_KEY": "sk-x", "TRUSTED_PROXY_IPS": "10.0.0.0/8, proxy.local"}
        )


def test_rate_limit_does_not_apply_to_admin_or_public_routes(make_app):
    client = make_app(RATE_LIMIT_MAX_REQUESTS="1").test_client()
    for _ in range(3):
        assert client.get("/health").status_code == 200
        assert client.get("/v1/admin/conversations", headers={"X-Admin-Api-Key": ADMIN_KEY}).status_code == 200
