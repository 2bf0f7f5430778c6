"""What every SecuriFile Tornado handler shares: JSON errors, request ids, declared auth."""
import json
import logging
import uuid

import tornado.web
from tornado.log import access_log

from .errors import ApiError, error_body

log = logging.getLogger("securifile.web")

PUBLIC, USER, NODE, ADMIN_SERVER = "public", "user", "node", "admin-server"
MONITOR = "monitor"  # /metrics: a monitoring certificate or an administrator's token
# Servers read up to MAX_HEADER_READ bytes of headers (Tornado drops the connection beyond
# that); between the two limits the client is told plainly what was wrong.
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADER_READ = 256 * 1024


class ApiHandler(tornado.web.RequestHandler):
    """Base handler: set ``auth`` on each subclass to PUBLIC, USER, NODE, ADMIN_SERVER or MONITOR.

    Each server's handlers name their dependencies in their own ``initialize`` (at least
    ``self.authenticator``, which ``prepare`` asks who calls).
    ``self.principal`` holds the authenticated caller after ``prepare``. Domain errors
    (ApiError) become their status with the JSON error shape; anything else is a logged 500
    that carries a request id the operator can find in the log.
    """

    auth = USER

    async def prepare(self):
        self.request_id = uuid.uuid4().hex[:16]
        self.set_header("X-Request-Id", self.request_id)
        self.principal = None
        if self.request.method not in self.allowed_methods():
            # Before authentication and parsing: a method the route lacks is a 405 for anybody.
            raise tornado.web.HTTPError(405)
        size = sum(len(k) + len(v) + 4 for k, v in self.request.headers.get_all())
        if size > MAX_HEADER_BYTES:
            raise ApiError(f"request headers exceed {MAX_HEADER_BYTES} bytes", status=431,
                           code="headers_too_large")
        if self.auth == USER:
            self.principal = self.authenticator.user(self.request)
        elif self.auth == NODE:
            self.principal = self.authenticator.node(self.request)
        elif self.auth == ADMIN_SERVER:
            self.principal = self.authenticator.admin_server(self.request)
        elif self.auth == MONITOR:
            self.principal = self.authenticator.monitor(self.request)

    def send_json(self, payload, status=200):
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(payload))

    def json_body(self):
        """The request's JSON object; 415 unless it is declared as JSON (a form or plain
        text from a browser never reaches a JSON route, whatever its bytes say)."""
        ctype = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise ApiError("send the body as JSON with 'Content-Type: application/json'",
                           status=415, code="unsupported_media_type")
        try:
            body = json.loads(self.request.body or b"null")
        except (ValueError, UnicodeDecodeError):
            raise ApiError("request body is not valid JSON", code="invalid_json") from None
        if not isinstance(body, dict):
            raise ApiError("request body must be a JSON object", code="invalid_json")
        return body

    def log_exception(self, typ, value, tb):
        if isinstance(value, ApiError) or isinstance(value, tornado.web.HTTPError):
            return
        log.error("request %s %s %s failed", getattr(self, "request_id", "-"),
                  self.request.method, self.request.uri, exc_info=(typ, value, tb))

    def allowed_methods(self):
        """The methods this handler implements, for the ``Allow`` header of a 405."""
        base = tornado.web.RequestHandler
        return [m for m in self.SUPPORTED_METHODS
                if getattr(type(self), m.lower(), None) is not getattr(base, m.lower(), None)]

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None, None))[1]
        self.set_header("Content-Type", "application/json")
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        if isinstance(exc, ApiError):
            self.set_status(exc.status)
            # The code in a header as well, for HEAD answers, which carry no body.
            self.set_header("X-SecuriFile-Error", exc.code)
            for name, value in exc.headers.items():
                self.set_header(name, value)
            if exc.status == 401:
                self.set_header("WWW-Authenticate", 'Bearer realm="securifile"')
            self.finish(exc.to_json())
        elif isinstance(exc, tornado.web.HTTPError):
            self.finish(error_body(status_code, "http_error", exc.log_message or self._reason))
        else:
            self.finish(error_body(
                status_code, "internal_error",
                f"internal error; request id {getattr(self, 'request_id', '-')}"))

    def _handle_request_exception(self, e):
        if isinstance(e, ApiError):
            if self._finished:
                return
            self.send_error(e.status, exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)


def request_logger(quiet_paths):
    """Tornado's access log (an Application's ``log_function``), without the steady stream
    of successful calls to paths starting with one of ``quiet_paths`` (peer calls, reports,
    scrapes). A handler's ``broken_off`` says why a transfer was cut short."""

    def log_request(handler):
        status = handler.get_status()
        if status < 400 and handler.request.path.startswith(quiet_paths):
            return
        broken_off = getattr(handler, "broken_off", None)
        if broken_off:
            access_log.warning("%d %s broken off: %s", status, handler._request_summary(),
                               broken_off)
            return
        level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
        access_log.log(level, "%d %s %.2fms", status, handler._request_summary(),
                       1000.0 * handler.request.request_time())

    return log_request


class NotFoundHandler(ApiHandler):
    auth = PUBLIC

    def prepare(self):
        raise ApiError(f"no such endpoint: {self.request.path}", status=404, code="no_endpoint")
