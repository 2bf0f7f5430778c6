"""The admin server's OpenAPI 3 document, built from one table of its routes."""

OBJ = {"type": "object"}


def _op(summary, auth="user", body=None, ok=200, params=(), errors=(400, 401, 403)):
    op = {"summary": summary, "responses": {str(ok): {"description": "success", "content": {
        "application/json": {"schema": OBJ}}}}}
    for code in errors:
        op["responses"][str(code)] = {"$ref": "#/components/responses/Error"}
    if auth == "public":
        op["security"] = []
    elif auth == "node":
        op["security"] = [{"nodeCertificate": []}]
    elif auth == "admin":
        op["description"] = "Administrators only."
    elif auth == "monitor":
        op["security"] = [{"bearer": []}, {"monitorCertificate": []}]
        op["description"] = "An administrator's token or a monitoring certificate."
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "properties": {k: {"type": t} for k, t in body.items()}}}}}
    if params:
        op["parameters"] = [{"name": p[0], "in": "query", "description": p[1],
                             "schema": p[2] if len(p) > 2 else {"type": "string"}}
                            for p in params]
    return op


def _limit(default, most=5000):
    return ("limit", f"rows per page (default {default})",
            {"type": "integer", "minimum": 1, "maximum": most, "default": default})


# Keyset paging: a page ends where the next one starts, by the rows' own key, so a deep page
# costs what the first does and rows added meanwhile are neither skipped nor repeated.
AFTER_PATH = ("after", "paging cursor: the 'next' of the page before (a path); "
                       "'next' is null on the last page")


def _path_params(*names):
    return [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names]


METRICS = _op("Prometheus metrics (text exposition format)", "monitor")
METRICS["responses"]["200"] = {"description": "metrics", "content": {"text/plain": {
    "schema": {"type": "string"}}}}

ROUTES = {
    "/api/v1/login": {"post": _op("log in by user name or e-mail; returns a bearer token",
                                  "public", {"username": "string", "password": "string"},
                                  errors=(400, 401, 403, 429))},
    "/api/v1/logout": {"post": _op("revoke the credential of this request (token or client "
                                   "certificate) on the admin server and every node", ok=204,
                                   errors=(401, 403))},
    "/api/v1/me": {"get": _op("the caller's account")},
    "/api/v1/me/password": {"post": _op("change the caller's password (proving the current one)",
                                        body={"current_password": "string",
                                              "new_password": "string"},
                                        ok=204, errors=(400, 401, 403, 415, 429))},
    "/api/v1/enrol": {"post": _op("set the password of a new or reset account with its e-mailed "
                                  "single-use enrolment code", "public",
                                  {"username": "string", "code": "string", "password": "string"},
                                  errors=(400, 401, 403, 415))},
    "/api/v1/certificates": {"post": _op("sign a CSR into a client certificate valid no longer "
                                         "than the account", body={"csr": "string"}, ok=201)},
    "/api/v1/servers": {"get": _op("storage servers with status and storage")},
    "/api/v1/servers/{name}/storage": {
        "parameters": _path_params("name"),
        "get": _op("storage samples (time series), oldest first",
                   params=[("since", "ISO 8601 time: samples at or after it (a client asks "
                                     "from the last sample it holds)"),
                           ("limit", "the newest this many", {"type": "integer", "minimum": 1,
                                                               "maximum": 20000,
                                                               "default": 2000})])},
    "/api/v1/servers/{name}/history": {"parameters": _path_params("name"),
                                       "get": _op("status changes, newest first")},
    "/api/v1/servers/{name}/offline": {"parameters": _path_params("name"),
                                       "post": _op("take a server offline", "admin")},
    "/api/v1/servers/{name}/online": {"parameters": _path_params("name"),
                                      "post": _op("put a server back online", "admin")},
    "/api/v1/users": {
        "get": _op("users with file count and total volume, by name: every account for "
                   "administrators; oneself and the users one shares with for others",
                   params=[_limit(1000), ("after", "paging cursor: the last user name of the "
                                                   "page before; a page shorter than limit is "
                                                   "the last"),
                           ("username", "exactly this account (names only for non-administrators)")]),
        "post": _op("create an account and e-mail its owner (an enrolment code unless a password "
                    "is given)", "admin",
                    {"username": "string", "email": "string", "valid_days": "number",
                     "password": "string", "admin": "boolean"}, ok=201,
                    errors=(400, 401, 403, 409, 415))},
    "/api/v1/users/{username}": {"parameters": _path_params("username"),
                                 "delete": _op("remove an account (never the last administrator)",
                                               "admin", ok=204, errors=(400, 401, 403, 404, 409))},
    "/api/v1/users/{username}/enrolment": {
        "parameters": _path_params("username"),
        "post": _op("e-mail the user a new enrolment code (older codes die)", "admin", ok=201,
                    errors=(400, 401, 403, 404))},
    "/api/v1/users/{username}/files": {"parameters": _path_params("username"),
                                       "get": _op("the files a user owns, by path, with "
                                                  "totals and 'next'",
                                                  params=[_limit(500), AFTER_PATH])},
    "/api/v1/files": {"get": _op("files (and subfolders) the caller may see under a folder",
                                 params=[("prefix", "owner/folder/"), ("recursive", "1 for all below"),
                                         _limit(500), AFTER_PATH])},
    "/api/v1/shared": {"get": _op("grants other users gave the caller")},
    "/api/v1/acl/{owner}/{path}": {
        "parameters": _path_params("owner", "path"),
        "get": _op("grants on a file or folder (folder: path ends in '/')"),
        "put": _op("grant or change a role (owner or master)",
                   body={"username": "string", "role": "string"}),
        "delete": _op("revoke a grant (owner or master)", ok=204,
                      params=[("username", "whose grant")])},
    "/api/v1/events": {"get": _op(
        "recent audit events {events, next}, oldest first",
        params=[("after", "paging cursor, an event id: the first 'limit' events after it, and "
                          "'next' (the cursor for the following page) while more follow; "
                          "without it, the newest 'limit' events",
                 {"type": "integer", "minimum": 0}),
                _limit(100, 1000)])},
    "/api/v1/authorize": {"get": _op("a user's role on a path (for nodes)", "node",
                                     params=[("user", ""), ("path", "owner/path"),
                                             ("uid", "the account id the credential carries"),
                                             ("credential", "the token's jti or cert:SERIAL")])},
    "/api/v1/reports": {"post": _op("file, status and storage reports (for nodes)", "node",
                                    {"reports": "array"})},
    "/api/v1/witness": {"post": _op("the tie-break lease for a side of an even split (for nodes)",
                                    "node", {"side": "array", "lease": "number"})},
    "/status": {"get": _op("the admin server's own status", "public", errors=())},
    "/metrics": {"get": METRICS},
    "/api/v1/openapi.json": {"get": _op("this document", "public", errors=())},
}


def document():
    return {
        "openapi": "3.0.3",
        "info": {"title": "SecuriFile admin server", "version": "1",
                 "description": "Accounts, access roles, server status and storage, and the "
                                "file catalogue. Errors: {\"error\": {\"code\", \"message\"}}."},
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "clientCertificate": {"type": "mutualTLS"},
                "nodeCertificate": {"type": "mutualTLS",
                                    "description": "a node certificate from the cluster's CA"},
                "monitorCertificate": {"type": "mutualTLS",
                                       "description": "a monitoring certificate from the "
                                                      "cluster's CA (securifile-certs monitor)"}},
            "responses": {"Error": {"description": "error", "content": {"application/json": {
                "schema": {"type": "object", "properties": {"error": {"type": "object"}}}}}}}},
        "security": [{"bearer": []}, {"clientCertificate": []}],
        "paths": ROUTES,
    }
