"""The upstream client against a real HTTP server speaking the chat-completions protocol."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm import (
    Completion,
    DemoResponder,
    OpenAIClient,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from tests.fake_upstream import FakeUpstream

PROMPT = [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]
# A throwaway key and self-signed certificate for 127.0.0.1 (CN upstream.test.invalid, made with
# `openssl req -x509 -newkey rsa:2048 -nodes -days 36500 -addext subjectAltName=IP:127.0.0.1`).
UPSTREAM_CERTIFICATE = Path(__file__).parent / "tls" / "upstream.pem"
CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@pytest.fixture
def model(upstream):
    return OpenAIClient(upstream.url, "sk-test", "m", timeout_seconds=1.0)


def test_stream_yields_each_delta_untrimmed(model, upstream):
    upstream.reply = "a b  c"
    with model.stream(PROMPT) as reply:
        assert list(reply) == ["a", " b", " ", " c"]
    assert upstream.requests[-1]["stream"] is True


def test_complete_returns_the_message_content_and_reported_tokens(model, upstream):
    upstream.reply = "whole answer"
    assert model.complete(PROMPT) == Completion("whole answer", 2, "stop")
    assert upstream.requests[-1]["stream"] is False
    upstream.report_usage = False
    assert model.complete(PROMPT) == Completion("whole answer", None, "stop")


def test_gzip_compressed_replies_are_decoded(model, upstream):
    upstream.gzip = True
    upstream.reply = "a b c"
    assert model.complete(PROMPT).text == "a b c"
    with model.stream(PROMPT) as reply:
        assert list(reply) == ["a", " b", " c"]


def test_stream_asks_for_usage_and_reports_output_tokens(model, upstream):
    upstream.reply = "a b c"
    with model.stream(PROMPT) as reply:
        assert "".join(reply) == "a b c"
    assert upstream.requests[-1]["stream_options"] == {"include_usage": True}
    assert reply.output_tokens == 3


def test_stream_usage_request_can_be_switched_off(upstream):
    model = OpenAIClient(upstream.url, "sk-test", "m", timeout_seconds=1.0, stream_usage=False)
    with model.stream(PROMPT) as reply:
        list(reply)
    assert "stream_options" not in upstream.requests[-1]
    assert reply.output_tokens is None


@pytest.mark.parametrize("fault", ["cut", "no_done"])
def test_streams_that_end_before_the_reply_is_complete_raise_protocol_errors(model, upstream, fault):
    upstream.fault = fault
    upstream.reply = "one two three"
    with pytest.raises(UpstreamProtocolError), model.stream(PROMPT) as reply:
        list(reply)


def test_a_data_line_that_is_not_json_is_skipped_and_counted_and_the_reply_goes_on(model, upstream):
    upstream.fault = "malformed"
    upstream.reply = "one two three"
    with model.stream(PROMPT) as reply:
        assert "".join(reply) == "one two three"
    assert reply.facts.skipped_lines == 1


@pytest.mark.parametrize("status", [400, 429, 500, 503])
def test_non_200_status_raises_before_streaming(model, upstream, status):
    upstream.fault, upstream.status = "status", status
    with pytest.raises(UpstreamStatusError) as raised:
        model.stream(PROMPT)
    assert f"HTTP {status}: fault" in raised.value.detail
    with pytest.raises(UpstreamStatusError):
        model.complete(PROMPT)


def test_silence_beyond_the_timeout_raises_upstream_timeout(model, upstream):
    upstream.fault = "hang"
    with pytest.raises(UpstreamTimeout):
        model.complete(PROMPT)
    with pytest.raises(UpstreamTimeout):
        model.stream(PROMPT)


def test_slow_drip_within_the_timeout_is_not_a_timeout(model, upstream):
    upstream.reply = "a b c d"
    upstream.token_delay = 0.3  # longer in total than nothing, each gap below the 1 s timeout
    with model.stream(PROMPT) as reply:
        assert "".join(reply) == "a b c d"


def test_empty_batches_mark_silence_between_deltas(model, upstream):
    upstream.reply = "a b"
    upstream.token_delay = 0.25
    with model.stream(PROMPT) as reply:
        batches = list(reply.batches(0.1))
    assert [delta for batch in batches for delta in batch] == ["a", " b"]
    assert batches.count([]) >= 2


def test_deltas_that_arrive_together_are_handed_over_together(model, upstream):
    upstream.reply = " ".join(["t"] * 300)
    with model.stream(PROMPT) as reply:
        batches = list(reply.batches(5))
    assert "".join(delta for batch in batches for delta in batch) == upstream.reply
    assert len(batches) < 300  # a fast upstream's tokens are not handed over one by one
    assert all(0 < len(batch) <= 256 for batch in batches)


def test_batches_pass_upstream_errors_through(model, upstream):
    upstream.fault = "no_done"
    with pytest.raises(UpstreamProtocolError), model.stream(PROMPT) as reply:
        list(reply.batches(0.1))


def test_all_upstream_errors_share_one_base_with_a_status():
    for error in (UpstreamTimeout, UpstreamStatusError, UpstreamProtocolError):
        assert issubclass(error, UpstreamError)
    assert UpstreamTimeout.status_code == 504 and UpstreamStatusError.status_code == 502


def test_demo_responder_streams_a_labelled_answer_word_by_word():
    demo = DemoResponder(delay_seconds=0)
    with demo.stream(PROMPT) as reply:
        deltas = list(reply)
    text = "".join(deltas)
    assert len(deltas) > 5
    assert text.startswith("**Demo mode**") and '"hi"' in text
    assert demo.complete(PROMPT) == Completion(text, None)


@pytest.fixture
def https_upstream():
    server = FakeUpstream(certificate=str(UPSTREAM_CERTIFICATE))
    yield server
    server.close()


def test_an_https_upstream_with_an_untrusted_certificate_is_refused(https_upstream, monkeypatch):
    for name in CA_BUNDLE_VARIABLES:
        monkeypatch.delenv(name, raising=False)  # requests' own CA bundle
    model = OpenAIClient(https_upstream.url, "sk-test", "m", timeout_seconds=1.0)
    with pytest.raises(UpstreamError, match="connection to the model failed"):
        model.complete(PROMPT)
    assert https_upstream.requests == []  # the key never left


def test_requests_ca_bundle_names_the_certificates_an_https_upstream_is_checked_against(https_upstream, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(UPSTREAM_CERTIFICATE))
    model = OpenAIClient(https_upstream.url, "sk-test", "m", timeout_seconds=1.0)
    assert model.complete(PROMPT).text == "Hello from the fake model."
    with model.stream(PROMPT) as reply:
        assert "".join(reply) == "Hello from the fake model."
    assert [request["_authorization"] for request in https_upstream.requests] == ["Bearer sk-test"] * 2
