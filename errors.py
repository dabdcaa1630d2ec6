"""Every error leaves the service as JSON `{"error": ...}`: never HTML, never a stack trace."""

from __future__ import annotations

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException, MethodNotAllowed

import storage

MESSAGES = {
    400: "Bad request",
    404: "Not found",
    405: "Method not allowed",
    413: "Request body too large",
    431: "Request headers too large",
}


def json_error(status: int, message: str, details: dict | None = None, headers: dict | None = None) -> Response:
    """The JSON error response `{"error": message, "details": {field: rule}}` (details when given)."""
    body: dict = {"error": message}
    if details is not None:
        body["details"] = details
    response = jsonify(body)
    response.status_code = status
    if headers:
        response.headers.update(headers)
    return response


def init_app(app: Flask) -> None:
    """Register JSON handlers on the app (404 and 405 never reach a blueprint's handlers)."""

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        status = exc.code or 500
        response = json_error(status, MESSAGES.get(status, exc.name))
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(storage.UNAVAILABLE)
    def storage_unavailable(exc):
        app.logger.error("Redis unavailable: %s", type(exc).__name__)
        return json_error(503, "Storage unavailable")

    @app.errorhandler(Exception)
    def unexpected(exc):
        app.logger.exception("Unhandled error")
        return json_error(500, "Internal server error")
