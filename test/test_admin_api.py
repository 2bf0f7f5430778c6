"""Probe tests of the admin server's REST API over HTTPS, against a real cluster.

One cluster (admin server and three nodes, SQLite) serves the whole module; the core flow
runs once more on PostgreSQL. Failed logins count per source address, so tests that fail
logins on purpose call from their own loopback addresses (127.0.0.x) and leave 127.0.0.1,
which everything else uses, unthrottled.
"""
import email
import http.client
import json
from datetime import datetime, timezone
from email import policy
from urllib.parse import quote, urlencode, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import create_engine, text

from securifile.common.tls import client_context

from .clusters import start_cluster
from .databases import fresh_postgres_database
from .helpers import AdminApi, Api, Response, wait_for

PASSWORD = "correct horse battery"


# -- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One cluster for the whole module."""
    cluster = start_cluster(tmp_path_factory, "admin-api")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def admin(shared):
    return AdminApi(shared)


@pytest.fixture(scope="module")
def alice(shared):
    return AdminApi(shared, "alice")


@pytest.fixture(scope="module")
def bob(shared, admin):
    admin.add_user("bob")
    return admin.as_user("bob")


@pytest.fixture(scope="module")
def carol(shared, admin):
    admin.add_user("carol")
    return admin.as_user("carol")


def call(cluster, method, path, payload=None, token=None, source=None, body=None, ctx=None):
    """One request to the admin server, optionally from another loopback address."""
    u = urlsplit(cluster.cfg.admin_url)
    conn = http.client.HTTPSConnection(
        u.hostname, u.port, timeout=30, context=ctx or client_context(cluster.layout.ca_cert),
        source_address=(source, 0) if source else None)
    headers = {}
    if payload is not None:
        body = json.dumps(payload)
    if body is not None:
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        return Response(r.status, r.headers, r.read())
    finally:
        conn.close()


def login(cluster, username, password, source=None):
    return call(cluster, "POST", "/api/v1/login", {"username": username, "password": password},
                source=source)


def error_of(r):
    """The (status, code) of a JSON error answer, checking its shape on the way."""
    assert r.headers["Content-Type"].startswith("application/json"), r
    err = r.json()["error"]
    assert set(err) >= {"code", "message"} and err["message"], r
    return r.status, err["code"]


def password_of(cluster, username):
    return json.loads((cluster.data_dir / "credentials" / f"{username}.json").read_text())["password"]


def mails_to(cluster, address):
    """The account e-mails in the admin server's outbox for ``address``, oldest first."""
    found = []
    for path in sorted((cluster.data_dir / "admin" / "outbox").glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        if address in message["To"]:
            found.append((message["Subject"], message.get_body(("plain",)).get_content()))
    return found


def listing(api, prefix, **query):
    r = api.get("/api/v1/files?" + urlencode(dict(prefix=prefix, **query)))
    assert r.status == 200, r
    return r.json()


def paths(body):
    return [f["path"] for f in body["files"]]


def server_statuses(admin):
    return {s["name"]: s["status"] for s in admin.get("/api/v1/servers").json()["servers"]}


# -- login ---------------------------------------------------------------------------------


def test_login_by_user_name_or_email_gives_a_token_the_nodes_accept(shared):
    password = password_of(shared, "alice")
    r = login(shared, "alice", password)
    assert r.status == 200, r
    body = r.json()
    assert body["username"] == "alice" and body["token"]
    expires = datetime.fromisoformat(body["expires_at"])
    assert expires <= datetime.fromisoformat(body["valid_until"])
    assert expires > datetime.now(timezone.utc)
    by_email = login(shared, "alice@localhost", password)
    assert by_email.status == 200 and by_email.json()["username"] == "alice"
    me = call(shared, "GET", "/api/v1/me", token=body["token"])
    assert me.status == 200 and me.json()["username"] == "alice"
    node = Api(shared, cert=False, token=by_email.json()["token"])
    assert node.put("node2", "alice/login/token.txt", b"by token").status == 201


def test_wrong_password_and_unknown_user_get_the_same_401(shared, bob):
    wrong = login(shared, "bob", "not the password", source="127.0.0.11")
    unknown = login(shared, "nobody", "not the password", source="127.0.0.11")
    unknown_email = login(shared, "nobody@example.com", "x" * 10, source="127.0.0.11")
    for r in (wrong, unknown, unknown_email):
        assert error_of(r) == (401, "bad_credentials")
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert wrong.json() == unknown.json() == unknown_email.json()
    assert error_of(call(shared, "POST", "/api/v1/login", {"username": "bob"},
                         source="127.0.0.12"))[0] == 400


def test_an_expired_account_gets_403_with_a_message_that_says_so(shared, admin):
    made = admin.add_user("ephemeral", valid_days=2 / 86400)  # two seconds
    until = datetime.fromisoformat(made["valid_until"])

    def refused():
        r = login(shared, "ephemeral", PASSWORD)
        return r if r.status == 403 else None

    r = wait_for(refused, timeout=20, interval=0.2, what="the account to expire")
    assert datetime.now(timezone.utc) >= until
    assert error_of(r) == (403, "account_expired")
    assert "expired" in r.json()["error"]["message"]


def test_failed_logins_are_rate_limited_per_account_and_per_address(shared, admin, bob):
    admin.add_user("target")
    for i in range(5):  # five addresses, one account
        assert login(shared, "target", "wrong password", source=f"127.0.0.{20 + i}").status == 401
    r = login(shared, "target", PASSWORD, source="127.0.0.30")  # the right password, too late
    assert error_of(r) == (429, "too_many_attempts")
    assert 0 < int(r.headers["Retry-After"]) <= 301
    for i in range(5):  # one address, five accounts
        assert login(shared, f"ghost{i}", "wrong password", source="127.0.0.40").status == 401
    r = login(shared, "bob", PASSWORD, source="127.0.0.40")
    assert error_of(r) == (429, "too_many_attempts") and int(r.headers["Retry-After"]) > 0
    assert login(shared, "bob", PASSWORD, source="127.0.0.41").status == 200


# -- servers and storage -------------------------------------------------------------------


def test_servers_with_status_and_storage(shared, bob):
    def all_sampled():
        body = bob.get("/api/v1/servers").json()
        ok = all(s["status"] == "running" and s["available_bytes"] > 0 for s in body["servers"])
        return body if ok else None

    body = wait_for(all_sampled, what="every server running with a storage sample")
    assert body["replicas"] == 1
    assert [(s["name"], s["url"]) for s in body["servers"]] == \
        [(s.name, s.url) for s in shared.cfg.servers]
    for s in body["servers"]:
        assert set(s) >= {"name", "url", "status", "used_bytes", "available_bytes", "since"}
        assert datetime.fromisoformat(s["since"]).tzinfo is not None
    assert error_of(call(shared, "GET", "/api/v1/servers")) == (401, "unauthenticated")


def test_storage_samples_and_since(shared, bob):
    def samples():
        got = bob.get("/api/v1/servers/node1/storage").json()["samples"]
        return got if len(got) >= 3 else None

    every = wait_for(samples, what="three storage samples from node1")
    times = [datetime.fromisoformat(s["t"]) for s in every]
    assert times == sorted(times)
    assert all(s["available_bytes"] > 0 and s["used_bytes"] >= 0 for s in every)
    since = every[1]["t"]
    later = bob.get("/api/v1/servers/node1/storage?" + urlencode({"since": since})).json()["samples"]
    assert later[0] == every[1] and all(datetime.fromisoformat(s["t"]) >= times[1] for s in later)
    # As typed into curl without encoding: '+00:00' arrives as ' 00:00'.
    raw = bob.get(f"/api/v1/servers/node1/storage?since={since}")
    assert raw.status == 200 and raw.json()["samples"][0] == every[1]
    assert error_of(bob.get("/api/v1/servers/node1/storage?since=yesterday")) == (400, "bad_argument")


# -- users ---------------------------------------------------------------------------------


def test_administrators_create_accounts_and_the_owner_gets_an_email(shared, admin):
    r = admin.call("POST", "/api/v1/users", {"username": "dora", "email": "Dora@Example.com",
                                             "valid_days": 10, "password": "the secret pw of D"})
    assert r.status == 201, r
    made = r.json()
    assert (made["username"], made["email"], made["email_sent"]) == ("dora", "dora@example.com", True)
    assert "password" not in made and "enrolment_code" not in made
    until = datetime.fromisoformat(made["valid_until"])
    [(subject, body)] = mails_to(shared, "dora@example.com")
    assert "account" in subject
    assert "dora" in body and shared.cfg.admin_url in body
    assert "the secret pw of D" not in body  # never a password in an e-mail
    assert f"{until:%Y-%m-%d}" in body and "10 days" in body
    assert login(shared, "dora", "the secret pw of D").status == 200

    enrolling = admin.call("POST", "/api/v1/users", {"username": "ezra", "email": "ezra@example.com",
                                                     "valid_days": 5})
    assert enrolling.status == 201, enrolling
    assert "password" not in enrolling.json() and enrolling.json()["enrolment_expires_at"]
    body = mails_to(shared, "ezra@example.com")[0][1]
    code = body.split("Enrolment code:")[1].split()[0]
    r = call(shared, "POST", "/api/v1/enrol", {"username": "ezra", "code": code,
                                                "password": PASSWORD})
    assert r.status == 200, r
    assert login(shared, "ezra", PASSWORD).status == 200


@pytest.mark.parametrize("payload, expected", [
    ({"username": "bob", "email": "new@example.com"}, (409, "user_exists")),
    ({"username": "bobby", "email": "BOB@example.com"}, (409, "user_exists")),
    ({"username": "frank", "email": "frank@example.com", "password": "short"}, (400, "weak_password")),
    ({"username": "frank", "email": "no-at-sign"}, (400, "invalid_email")),
    ({"username": "Frank", "email": "frank@example.com"}, (400, "invalid_username")),
    ({"username": "frank", "email": "frank@example.com", "valid_days": "soon"}, (400, "invalid_validity")),
])
def test_bad_or_duplicate_accounts_are_refused(shared, admin, bob, payload, expected):
    body = dict({"valid_days": 10, "password": PASSWORD}, **payload)
    assert error_of(admin.call("POST", "/api/v1/users", body)) == expected
    assert not mails_to(shared, "frank@example.com") and not mails_to(shared, "new@example.com")


def test_only_administrators_add_and_remove_accounts(shared, admin, bob):
    assert error_of(bob.call("POST", "/api/v1/users", {"username": "gina", "email": "g@example.com",
                                                       "valid_days": 1})) == (403, "admin_only")
    assert error_of(bob.call("DELETE", "/api/v1/users/carol")) == (403, "admin_only")
    assert error_of(bob.call("POST", "/api/v1/servers/node1/offline")) == (403, "admin_only")
    admin.add_user("gina")
    gina = admin.as_user("gina")
    users = {u["username"]: u for u in admin.get("/api/v1/users").json()["users"]}
    assert users["gina"]["email"] == "gina@example.com"
    assert (users["gina"]["file_count"], users["gina"]["total_bytes"]) == (0, 0)
    seen_by_bob = {u["username"]: u for u in bob.get("/api/v1/users").json()["users"]}
    assert "gina" not in seen_by_bob and seen_by_bob["bob"]["email"] == "bob@example.com"

    r = admin.call("DELETE", "/api/v1/users/gina")
    assert r.status == 204 and not r.body
    assert error_of(login(shared, "gina", PASSWORD, source="127.0.0.50")) == (401, "bad_credentials")
    assert error_of(gina.get("/api/v1/me")) == (403, "no_such_user")  # the old token is dead too
    assert error_of(admin.call("DELETE", "/api/v1/users/gina")) == (404, "no_such_user")
    assert "gina" not in {u["username"] for u in admin.get("/api/v1/users").json()["users"]}
    assert any("removed" in subject for subject, _ in mails_to(shared, "gina@example.com"))


# -- files and access ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree(shared, alice):
    """alice's files, uploaded through node1 and reported to the admin server."""
    node = Api(shared)  # alice's client certificate
    for path in ("docs/a.txt", "docs/b.txt", "docs/c.txt", "docs/sub/d.txt", "private/p.txt"):
        assert node.put("node1", f"alice/{path}", path.encode()).status == 201
    wait_for(lambda: len(paths(listing(alice, "alice/docs/", recursive=1))) == 4
             and listing(alice, "alice/private/")["files"],
             what="the admin server to learn of alice's files")


def test_user_files_and_listing_under_a_prefix(shared, tree, admin, alice, bob):
    owned = alice.get("/api/v1/users/alice/files").json()
    assert owned["file_count"] == len(owned["files"]) >= 5
    assert owned["total_bytes"] == sum(f["size"] for f in owned["files"])
    a = next(f for f in owned["files"] if f["path"] == "docs/a.txt")
    assert (a["size"], a["version"]) == (len(b"docs/a.txt"), 1)
    assert a["digest"] and a["modified"]
    assert admin.get("/api/v1/users/alice/files").json()["files"] == owned["files"]
    assert error_of(bob.get("/api/v1/users/alice/files"))[0] == 403

    docs = listing(alice, "alice/docs/")
    assert paths(docs) == ["docs/a.txt", "docs/b.txt", "docs/c.txt"] and docs["folders"] == ["docs/sub"]
    f = docs["files"][0]
    assert set(f) >= {"owner", "path", "size", "digest", "algorithm", "version", "modified",
                      "origin", "replicas", "role"}
    assert (f["owner"], f["algorithm"], f["origin"], f["role"]) == ("alice", "sha256", "node1", "owner")
    assert [r["priority"] for r in f["replicas"]] == [1] and f["replicas"][0]["server"] != "node1"
    assert paths(listing(alice, "alice/docs/", recursive=1)) == \
        ["docs/a.txt", "docs/b.txt", "docs/c.txt", "docs/sub/d.txt"]
    first = listing(alice, "alice/docs/", limit=2)
    assert paths(first) == ["docs/a.txt", "docs/b.txt"] and first["next"] == "docs/b.txt"
    rest = listing(alice, "alice/docs/", limit=2, after=first["next"])
    assert paths(rest) == ["docs/c.txt"] and rest["next"] is None
    assert error_of(bob.get("/api/v1/files?prefix=alice/docs/"))[0] == 403
    assert error_of(alice.get("/api/v1/files?prefix=alice/docs/a.txt")) == (400, "bad_prefix")


def test_grants_show_the_grantee_what_was_shared_and_nothing_else(shared, tree, alice, bob, carol):
    r = alice.call("PUT", "/api/v1/acl/alice/docs/sub/", {"username": "bob", "role": "reader"})
    assert r.status == 200, r
    top = listing(bob, "alice/docs/")
    assert paths(top) == [] and top["folders"] == ["docs/sub"]
    assert [(f["path"], f["role"]) for f in listing(bob, "alice/docs/sub/")["files"]] == \
        [("docs/sub/d.txt", "reader")]
    acl = alice.get("/api/v1/acl/alice/docs/sub/").json()
    assert acl["owner"] == "alice"
    assert [(g["username"], g["role"]) for g in acl["grants"]] == [("bob", "reader")]

    # A reader cannot grant; a master grants for others but never touches the owner.
    assert error_of(bob.call("PUT", "/api/v1/acl/alice/docs/sub/", {"username": "carol",
                                                                     "role": "reader"}))[0] == 403
    assert alice.call("PUT", "/api/v1/acl/alice/docs/", {"username": "carol", "role": "master"}).status == 200
    assert carol.call("PUT", "/api/v1/acl/alice/docs/", {"username": "bob", "role": "editor"}).status == 200
    assert error_of(carol.call("PUT", "/api/v1/acl/alice/docs/",
                               {"username": "alice", "role": "reader"})) == (403, "owner_immutable")
    assert error_of(carol.call("DELETE", "/api/v1/acl/alice/docs/?username=alice")) == \
        (403, "owner_immutable")
    assert error_of(alice.call("PUT", "/api/v1/acl/alice/docs/",
                               {"username": "bob", "role": "owner"})) == (400, "invalid_role")
    assert {(f["path"], f["role"]) for f in listing(bob, "alice/docs/")["files"]} >= \
        {("docs/a.txt", "editor")}
    assert carol.call("DELETE", "/api/v1/acl/alice/docs/?username=bob").status == 204

    r = alice.call("DELETE", "/api/v1/acl/alice/docs/sub/?username=bob")
    assert r.status == 204
    assert error_of(alice.call("DELETE", "/api/v1/acl/alice/docs/sub/?username=bob")) == \
        (404, "no_such_grant")
    assert alice.get("/api/v1/acl/alice/docs/sub/").json()["grants"] == []
    assert error_of(bob.get("/api/v1/files?prefix=alice/docs/"))[0] == 403


def test_percent_encoded_paths_are_decoded_exactly_once(shared, alice, bob):
    node = Api(shared)
    for name in ("aA.txt", "a%41.txt", "my file.txt"):
        assert node.put("node1", f"alice/enc/{name}", name.encode()).status == 201
    grant = alice.call("PUT", "/api/v1/acl/alice/enc/" + quote("aA.txt"),
                       {"username": "bob", "role": "reader"})
    assert grant.status == 200 and grant.json()["path"] == "enc/aA.txt"
    assert alice.call("PUT", "/api/v1/acl/alice/enc/" + quote("my file.txt"),
                      {"username": "bob", "role": "reader"}).json()["path"] == "enc/my file.txt"
    literal = alice.get("/api/v1/acl/alice/enc/" + quote("a%41.txt")).json()
    assert (literal["path"], literal["grants"]) == ("enc/a%41.txt", [])
    # The node asks the admin server too: bob reads the shared file, not its look-alike.
    bob_node = alice.node_api(bob.token)
    assert bob_node.follow("node1", "GET", "alice/enc/aA.txt")[1].status == 200
    assert bob_node.follow("node1", "GET", "alice/enc/my file.txt")[1].status == 200
    assert bob_node.follow("node1", "GET", "alice/enc/a%41.txt")[1].status == 403
    wait_for(lambda: {"enc/a%41.txt", "enc/my file.txt"} <= set(paths(listing(alice, "alice/enc/"))),
             what="the reports of the three uploads")
    assert paths(listing(bob, "alice/enc/")) == ["enc/aA.txt", "enc/my file.txt"]


# -- certificates --------------------------------------------------------------------------


def make_csr(common_name, unit):
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SecuriFile"),
                                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
                                    x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
           .sign(key, hashes.SHA256()))
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


def test_a_signed_csr_is_a_client_certificate_for_the_caller_only(shared, bob, tmp_path):
    key, csr = make_csr("admin", "node")  # asks for more than it may have
    r = bob.call("POST", "/api/v1/certificates", {"csr": csr})
    assert r.status == 201, r
    body = r.json()
    cert = x509.load_pem_x509_certificate(body["certificate"].encode())
    ca = x509.load_pem_x509_certificate(shared.layout.ca_cert.read_bytes())
    assert body["ca"].encode() == shared.layout.ca_cert.read_bytes()
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "bob"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "user"
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    valid_until = datetime.fromisoformat(bob.get("/api/v1/me").json()["valid_until"])
    assert cert.not_valid_after_utc <= valid_until
    assert datetime.fromisoformat(body["not_after"]) == cert.not_valid_after_utc

    cert_path, key_path = tmp_path / "bob.crt", tmp_path / "bob.key"
    cert_path.write_text(body["certificate"])
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    node = Api(shared).with_identity(cert=str(cert_path), key=str(key_path))
    assert node.put("node2", "bob/mtls.txt", b"by certificate").status == 201
    assert node.follow("node2", "GET", "bob/mtls.txt")[1].body == b"by certificate"
    assert node.put("node2", "alice/mtls.txt", b"not mine").status == 403
    mtls = client_context(shared.layout.ca_cert, str(cert_path), str(key_path))
    me = call(shared, "GET", "/api/v1/me", ctx=mtls)  # the admin server takes it too
    assert me.status == 200 and me.json()["username"] == "bob"


def test_bad_certificate_requests(shared, bob):
    assert error_of(bob.call("POST", "/api/v1/certificates", {"csr": "not a CSR"})) == (400, "bad_csr")
    assert error_of(bob.call("POST", "/api/v1/certificates", {})) == (400, "bad_csr")
    _, csr = make_csr("bob", "user")
    assert error_of(call(shared, "POST", "/api/v1/certificates", {"csr": csr}))[0] == 401


# -- events, OpenAPI, errors ---------------------------------------------------------------


def test_recent_events(shared, admin, bob):
    bob.get("/api/v1/me")

    def events_with_bob():
        got = admin.get("/api/v1/events?limit=1000").json()["events"]
        return got if any(e["kind"] == "login" and e["username"] == "bob" for e in got) else None

    # Events reach the database through the syslog receiver: soon, not at once.
    events = wait_for(events_with_bob, what="bob's login among the events")
    ids = [e["id"] for e in events]
    assert ids == sorted(ids)
    assert any(e["kind"] == "account" and e["username"] == "bob" and e["operation"] == "create_user"
               for e in events), events
    assert admin.get(f"/api/v1/events?after={ids[-1] + 10**6}").json() == {"events": [], "next": None}
    paged, after = [], 0  # keyset pages of 2 from the start: every event, in order, no gap
    for _ in range(len(ids)):
        page = admin.get(f"/api/v1/events?after={after}&limit=2").json()
        assert len(page["events"]) <= 2
        paged += [e["id"] for e in page["events"]]
        after = page["next"]
        if after is None or len(paged) >= len(ids):
            break
    assert paged[:len(ids)] == ids and after in (None, paged[-1])
    own = bob.get("/api/v1/events?limit=1000").json()["events"]
    assert any(e["kind"] == "login" for e in own)
    assert all(e["username"] == "bob" or e["path"].startswith("bob/") for e in own)


SPEC_ENDPOINTS = [
    ("post", "/api/v1/login"), ("get", "/api/v1/servers"), ("get", "/api/v1/servers/{name}/storage"),
    ("get", "/api/v1/users"), ("post", "/api/v1/users"), ("delete", "/api/v1/users/{username}"),
    ("get", "/api/v1/users/{username}/files"), ("get", "/api/v1/files"),
    ("get", "/api/v1/acl/{owner}/{path}"), ("put", "/api/v1/acl/{owner}/{path}"),
    ("delete", "/api/v1/acl/{owner}/{path}"), ("post", "/api/v1/servers/{name}/offline"),
    ("post", "/api/v1/servers/{name}/online"), ("post", "/api/v1/certificates"),
    ("get", "/api/v1/events"),
]


def test_openapi_documents_on_the_admin_server_and_every_node(shared):
    doc = call(shared, "GET", "/api/v1/openapi.json").json()  # no credentials needed
    assert doc["openapi"].startswith("3.")
    for method, path in SPEC_ENDPOINTS:
        assert method in doc["paths"].get(path, {}), (method, path)
    for path in ("/api/v1/users", "/api/v1/users/{username}/files", "/api/v1/files",
                 "/api/v1/events"):  # every listing pages with a keyset cursor
        assert {"after", "limit"} <= {p["name"] for p in doc["paths"][path]["get"]["parameters"]}
    for name in shared.names:
        node = Api(shared, cert=False, token="")
        r = node.request(name, "GET", "/api/v1/openapi.json", raw_path=True)
        assert r.status == 200, r
        spec = r.json()
        assert spec["openapi"].startswith("3.")
        assert {"put", "get", "head", "delete"} <= set(spec["paths"]["/files/{owner}/{path}"])


def test_errors_are_json_with_the_right_status(shared, admin, alice):
    assert error_of(call(shared, "POST", "/api/v1/login", body="{not json")) == (400, "invalid_json")
    assert error_of(admin.call("POST", "/api/v1/users", [1, 2])) == (400, "invalid_json")
    assert error_of(alice.call("PUT", "/api/v1/acl/alice/docs/", "just a string")) == (400, "invalid_json")
    assert error_of(admin.get("/api/v1/no-such-thing")) == (404, "no_endpoint")
    assert error_of(call(shared, "GET", "/nowhere")) == (404, "no_endpoint")
    assert error_of(admin.call("PATCH", "/api/v1/users"))[0] == 405
    assert error_of(alice.get("/api/v1/acl/alice/../bob/x"))[0] == 400
    assert error_of(call(shared, "GET", "/api/v1/users", token="not.a.token"))[0] == 401


# -- taking servers offline (last: it disturbs the cluster) --------------------------------


def test_administrators_take_a_server_offline_and_back_online(shared, admin):
    wait_for(lambda: set(server_statuses(admin).values()) == {"running"}, what="all running")
    assert error_of(admin.call("POST", "/api/v1/servers/node9/offline")) == (404, "no_such_server")
    r = admin.call("POST", "/api/v1/servers/node3/offline")
    assert r.status == 200 and r.json()["admin_state"] == "offline"
    wait_for(lambda: server_statuses(admin)["node3"] == "offline", what="node3 listed offline")
    wait_for(lambda: Api(shared).sees("node1", "node3", "down"), what="node1 to see node3 down")
    assert server_statuses(admin)["node1"] == "running"
    assert admin.call("POST", "/api/v1/servers/node3/online").status == 200
    wait_for(lambda: server_statuses(admin) == dict.fromkeys(shared.names, "running"),
             what="node3 running again")
    def since_down(observer):
        """``observer``'s views of node3 since it last saw it down, newest first."""
        changes = admin.get("/api/v1/servers/node3/history").json()["history"]
        views = [c["new"] for c in changes if c["observer"] == observer]
        return views[:views.index("down")] if "down" in views else None

    def back(observer):
        views = since_down(observer)
        return views if views and views[0] == "running" else None

    # node1 reports each change it sees: node3 verified on its return, then running.
    seen = wait_for(lambda: back("node1"), what="node1's report of node3 running again")
    assert "verifying" in seen and set(seen) <= {"running", "verifying"}, seen
    # The cluster's view is judged from the latest report of each node: it can go from down
    # to running at once (both peers verified node3 within one report), or back to
    # verifying for a moment when the second peer starts later than the first.
    cluster = wait_for(lambda: back("cluster"), what="the cluster's view of node3 running")
    assert set(cluster) <= {"running", "verifying"}, cluster


# -- the core flow on PostgreSQL -----------------------------------------------------------


def test_core_flow_with_the_admin_database_on_postgresql(tmp_path_factory):
    url, drop = fresh_postgres_database()
    cluster = None
    try:
        cluster = start_cluster(tmp_path_factory, "admin-pg", servers=2, database_url=url)
        admin = AdminApi(cluster)
        admin.add_user("hugo")
        hugo = admin.as_user("hugo")
        wait_for(lambda: set(server_statuses(admin).values()) == {"running"}, what="both running")
        node = hugo.node_api()
        assert node.put("node2", "hugo/notes/today.txt", b"twelve bytes").status == 201
        body = wait_for(lambda: listing(hugo, "hugo/notes/")["files"], what="the file in the catalogue")
        assert [(f["path"], f["size"], f["origin"]) for f in body] == [("notes/today.txt", 12, "node2")]
        assert body[0]["replicas"] == [{"server": "node1", "priority": 1}]
        users = {u["username"]: u for u in admin.get("/api/v1/users").json()["users"]}
        assert (users["hugo"]["file_count"], users["hugo"]["total_bytes"]) == (1, 12)
        assert node.request("node2", "DELETE", "hugo/notes/today.txt").status == 204
        wait_for(lambda: not listing(hugo, "hugo/")["folders"], what="the deletion in the catalogue")
        engine = create_engine(url)
        try:
            with engine.connect() as c:  # it really is the PostgreSQL database
                assert c.scalar(text("SELECT count(*) FROM users WHERE username = 'hugo'")) == 1
                assert c.scalar(text("SELECT file_count FROM owner_usage WHERE owner = 'hugo'")) == 0
        finally:
            engine.dispose()
    finally:
        if cluster is not None:
            cluster.stop()
        drop()
