"""The admin server's OpenAPI 3 document: what the server accepts and every answer it gives.

``test/test_openapi_fuzz.py`` runs schemathesis against the served document with every
check, so a pattern, a required field or a status written here is one the server keeps.
"""
from securifile.common.openapi_parts import (
    EMAIL, ERROR_RESPONSE, FILE_PATH, FOLDER_PATH, OBJECT, OWNER_PATH, PATH_OR_FOLDER, USERNAME, json_body, path_param,
    query_param)

ROLE = {"type": "string", "enum": ["master", "editor", "reader"]}
SECRET = {"type": "string", "minLength": 1}
INTEGER = {"type": "integer"}
CLAMPED = "clamped to the range the server allows"
QUOTA = {"type": "integer", "minimum": 0, "maximum": 2 ** 63 - 1, "nullable": True,
         "description": "bytes the account's files may take, each counted once whatever the "
                        "replicas; null: no limit"}
SERVER_NAME = {"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,31}$"}
SERVER_URL = {"type": "string", "pattern": "^https?://[^/\\s]+:[0-9]{1,5}/?$"}


def _op(summary, auth="user", body=None, ok=200, params=(), errors=(), description=None):
    """One operation. Every authenticated one can answer 401 (no or bad credentials) and
    403 (an inactive account, a server certificate, or a role it lacks); every one with a
    JSON body 400 (not a JSON object, or a field out of its schema), 413 (over the small
    body limit) and 415 (not declared JSON); anything may be 431 (oversized headers)."""
    content = {} if ok == 204 else {"content": {"application/json": {"schema": OBJECT}}}
    op = {"summary": summary, "responses": {str(ok): {"description": "success", **content}}}
    codes = set(errors) | {431}
    if auth != "public":
        codes |= {401, 403}
    if body is not None:
        codes |= {400, 413, 415}
        op["requestBody"] = json_body(body)
    if params:
        op["parameters"] = list(params)
        codes.add(400)
    for code in sorted(codes):
        op["responses"][str(code)] = {"$ref": "#/components/responses/Error"}
    if auth == "public":
        op["security"] = []
    elif auth == "node":
        op["security"] = [{"nodeCertificate": []}]
    elif auth == "monitor":
        op["security"] = [{"bearer": []}, {"monitorCertificate": []}]
        description = "An administrator's token or a monitoring certificate."
    if description or auth == "admin":
        op["description"] = " ".join(filter(None, [description, "Administrators only."
                                                   if auth == "admin" else None]))
    return op


def _obj(required, **props):
    return {"type": "object", "required": list(required), "properties": props}


NAME = path_param("name", {"type": "string", "minLength": 1, "pattern": "^[^/]+$"},
                  "a server's name")
USER_IN_PATH = path_param("username", USERNAME)
# Keyset paging: a page ends where the next one starts, by the rows' own key, so a deep page
# costs what the first does and rows added meanwhile are neither skipped nor repeated.
AFTER_PATH = query_param("after", {"type": "string"}, "paging cursor: the 'next' of the page "
                         "before (a path); 'next' is null on the last page")

METRICS = _op("Prometheus metrics (text exposition format)", "monitor")
METRICS["responses"]["200"] = {"description": "metrics", "content": {"text/plain": {
    "schema": {"type": "string"}}}}

ROUTES = {
    "/api/v1/login": {"post": _op(
        "log in by user name or e-mail; returns a bearer token", "public",
        _obj(["username", "password"], username=SECRET, password=SECRET),
        errors=(401, 403, 429),
        description="401 wrong name or password; 403 the account expired or is disabled; "
                    "429 too many failures (back off for the seconds in Retry-After).")},
    "/api/v1/logout": {"post": _op(
        "revoke the credential of this request (token or client certificate) on the admin "
        "server and every node", ok=204)},
    "/api/v1/me": {"get": _op("the caller's account, with quota_bytes (null: no limit), "
                              "used_bytes and reserved_bytes (uploads in progress)")},
    "/api/v1/me/password": {"post": _op(
        "change the caller's password (proving the current one); every token and "
        "certificate issued before is revoked, and the answer is a fresh token as a login's",
        body=_obj(["current_password", "new_password"], current_password=SECRET,
                  new_password={"type": "string"}),
        errors=(401, 404, 429),
        description="400 weak_password: the new password fails the policy (at least 12 "
                    "characters, not the name or e-mail, a zxcvbn score of 3 or more).")},
    "/api/v1/enrol": {"post": _op(
        "set the password of a new or reset account with its e-mailed single-use enrolment "
        "code", "public",
        _obj(["username", "code", "password"], username=SECRET, code=SECRET, password=SECRET),
        errors=(401, 403),
        description="401 an unknown, used or expired code; 400 weak_password as for "
                    "/api/v1/me/password.")},
    "/api/v1/certificates": {"post": _op(
        "sign a CSR into a client certificate valid no longer than the account",
        body=_obj(["csr"], csr={"type": "string", "description": "PEM certificate request; "
                                "EC P-256/P-384, Ed25519 or RSA >= 3072 bits"}),
        ok=201, description="400 bad_csr: not a PEM CSR, or a refused key.")},
    "/api/v1/servers": {
        "get": _op("storage servers with status, storage, membership state (member or "
                   "draining) and files left on a draining one; the membership epoch and "
                   "whether a majority holds it"),
        "post": _op(
            "add a server to the running cluster (the next membership epoch)", "admin",
            _obj(["name", "url"], name=SERVER_NAME, url=SERVER_URL), ok=201, errors=(409,),
            description="409 server_exists, or membership_changing: the previous change is "
                        "not yet known to a majority of the servers (try again), or "
                        "witness_lease: the cluster is split in halves.")},
    "/api/v1/servers/{name}": {"parameters": [NAME], "delete": _op(
        "take a drained server out of the cluster (the next membership epoch)", "admin",
        errors=(404, 409),
        description="409 not_drained: the server is not draining or still holds copies "
                    "(files_left), or membership_changing / witness_lease as for adding.")},
    "/api/v1/servers/{name}/drain": {"parameters": [NAME], "post": _op(
        "drain a server: no new copies go to it, and every copy it holds is re-replicated "
        "to the others before it is dropped", "admin", errors=(404, 409),
        description="409 already_draining, too_few_servers (the others could not hold "
                    "replicas + 1 copies), or membership_changing / witness_lease.")},
    "/api/v1/membership": {"get": _op(
        "the current membership {epoch, servers} (for nodes, which say the epoch they hold)",
        "node", params=[query_param("known", INTEGER, "the epoch the calling node holds")])},
    "/api/v1/servers/{name}/storage": {
        "parameters": [NAME],
        "get": _op("storage samples (time series), oldest first", params=[
            query_param("since", {"type": "string", "format": "date-time"},
                        "RFC 3339 time: samples at or after it (a client asks from the last "
                        "sample it holds)"),
            query_param("limit", INTEGER, f"the newest this many (default 2000; {CLAMPED}: "
                        "1-20000)")])},
    "/api/v1/servers/{name}/history": {"parameters": [NAME],
                                       "get": _op("status changes, newest first")},
    "/api/v1/servers/{name}/offline": {"parameters": [NAME], "post": _op(
        "take a server offline", "admin", errors=(404, 503))},
    "/api/v1/servers/{name}/online": {"parameters": [NAME], "post": _op(
        "put a server back online", "admin", errors=(404, 503))},
    "/api/v1/users": {
        "get": _op("users with file count and total volume: every account for administrators; "
                   "oneself and the users one shares with for others",
                   params=[query_param("limit", INTEGER, f"administrators: rows per page "
                                       f"(default 1000; {CLAMPED}: 1-5000)"),
                           query_param("after", {"type": "string"}, "paging cursor: the last "
                                       "user name of the page before; a page shorter than "
                                       "limit is the last"),
                           query_param("username", USERNAME, "exactly this account (only its "
                                       "name for non-administrators)")]),
        "post": _op(
            "create an account and e-mail its owner (an enrolment code unless a password is "
            "given)", "admin",
            _obj(["username", "email"], username=USERNAME, email=EMAIL,
                 valid_days={"type": "number", "minimum": 0, "exclusiveMinimum": True,
                             "maximum": 3650, "default": 365},
                 password={"type": "string"}, admin={"type": "boolean", "default": False},
                 quota_bytes=QUOTA),
            ok=201, errors=(409,),
            description="400 weak_password: a given password fails the policy; 409 the name "
                        "or e-mail is taken.")},
    "/api/v1/users/{username}": {
        "parameters": [USER_IN_PATH],
        "patch": _op("set or lift (null) the account's quota; answers its usage", "admin",
                     {**_obj(["quota_bytes"], quota_bytes=QUOTA), "additionalProperties": False},
                     errors=(404,)),
        "delete": _op("remove an account (never the last administrator)", "admin", ok=204,
                      errors=(400, 404, 409))},
    "/api/v1/users/{username}/enrolment": {"parameters": [USER_IN_PATH], "post": _op(
        "e-mail the user a new enrolment code (older codes die)", "admin", ok=201,
        errors=(400, 404))},
    "/api/v1/users/{username}/files": {"parameters": [USER_IN_PATH], "get": _op(
        "the files a user owns, by path, with totals and 'next' (the owner and "
        "administrators; 404 for no such account)", errors=(400, 404), params=[
            query_param("limit", INTEGER, f"rows per page (default 500; {CLAMPED}: 1-5000)"),
            AFTER_PATH])},
    "/api/v1/files": {"get": _op(
        "files (and subfolders) the caller may see under a folder", params=[
            query_param("prefix", FOLDER_PATH, "owner/folder/ (default: the caller's namespace)"),
            query_param("recursive", {"type": "string"}, "1, true or yes: everything below"),
            query_param("limit", INTEGER, f"rows per page (default 500; {CLAMPED}: 1-5000)"),
            AFTER_PATH])},
    "/api/v1/shared": {"get": _op("grants other users gave the caller")},
    "/api/v1/acl/{owner}/{path}": {
        "parameters": [path_param("owner", USERNAME),
                       path_param("path", PATH_OR_FOLDER, "a file, or a folder ending in '/'")],
        "get": _op("grants on a file or folder", errors=(400,)),
        "put": _op("grant or change a role (owner or master)",
                   body=_obj(["username", "role"], username=USERNAME, role=ROLE),
                   errors=(404,), description="404 no such user."),
        "delete": _op("revoke a grant (owner or master)", ok=204, errors=(404,),
                      params=[query_param("username", USERNAME, "whose grant", required=True)])},
    "/api/v1/events": {"get": _op(
        "recent audit events {events, next}, oldest first (administrators: all; others: their "
        "own and their files')", params=[
            query_param("after", INTEGER, "paging cursor, an event id: the first 'limit' events "
                        "after it, and 'next' (the cursor for the following page) while more "
                        "follow; without it, the newest 'limit' events"),
            query_param("limit", INTEGER, f"rows per page (default 100; {CLAMPED}: 1-1000)")])},
    "/api/v1/authorize": {"get": _op("a user's role on a path (for nodes)", "node", params=[
        query_param("user", USERNAME, "", required=True),
        query_param("path", OWNER_PATH, "owner/path", required=True),
        query_param("uid", {"type": "string"}, "the account id the credential carries"),
        query_param("credential", {"type": "string"}, "the token's jti or cert:SERIAL"),
        query_param("generation", {"type": "integer"}, "the credential generation it carries "
                    "(0 when none)")])},
    "/api/v1/purges": {"get": _op(
        "files of removed accounts past their grace period, to delete (for nodes)", "node",
        params=[query_param("limit", {"type": "integer"}, CLAMPED),
                query_param("after", OWNER_PATH, "paging cursor: owner/path of the last file "
                            "of the page before")])},
    "/api/v1/reports": {"post": _op(
        "file, status and storage reports (for nodes)", "node",
        _obj(["reports"], reports={"type": "array", "items": OBJECT}))},
    "/api/v1/quota/reservations/{id}": {
        "parameters": [path_param("id", {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                                  "chosen by the node: 32 hex digits")],
        "put": _op(
            "reserve room in the owner's quota for an upload about to be accepted, or move or "
            "renew the reservation (for nodes)", "node",
            _obj(["owner", "path", "bytes"], owner=USERNAME, path=FILE_PATH,
                 bytes={"type": "integer", "minimum": 0},
                 wanted={"type": "integer", "minimum": 0}),
            errors=(507,),
            description="bytes: the file's size the upload must be able to reach; wanted: "
                        "more, if the headroom allows (a body of unknown length asks a step "
                        "ahead). Only growth over the catalogued file counts. 507 "
                        "quota_exceeded with used_bytes and quota_bytes."),
        "delete": _op("give a reservation back (for nodes)", "node", ok=204, errors=(400,))},
    "/api/v1/witness": {"post": _op(
        "the tie-break lease for a side of an even split (for nodes)", "node",
        _obj(["side"], side={"type": "array", "items": {"type": "string"}},
             lease={"type": "number"}, epoch=INTEGER))},
    "/status": {"get": _op("the admin server's own status", "public")},
    "/metrics": {"get": METRICS},
    "/api/v1/openapi.json": {"get": _op("this document", "public")},
}


def document():
    return {
        "openapi": "3.0.3",
        "info": {"title": "SecuriFile admin server", "version": "1",
                 "description": "Accounts, access roles, server status and storage, and the "
                                "file catalogue. Errors: {\"error\": {\"code\", \"message\"}}. "
                                "JSON bodies must be declared 'Content-Type: application/json' "
                                "and stay under the small body limit (64 KiB by default)."},
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "clientCertificate": {"type": "mutualTLS"},
                "nodeCertificate": {"type": "mutualTLS",
                                    "description": "a node certificate from the cluster's CA"},
                "monitorCertificate": {"type": "mutualTLS",
                                       "description": "a monitoring certificate from the "
                                                      "cluster's CA (securifile-certs monitor)"}},
            "responses": {"Error": ERROR_RESPONSE}},
        "security": [{"bearer": []}, {"clientCertificate": []}],
        "paths": ROUTES,
    }
