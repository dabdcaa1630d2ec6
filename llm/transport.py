"""The HTTP side of the model client: one upstream's connections (requests' setup, urllib3's
responses), retries of unanswered connections, and what a failure is called."""

from __future__ import annotations

import email.utils
import logging
import math
import socket
import time

import requests
import requests.adapters
import urllib3

from .errors import UpstreamError, UpstreamTimeout

# A connection refused or reset while connecting (an upstream whose accept queue is full during
# a burst) never carried a byte of the request, so it is tried again after these pauses, all
# well within the connect timeout.
CONNECT_RETRY_PAUSES_SECONDS = (0.05, 0.1, 0.2, 0.4, 0.8)


class Transport(requests.adapters.HTTPAdapter):
    """requests' transport adapter for one upstream, answering with urllib3's response itself.

    HTTPAdapter.send() wraps every urllib3 response in a requests.Response (a headers mapping,
    a cookie jar, hooks), and Session.request() prepares and merges settings on every call: a
    fifth of a chat turn's CPU, for features this client does not use (redirects included).
    This keeps what requests sets up for a connection (proxy, TLS verification and CA bundle,
    pooling) and skips the rest.
    """

    def __init__(self, base_url: str, timeout: urllib3.Timeout, logger: logging.Logger):
        super().__init__()
        self.timeout = timeout
        self.logger = logger
        # Proxy and CA-bundle variables are read once: requests would re-scan the environment
        # on every call.
        environment = requests.Session().merge_environment_settings(base_url, {}, None, None, None)
        self.proxies, self.verify = environment["proxies"], environment["verify"]

    def open(
        self, method: str, url: requests.PreparedRequest, headers: dict, body: bytes | None = None, stream: bool = False
    ) -> urllib3.BaseHTTPResponse:
        """Send a request to url (prepared once); the raw response. Raises urllib3's errors.

        A connection that the upstream refused or reset before it answered anything (its accept
        queue overflowing in a burst, or a kept-alive connection it had closed) is tried again
        after a short pause (CONNECT_RETRY_PAUSES_SECONDS), and logged. Unless stream is set,
        the whole body is read here.
        """
        pool = self.get_connection_with_tls_context(url, self.verify, self.proxies)
        self.cert_verify(pool, url.url, self.verify, None)
        for pause in (*CONNECT_RETRY_PAUSES_SECONDS, None):
            try:
                # Never preloaded here: a failure while reading a body is not one to retry.
                response = pool.urlopen(  # type: ignore[attr-defined]  # an HTTPConnectionPool
                    method,
                    self.request_url(url, self.proxies),
                    body=body,
                    headers=headers,
                    retries=False,
                    redirect=False,
                    assert_same_host=False,
                    timeout=self.timeout,
                    preload_content=False,
                )
                break
            except (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ProtocolError) as exc:
                if pause is None or not _unanswered_connection(exc):
                    raise
                self.logger.warning(
                    "Model connection %s before any answer; trying again in %.2f s", _failure_name(exc), pause
                )
                time.sleep(pause)
        if not stream:
            response.read(cache_content=True)
            response.release_conn()
        return response


def _unanswered_connection(exc: urllib3.exceptions.HTTPError) -> bool:
    """True if exc is a connection refused, reset or closed by the upstream before it sent a
    byte: urllib3 raises ProtocolError("Connection aborted.") only before the status line."""
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        return True
    return any(isinstance(arg, (ConnectionResetError, ConnectionRefusedError, BrokenPipeError)) for arg in exc.args)


def _failure_name(exc: urllib3.exceptions.HTTPError) -> str:
    cause = next((arg for arg in exc.args if isinstance(arg, OSError)), exc.__context__)
    return "refused" if isinstance(cause, ConnectionRefusedError) else "reset"


def retry_after_seconds(value: str | None) -> int | None:
    """Retry-After (RFC 9110: delay-seconds or an HTTP date) as whole seconds from now, or None."""
    if not value:
        return None
    if value.strip().isdigit():
        return int(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0, math.ceil(when.timestamp() - time.time())) if when.tzinfo else None


def socket_of(response: urllib3.BaseHTTPResponse) -> socket.socket | None:
    """The socket a streamed response is read from, taken while it is there.

    With `Connection: close` (or HTTP/1.0) the standard library's http.client detaches the socket
    from the connection as soon as the headers are read, so `response.connection.sock` is None
    and only the response's own file still holds it.
    """
    sock = getattr(response.connection, "sock", None)
    if sock is None:
        raw = getattr(getattr(getattr(response, "_fp", None), "fp", None), "raw", None)
        sock = getattr(raw, "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def hang_up(sock: socket.socket | None) -> None:
    """End the upstream connection now, even while another thread is blocked reading it.

    close() from here would race with that reader (and does not wake a blocked recv());
    shutdown() ends the read and sends the FIN at once, and the reader then closes the response.
    """
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed


def release(response: urllib3.BaseHTTPResponse) -> None:
    """Close a response that may be unread, and give its place in the pool back."""
    response.close()
    response.release_conn()


def as_upstream_error(exc: Exception) -> UpstreamError:
    # urllib3 counts a refused connection as a connect timeout; it is not one.
    timed_out = isinstance(exc, urllib3.exceptions.TimeoutError) and not isinstance(
        exc, urllib3.exceptions.NewConnectionError
    )
    if timed_out:
        return UpstreamTimeout("The model stopped answering", f"the model server was silent too long ({exc})")
    return UpstreamError("The connection to the model failed", f"connection to the model server failed ({exc})")
