"""The one JSON error shape every server answers with, and the domain errors behind it."""
import json


class ApiError(Exception):
    """An error a client should see: an HTTP status, a stable code and a sentence."""

    status = 400
    code = "bad_request"

    def __init__(self, message, *, status=None, code=None, headers=None, **details):
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.details = details

    def to_json(self):
        body = {"code": self.code, "message": self.message}
        body.update(self.details)
        return json.dumps({"error": body})


class InvalidPath(ApiError):
    status, code = 400, "invalid_path"


class Unauthenticated(ApiError):
    status, code = 401, "unauthenticated"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class Locked(ApiError):
    status, code = 423, "locked"


class Unavailable(ApiError):
    status, code = 503, "unavailable"


class InsufficientStorage(ApiError):
    status, code = 507, "insufficient_storage"


def error_body(status, code, message):
    """JSON text for an error raised outside ApiError (Tornado's own 4xx/5xx)."""
    return json.dumps({"error": {"code": code, "message": message}})
