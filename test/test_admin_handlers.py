"""The admin server's routes in this process, through pytest-tornado (``http_server`` /
``https_server`` and their clients) over a real database, SQLite and PostgreSQL: who passes
each route's declared authentication, the policy rules as a client meets them, and how domain
errors map to status codes and the JSON error shape. Certificates (nodes' and users') over
HTTPS with a test CA; tokens over plain HTTP, where the transport does not matter.
"""
import json
import ssl

import pytest
from tornado.httpclient import HTTPClientError

from securifile.admin.http import make_app
from securifile.admin.models import User
from securifile.admin.main import openapi_document
from securifile.common.auth import PEER_SECRET_HEADER, Authenticator
from securifile.common.tls import client_context, server_context
from securifile.common.tokens import load_public_key

from .admin_inprocess import (  # noqa: F401  (fixtures)
    NODES, PASSWORD, add_user, admin_engine, certs, file_report, service, user_certificate)

PEER_SECRET = "in-process-peer-secret"


@pytest.fixture
def app(service):
    """What pytest-tornado's servers serve: the admin routes over the test's service."""
    authenticator = Authenticator(load_public_key(service.layout.token_public_key), NODES,
                                  PEER_SECRET)
    return make_app(service, authenticator, openapi_document())


@pytest.fixture
def ssl_options(certs):
    layout, _ = certs
    return server_context(layout.server_cert("admin"), layout.server_key("admin"),
                          layout.ca_cert)


@pytest.fixture
def people(service):
    for name, admin in (("root", True), ("alice", False), ("bob", False), ("carol", False)):
        add_user(service, name, admin)
    service.acl.grant("alice", "alice", "docs/", "bob", "reader")
    return {name: service.login(name, PASSWORD, "127.0.0.1")["token"]
            for name in ("root", "alice", "bob", "carol")}


async def call(client, base_url, path, method="GET", token=None, body=None, headers=None,
               **options):
    """(status, JSON answer or text) for one request; errors are answers, not exceptions."""
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if body is not None and not isinstance(body, (bytes, str)):
        body, headers["Content-Type"] = json.dumps(body), "application/json"
    try:
        r = await client.fetch(base_url + path, method=method, headers=headers, body=body,
                               allow_nonstandard_methods=True, **options)
    except HTTPClientError as e:
        r = e.response
    text = r.body.decode() if r.body else ""
    is_json = r.headers.get("Content-Type", "").startswith("application/json")
    return r.code, json.loads(text) if is_json and text else text


def error_of(answer):
    return answer["error"]["code"]


# -- declared authentication -------------------------------------------------------------------


@pytest.mark.gen_test
async def test_a_route_for_users_wants_a_credential_and_says_so(http_client, base_url, people):
    status, answer = await call(http_client, base_url, "/api/v1/me")
    assert (status, error_of(answer)) == (401, "unauthenticated")
    status, answer = await call(http_client, base_url, "/api/v1/me", token="not.a.token")
    assert status == 401 and set(answer["error"]) >= {"code", "message"}
    status, answer = await call(http_client, base_url, "/api/v1/me", token=people["alice"])
    assert status == 200 and (answer["username"], answer["admin"]) == ("alice", False)


@pytest.mark.gen_test
async def test_public_routes_unknown_routes_and_methods(http_client, base_url, app):
    status, answer = await call(http_client, base_url, "/status")
    assert status == 200 and answer["status"] == "running" and answer["tls"] is True
    status, answer = await call(http_client, base_url, "/api/v1/openapi.json")
    assert status == 200 and "/api/v1/users" in answer["paths"]
    status, answer = await call(http_client, base_url, "/api/v1/nothing")
    assert (status, error_of(answer)) == (404, "no_endpoint")
    status, answer = await call(http_client, base_url, "/status", method="DELETE")
    assert status == 405


@pytest.mark.gen_test
async def test_admin_routes_refuse_other_users_before_reading_the_body(
        http_client, base_url, people):
    for method, path, body in (("POST", "/api/v1/users", "not json"),
                               ("DELETE", "/api/v1/users/bob", None),
                               ("POST", "/api/v1/users/bob/enrolment", ""),
                               ("POST", "/api/v1/servers/node1/offline", "")):
        status, answer = await call(http_client, base_url, path, method, people["alice"], body)
        assert (status, error_of(answer)) == (403, "admin_only"), (method, path)
    status, answer = await call(http_client, base_url, "/api/v1/users", "POST", people["root"],
                                "not json")
    assert (status, error_of(answer)) == (415, "unsupported_media_type")


@pytest.mark.gen_test
async def test_an_administrator_creates_an_account_and_bad_fields_are_400(
        http_client, base_url, people, service):
    status, answer = await call(http_client, base_url, "/api/v1/users", "POST", people["root"],
                                {"username": "dave", "email": "dave@example.com", "admin": "no"})
    assert (status, error_of(answer)) == (400, "bad_argument")
    status, answer = await call(http_client, base_url, "/api/v1/users", "POST", people["root"],
                                {"username": "dave", "email": "dave@example.com"})
    assert status == 201 and answer["username"] == "dave" and service.accounts.exists("dave")
    status, answer = await call(http_client, base_url, "/api/v1/users", "POST", people["root"],
                                {"username": "dave", "email": "dave2@example.com"})
    assert (status, error_of(answer)) == (409, "user_exists")


@pytest.mark.gen_test
async def test_a_demoted_administrators_token_no_longer_opens_admin_routes_or_metrics(
        http_client, base_url, people, service):
    add_user(service, "root2", admin=True)
    token = service.login("root2", PASSWORD, "127.0.0.1")["token"]
    status, _ = await call(http_client, base_url, "/metrics", token=token)
    assert status == 200
    with service.sessions.begin() as s:
        s.query(User).filter_by(username="root2").one().admin = False
    for method, path in (("GET", "/metrics"), ("POST", "/api/v1/users/bob/enrolment")):
        status, answer = await call(http_client, base_url, path, method, token,
                                    "" if method == "POST" else None)
        assert (status, error_of(answer)) == (403, "admin_only"), path


@pytest.mark.gen_test
async def test_a_removed_or_logged_out_credential_is_refused(http_client, base_url, people):
    status, _ = await call(http_client, base_url, "/api/v1/logout", "POST", people["bob"], "")
    assert status == 204
    status, answer = await call(http_client, base_url, "/api/v1/me", token=people["bob"])
    assert (status, error_of(answer)) == (401, "credential_revoked")
    status, _ = await call(http_client, base_url, "/api/v1/users/carol", "DELETE", people["root"])
    assert status == 204
    status, answer = await call(http_client, base_url, "/api/v1/me", token=people["carol"])
    assert (status, error_of(answer)) == (403, "no_such_user")


# -- the policy rules as a client meets them -----------------------------------------------------


@pytest.mark.gen_test
async def test_non_administrators_get_a_redacted_user_list(http_client, base_url, people):
    status, answer = await call(http_client, base_url, "/api/v1/users", token=people["bob"])
    assert status == 200
    assert answer["users"][0] == {"username": "alice"}
    assert answer["users"][1]["username"] == "bob" and "email" in answer["users"][1]
    assert len(answer["users"]) == 2
    status, answer = await call(http_client, base_url, "/api/v1/users?username=root",
                                token=people["carol"])
    assert answer == {"users": [{"username": "root"}]}
    status, answer = await call(http_client, base_url, "/api/v1/users", token=people["root"])
    assert [u["username"] for u in answer["users"]] == ["alice", "bob", "carol", "root"]
    assert all("email" in u for u in answer["users"])
    status, answer = await call(http_client, base_url, "/api/v1/users?username=no/pe",
                                token=people["root"])
    assert status == 400


@pytest.mark.gen_test
async def test_a_users_file_list_is_for_the_owner_and_administrators(
        http_client, base_url, people):
    for who, want in (("alice", 200), ("root", 200), ("bob", 403)):
        status, _ = await call(http_client, base_url, "/api/v1/users/alice/files", token=people[who])
        assert status == want, who
    status, answer = await call(http_client, base_url, "/api/v1/users/nobody/files",
                                token=people["root"])
    assert (status, error_of(answer)) == (404, "no_such_user")


@pytest.mark.gen_test
async def test_folder_listing_access_and_a_prefix_that_is_not_a_folder(
        http_client, base_url, people, service):
    service.apply_reports("node1", [file_report("node1", "alice", "docs/a.txt")])
    status, answer = await call(http_client, base_url, "/api/v1/files?prefix=alice/docs/",
                                token=people["bob"])
    assert status == 200 and [f["path"] for f in answer["files"]] == ["docs/a.txt"]
    status, answer = await call(http_client, base_url, "/api/v1/files", token=people["alice"])
    assert status == 200 and answer["folders"] == ["docs"]
    status, answer = await call(http_client, base_url, "/api/v1/files?prefix=alice/",
                                token=people["carol"])
    assert (status, error_of(answer)) == (403, "forbidden")
    status, answer = await call(http_client, base_url, "/api/v1/files?prefix=alice/docs",
                                token=people["alice"])
    assert (status, error_of(answer)) == (400, "bad_prefix")


@pytest.mark.gen_test
async def test_grants_through_the_acl_route(http_client, base_url, people):
    status, answer = await call(http_client, base_url, "/api/v1/acl/alice/docs/",
                                token=people["bob"])
    assert status == 200 and answer["grants"][0]["username"] == "bob"
    status, answer = await call(http_client, base_url, "/api/v1/acl/alice/docs/", "PUT",
                                people["bob"], {"username": "carol", "role": "reader"})
    assert (status, error_of(answer)) == (403, "role_too_weak")
    status, answer = await call(http_client, base_url, "/api/v1/acl/alice/docs/", "PUT",
                                people["alice"], {"username": "carol", "role": "boss"})
    assert (status, error_of(answer)) == (400, "invalid_role")
    status, _ = await call(http_client, base_url, "/api/v1/acl/alice/docs/?username=bob",
                           "DELETE", people["alice"])
    assert status == 204


# -- nodes: the secret without TLS -------------------------------------------------------------


@pytest.mark.gen_test
async def test_a_node_reports_only_for_itself(http_client, base_url, people):
    node1 = {PEER_SECRET_HEADER: PEER_SECRET, "X-SecuriFile-Node": "node1"}
    report = {"reports": [file_report("node2", "alice", "y.txt")]}
    status, answer = await call(http_client, base_url, "/api/v1/reports", "POST", body=report,
                                headers=node1)
    assert (status, error_of(answer)) == (403, "wrong_reporter")
    status, answer = await call(http_client, base_url, "/api/v1/reports", "POST", body={
        "reports": [file_report("node1", "alice", "x.txt")]}, headers=node1)
    assert (status, answer) == (200, {"received": 1, "applied": 1})
    status, answer = await call(http_client, base_url, "/api/v1/reports", "POST",
                                people["root"], report)
    assert (status, error_of(answer)) == (403, "not_a_node")


@pytest.mark.gen_test
async def test_the_witness_route_checks_its_body_and_grants_one_side(http_client, base_url, app):
    node1 = {PEER_SECRET_HEADER: PEER_SECRET, "X-SecuriFile-Node": "node1"}
    for body, code in (({"side": "node1"}, "bad_side"), ({"side": ["node1"], "lease": "x"},
                                                         "bad_lease")):
        status, answer = await call(http_client, base_url, "/api/v1/witness", "POST", body=body,
                                    headers=node1)
        assert (status, error_of(answer)) == (400, code)
    # A tie goes only to a node at the current membership, once a majority holds it.
    ask = {"side": ["node1"], "lease": 5}
    status, answer = await call(http_client, base_url, "/api/v1/witness", "POST", body=ask,
                                headers=node1)
    assert status == 200 and answer["granted"] is False and answer["lease"] == 0
    epoch = None
    for name in NODES:
        status, answer = await call(
            http_client, base_url, f"/api/v1/membership?known={epoch or 0}", headers={
                PEER_SECRET_HEADER: PEER_SECRET, "X-SecuriFile-Node": name})
        assert status == 200, answer
        epoch = answer["epoch"]
        status, answer = await call(http_client, base_url, f"/api/v1/membership?known={epoch}",
                                    headers={PEER_SECRET_HEADER: PEER_SECRET,
                                             "X-SecuriFile-Node": name})
    status, answer = await call(http_client, base_url, "/api/v1/witness", "POST",
                                body=dict(ask, epoch=epoch), headers=node1)
    assert status == 200 and answer["granted"] is True and answer["lease"] == 5


@pytest.mark.gen_test
async def test_an_administrator_takes_a_node_offline_and_the_node_is_told(
        http_client, base_url, people, service):
    status, answer = await call(http_client, base_url, "/api/v1/servers/node1/offline", "POST",
                                people["root"], "")
    assert (status, answer) == (200, {"server": "node1", "admin_state": "offline"})
    assert service.node_client.told == [("https://127.0.0.1:9000", "offline")]
    status, answer = await call(http_client, base_url, "/api/v1/servers", token=people["bob"])
    assert answer["servers"][0]["admin_state"] == "offline"
    status, answer = await call(http_client, base_url, "/api/v1/servers/node9/offline", "POST",
                                people["root"], "")
    assert (status, error_of(answer)) == (404, "no_such_server")
    service.node_client.unreachable.add("https://127.0.0.1:9001")
    status, answer = await call(http_client, base_url, "/api/v1/servers/node2/offline", "POST",
                                people["root"], "")
    assert (status, error_of(answer)) == (503, "node_unreachable")


# -- query arguments and server views ----------------------------------------------------------


@pytest.mark.gen_test
async def test_bad_query_arguments_are_400_with_the_argument_named(http_client, base_url, people):
    for query in ("/api/v1/servers/node1/storage?since=yesterday",
                  "/api/v1/servers/node1/storage?limit=many", "/api/v1/events?after=x"):
        status, answer = await call(http_client, base_url, query, token=people["bob"])
        assert (status, error_of(answer)) == (400, "bad_argument"), query
    status, answer = await call(
        http_client, base_url, "/api/v1/servers/node1/storage?since=2026-01-31T12:00:00%2000:00",
        token=people["bob"])
    assert (status, answer) == (200, {"server": "node1", "samples": []})
    status, answer = await call(http_client, base_url, "/api/v1/servers", token=people["bob"])
    assert status == 200 and [s["name"] for s in answer["servers"]] == list(NODES)
    assert (answer["replicas"], answer["tls"]) == (1, True)


@pytest.mark.gen_test
async def test_non_administrators_see_their_own_events(http_client, base_url, people):
    status, answer = await call(http_client, base_url, "/api/v1/events", token=people["bob"])
    assert status == 200 and {e["username"] for e in answer["events"]} == {"bob"}
    status, answer = await call(http_client, base_url, "/api/v1/events", token=people["root"])
    assert {"alice", "bob", "root"} <= {e["username"] for e in answer["events"]}


# -- over HTTPS: node and user certificates from the test CA -------------------------------------


def tls_client(certs, cert=None, key=None):
    layout, _ = certs
    return dict(ssl_options=client_context(layout.ca_cert, cert, key))


@pytest.mark.gen_test
async def test_a_node_certificate_names_the_reporter(https_client, base_url, certs, people,
                                                     service):
    layout, _ = certs
    node1 = tls_client(certs, layout.server_cert("node1"), layout.server_key("node1"))
    for server, want in (("node2", 403), ("node1", 200)):
        status, _ = await call(https_client, base_url, "/api/v1/reports", "POST", body={
            "reports": [file_report(server, "alice", f"{server}.txt")]}, **node1)
        assert status == want, server
    admin_cert = tls_client(certs, layout.server_cert("admin"), layout.server_key("admin"))
    ask = f"/api/v1/authorize?user=bob&path=alice/docs/a&uid={service.accounts.get('bob').uid}"
    status, answer = await call(https_client, base_url, ask, **admin_cert)
    assert (status, error_of(answer)) == (403, "not_a_node")
    status, answer = await call(https_client, base_url, ask, **node1)
    assert status == 200 and answer["role"] == "reader" and answer["active"] is True


@pytest.mark.gen_test
async def test_a_user_certificate_is_a_credential_and_a_server_certificate_is_not_a_user(
        https_client, base_url, certs, people, service):
    cert, key = user_certificate(certs, service, "bob")
    status, answer = await call(https_client, base_url, "/api/v1/me", **tls_client(certs, cert, key))
    assert status == 200 and answer["username"] == "bob"
    layout, _ = certs
    node1 = tls_client(certs, layout.server_cert("node1"), layout.server_key("node1"))
    status, answer = await call(https_client, base_url, "/api/v1/me", **node1)
    assert (status, error_of(answer)) == (403, "not_a_user")
    with pytest.raises(ssl.SSLError):
        await https_client.fetch(base_url + "/status",
                                 ssl_options=ssl.create_default_context())  # not our CA
