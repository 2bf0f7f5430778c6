"""Turn what the client library raises into a sentence a user can act on.

Workers never let a traceback reach the screen: their errors come here and leave as a
notification (title, message, severity), or as the login screen's message.
"""
import time

from securifile.client.admin import AdminUnreachable
from securifile.client.errors import (
    ClientError, LocalFileError, NoServerAvailable, PermissionDenied, RateLimited, ServerError,
    TLSFailure, Unauthorized,
)

# The admin server's 409 answers to a membership change, as what to do about them.
MEMBERSHIP_REFUSALS = {
    "not_drained": "It still holds copies or is not draining: drain it first (d) and remove it "
                   "once its drain is over",
    "membership_changing": "The previous membership change is not yet known to a majority of "
                           "the servers: try again in a few seconds",
    "witness_lease": "The cluster is split in two halves and a tie-break lease is out: try "
                     "again once the split is over",
}


def describe(error):
    """(title, message) for an error a worker raised."""
    if isinstance(error, Unauthorized):
        return "Not logged in", f"{error.message}: log in again (ctrl+l)"
    if isinstance(error, PermissionDenied):
        return "Not allowed", error.message
    if isinstance(error, RateLimited):
        return "Too many attempts", error.message
    if isinstance(error, ServerError) and error.code in MEMBERSHIP_REFUSALS:
        left = error.details.get("files_left")
        held = f" ({left} file copies left)" if left else ""
        return "Membership change refused", f"{MEMBERSHIP_REFUSALS[error.code]}{held}."
    if isinstance(error, ServerError):
        return "The server refused", f"{error.message} ({error.code})"
    if isinstance(error, AdminUnreachable):
        return "Admin server unreachable", f"{error}; retrying"
    if isinstance(error, TLSFailure):
        return "TLS failure", str(error)
    if isinstance(error, NoServerAvailable):
        return "No storage server", str(error)
    if isinstance(error, LocalFileError):
        return "Local file", str(error)
    if isinstance(error, ClientError):
        return "Error", str(error)
    if isinstance(error, OSError):
        return "System error", error.strerror or str(error)
    return "Unexpected error", f"{type(error).__name__}: {error}"


def login_problem(error, admin_url, ca=None):
    """The login screen's explanation of why a login failed."""
    if isinstance(error, Unauthorized):
        return "Wrong user name or password."
    if isinstance(error, PermissionDenied) and error.code == "account_expired":
        return f"Your account has expired: {error.message}. Ask an administrator to extend it."
    if isinstance(error, PermissionDenied) and error.code == "account_disabled":
        return f"Your account is disabled: {error.message}. Ask an administrator."
    if isinstance(error, RateLimited):
        return f"Too many failed attempts: {error.message}. Wait, then try again."
    if isinstance(error, ServerError):
        return f"The admin server refused the login: {error.message} ({error.code})."
    if isinstance(error, TLSFailure):
        where = f"that {ca} is" if ca else "the CA certificate field names"
        return (f"TLS failed: {error}. Check {where} the cluster's CA certificate "
                f"(certs/ca.crt where the cluster was set up).")
    if isinstance(error, AdminUnreachable):
        return (f"Cannot reach the admin server at {admin_url}: {error.cause}. "
                f"Check the URL and that the admin server runs.")
    if isinstance(error, OSError):
        return f"Cannot read a local file: {error.strerror or error}."
    return f"Login failed: {describe(error)[1]}"


REPEAT_QUIET_SECONDS = 60  # the same polling error is notified again after this long


class ErrorReports:
    """Mixed into a Textual app: workers' errors become notifications, and a poll failing
    the same way again stays quiet a while (``source`` names the poll)."""

    _errors = None  # source -> (text, when notified)

    def report_error(self, error, *, source="app"):
        """Notify a worker's error once; a poll failing the same way again stays quiet a while."""
        title, text = describe(error)
        if self._errors is None:
            self._errors = {}
        last = self._errors.get(source)
        now = time.monotonic()
        if last and last[0] == text and now - last[1] < REPEAT_QUIET_SECONDS:
            return
        self._errors[source] = (text, now)
        self.notify(text, title=title, severity="error", timeout=8)

    def clear_error(self, source):
        """``source`` works again: its next error is news."""
        if self._errors is not None:
            self._errors.pop(source, None)
