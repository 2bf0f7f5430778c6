"""Security controls of issue 9, each with the attack it stops (see docs/SECURITY.md).

Tier 1 runs the account logic on SQLite and PostgreSQL (``sessions``); the probe tests run a
real cluster (admin server and nodes over TLS, one for the module) and, for the debug mode,
one without TLS.
"""
import email
import json
import re
import stat
import threading
import time
from datetime import datetime, timedelta, timezone
from email import policy
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from securifile.admin import accounts as accounts_module
from securifile.admin.accounts import Accounts, LoginThrottle
from securifile.admin.passwords import check_password, generate_password
from securifile.common.certs import CertificateAuthority
from securifile.common.errors import ApiError

from .clusters import start_cluster
from .fakes import Clock
from .helpers import AdminApi, Api, Response, wait_for
from .test_cli_admin import User, password_of

PASSWORD = "correct horse battery"
NEW_PASSWORD = "violet kettle under moonlight"


def new_accounts(sessions, clock=None):
    return Accounts(sessions, clock or (lambda: datetime.now(timezone.utc)), bcrypt_rounds=4)


def api_error(call, *args):
    with pytest.raises(ApiError) as e:
        call(*args)
    return e.value.status, e.value.code


# -- 6. passwords: policy ----------------------------------------------------------------------


@pytest.mark.parametrize("password, username, mail", [
    ("short pw", "bob", "bob@example.com"),                 # under 12 characters
    ("aaaaaaaaaaaa", "bob", "bob@example.com"),             # long but trivial
    ("password1234", "bob", "bob@example.com"),             # a common password
    ("qwertyuiop12", "bob", "bob@example.com"),             # a keyboard walk
    ("robert-the-bruce-1314", "robert", "rb@example.com"),  # holds the user name
    ("mail:bruce.wayne!", "bob", "bruce.wayne@example.com"),  # holds the e-mail's local part
])
def test_the_password_policy_refuses_weak_and_personal_passwords(password, username, mail):
    with pytest.raises(ApiError) as e:
        check_password(password, username, mail)
    assert (e.value.status, e.value.code) == (400, "weak_password")


def test_the_password_policy_accepts_strong_ones_and_generated_ones_pass():
    assert check_password(PASSWORD, "bob", "bob@example.com") == PASSWORD
    for name in ("admin", "alice"):
        assert check_password(generate_password(name, f"{name}@localhost"), name,
                              f"{name}@localhost")


def test_creating_an_account_applies_the_policy(sessions):
    accounts = new_accounts(sessions)
    assert api_error(accounts.create, "bob", "bob@example.com", 30, "password1234") == \
        (400, "weak_password")
    assert api_error(accounts.create, "bob", "bob@example.com", 30, "bob-bob-bob-bob!") == \
        (400, "weak_password")
    assert accounts.get("bob") is None


# -- 6. passwords: enrolment instead of a password in the e-mail --------------------------------


def test_an_enrolment_code_works_once_and_only_for_its_account(sessions):
    accounts = new_accounts(sessions)
    eve = accounts.create("eve", "eve@example.com", 30, PASSWORD)
    new = accounts.create("dave", "dave@example.com", 30)
    assert eve.enrolment_code is None and new.enrolment_code
    # The database keeps only a hash of the code.
    with sessions() as s:
        from securifile.admin.models import Enrolment
        stored = [row.code_hash for row in s.query(Enrolment).all()]
    assert new.enrolment_code not in stored and len(stored) == 1
    assert api_error(accounts.enrol, "eve", new.enrolment_code, NEW_PASSWORD) == \
        (401, "bad_enrolment_code")  # another account's code
    assert api_error(accounts.enrol, "dave", new.enrolment_code, "password1234") == \
        (400, "weak_password")  # the policy holds, and the code is not used up by that
    accounts.enrol("dave", new.enrolment_code, NEW_PASSWORD)
    assert accounts.authenticate("dave", NEW_PASSWORD, "10.0.0.1").username == "dave"
    assert api_error(accounts.enrol, "dave", new.enrolment_code, PASSWORD) == \
        (401, "bad_enrolment_code")  # single use
    assert accounts.authenticate("dave", NEW_PASSWORD, "10.0.0.1").username == "dave"


def test_an_enrolment_code_expires_and_a_new_one_replaces_it(sessions):
    clock = Clock(datetime(2030, 1, 1, tzinfo=timezone.utc))
    accounts = Accounts(sessions, clock, bcrypt_rounds=4, enrolment_seconds=3600)
    first = accounts.create("dave", "dave@example.com", 30)
    _, second, _ = accounts.issue_enrolment("dave")
    assert api_error(accounts.enrol, "dave", first.enrolment_code, NEW_PASSWORD) == \
        (401, "bad_enrolment_code")  # replaced
    clock.advance(3601)
    assert api_error(accounts.enrol, "dave", second, NEW_PASSWORD) == (401, "enrolment_expired")
    _, third, _ = accounts.issue_enrolment("dave")
    assert accounts.enrol("dave", third, NEW_PASSWORD).username == "dave"


def test_an_account_without_a_password_cannot_log_in_before_enrolling(sessions):
    accounts = new_accounts(sessions)
    accounts.create("dave", "dave@example.com", 30)
    for guess in ("!enrol", "anything at all", PASSWORD):
        assert api_error(accounts.authenticate, "dave", guess, "10.0.0.1") == \
            (401, "bad_credentials")


def test_changing_the_password_needs_the_current_one_and_the_policy(sessions):
    accounts = new_accounts(sessions)
    accounts.create("bob", "bob@example.com", 30, PASSWORD)
    assert api_error(accounts.change_password, "bob", "not my password", NEW_PASSWORD,
                     "10.0.0.1") == (401, "bad_credentials")
    assert api_error(accounts.change_password, "bob", PASSWORD, "bobbobbobbob", "10.0.0.1") == \
        (400, "weak_password")
    accounts.change_password("bob", PASSWORD, NEW_PASSWORD, "10.0.0.1")
    assert api_error(accounts.authenticate, "bob", PASSWORD, "10.0.0.2") == \
        (401, "bad_credentials")
    assert accounts.authenticate("bob", NEW_PASSWORD, "10.0.0.2").username == "bob"


# -- 7. login throttling per account -------------------------------------------------------------


def test_name_and_e_mail_of_one_account_share_one_bucket(sessions):
    accounts = new_accounts(sessions)
    accounts.throttle = LoginThrottle(limit=4, window=300.0, clock=Clock(1000.0))
    accounts.create("bob", "bob@example.com", 30, PASSWORD)
    for i, login in enumerate(("bob", "BOB@example.com", "Bob", "bob@EXAMPLE.com")):
        assert api_error(accounts.authenticate, login, "wrong guess", f"10.0.0.{i}")[0] == 401
    assert api_error(accounts.authenticate, "bob@example.com", "wrong guess", "10.0.1.1") == \
        (429, "too_many_attempts")


def test_concurrent_guesses_cannot_race_past_the_limit(sessions, monkeypatch):
    accounts = new_accounts(sessions)
    accounts.throttle = LoginThrottle(limit=5, window=300.0)
    accounts.create("bob", "bob@example.com", 30, PASSWORD)
    real = accounts_module.bcrypt.checkpw

    def slow_checkpw(password, hashed):  # a real server's cost: the window for the race
        time.sleep(0.2)
        return real(password, hashed)

    monkeypatch.setattr(accounts_module.bcrypt, "checkpw", slow_checkpw)
    start = threading.Barrier(20)
    outcomes = []

    def guess(i):
        start.wait()
        try:
            accounts.authenticate("bob", f"guess number {i}", f"10.1.0.{i}")
        except ApiError as e:
            outcomes.append(e.status)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(outcomes) == 20
    assert outcomes.count(401) == 5 and outcomes.count(429) == 15


def test_a_stranger_guessing_cannot_lock_the_owner_out(sessions):
    clock = Clock(1000.0)
    accounts = new_accounts(sessions)
    accounts.throttle = LoginThrottle(limit=5, window=300.0, base=1.0, cap=30.0, clock=clock)
    accounts.create("bob", "bob@example.com", 30, PASSWORD)
    assert accounts.authenticate("bob", PASSWORD, "10.0.0.1").username == "bob"  # bob's laptop
    guesses, began = 0, clock()
    for i in range(200):  # a guesser on many addresses, trying whenever the back-off allows
        try:
            accounts.authenticate("bob", f"guess {i}", f"192.0.2.{i % 250}")
        except ApiError as e:
            assert e.status in (401, 429)
            guesses += e.status == 401
            if e.status == 429:
                assert int(e.headers["Retry-After"]) <= 30  # a back-off, not a lockout
                clock.advance(int(e.headers["Retry-After"]))
    # The back-off bounds how fast anybody guesses: 5 free, then 1, 2, 4, 8, 16 s apart,
    # then one every 30 s at most.
    assert guesses >= 20 and (guesses - 10) * 30 <= clock() - began
    # bob's known address is never held back by the stranger's failures ...
    assert accounts.authenticate("bob", PASSWORD, "10.0.0.1").username == "bob"
    # ... and from a new address he waits at most the cap, never the whole window.
    accounts.throttle.failed(("account", accounts.get("bob").id))

    def from_a_new_address():
        try:
            return accounts.authenticate("bob", PASSWORD, "10.9.9.9")
        except ApiError as e:
            assert e.status == 429 and int(e.headers["Retry-After"]) <= 30
            clock.advance(int(e.headers["Retry-After"]))
            return accounts.authenticate("bob", PASSWORD, "10.9.9.9")

    assert from_a_new_address().username == "bob"


# -- 9. the last administrator -------------------------------------------------------------------


def test_the_last_administrator_cannot_be_removed_or_disabled(sessions):
    accounts = new_accounts(sessions)
    accounts.create("root", "root@example.com", 30, PASSWORD, admin=True)
    accounts.create("bob", "bob@example.com", 30, PASSWORD)
    assert api_error(accounts.remove, "root") == (409, "last_admin")
    assert api_error(accounts.set_disabled, "root", True) == (409, "last_admin")
    accounts.create("ops", "ops@example.com", 30, PASSWORD, admin=True)
    accounts.remove("root")
    assert api_error(accounts.remove, "ops") == (409, "last_admin")
    accounts.remove("bob")  # other accounts go as before


# -- 9. the CSR signer refuses weak keys ---------------------------------------------------------


def csr_for(key, name="bob"):
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .sign(key, algorithm).public_bytes(serialization.Encoding.PEM))


@pytest.fixture(scope="module")
def ca():
    return CertificateAuthority.create()


@pytest.mark.parametrize("make_key", [
    lambda: rsa.generate_private_key(65537, 2048),
    lambda: rsa.generate_private_key(65537, 1024),
    lambda: ec.generate_private_key(ec.SECP521R1()),
    lambda: ec.generate_private_key(ec.SECP256K1()),
    lambda: ec.generate_private_key(ec.SECP224R1()),
], ids=["rsa2048", "rsa1024", "p521", "secp256k1", "p224"])
def test_the_csr_signer_refuses_weak_or_unlisted_keys(ca, make_key):
    with pytest.raises(ValueError):
        ca.sign_user_csr(csr_for(make_key()), "bob", datetime.now(timezone.utc) + timedelta(days=1))


@pytest.mark.parametrize("make_key", [
    lambda: ec.generate_private_key(ec.SECP256R1()),
    lambda: ec.generate_private_key(ec.SECP384R1()),
    lambda: ed25519.Ed25519PrivateKey.generate(),
    lambda: rsa.generate_private_key(65537, 3072),
], ids=["p256", "p384", "ed25519", "rsa3072"])
def test_the_csr_signer_accepts_strong_keys(ca, make_key):
    cert = ca.sign_user_csr(csr_for(make_key()), "bob",
                            datetime.now(timezone.utc) + timedelta(days=1))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "bob"


# -- probe tests on a running cluster -------------------------------------------------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    cluster = start_cluster(tmp_path_factory, "security")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def admin(shared):
    return AdminApi(shared)


def raw_call(api, method, path, body=None, headers=None):
    """A request with exactly these headers (AdminApi.call adds Content-Type by itself)."""
    import http.client
    conn = http.client.HTTPSConnection(api.host, api.port, context=api.ctx, timeout=30)
    h = {"Authorization": f"Bearer {api.token}"} if api.token else {}
    h.update(headers or {})
    try:
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        return Response(r.status, r.headers, r.read())
    finally:
        conn.close()


def outbox(cluster, address):
    found = []
    for path in sorted((cluster.data_dir / "admin" / "outbox").glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        if address in message["To"]:
            found.append(message.get_body(("plain",)).get_content())
    return found


def test_json_routes_want_json_and_405_says_what_is_allowed(shared, admin):
    login = json.dumps({"username": "admin", "password": "x" * 12})
    for ctype in ("text/plain", "application/x-www-form-urlencoded", None):
        r = raw_call(AdminApi(shared, username=None), "POST", "/api/v1/login", login,
                     {"Content-Type": ctype} if ctype else {})
        assert r.status == 415 and r.json()["error"]["code"] == "unsupported_media_type", r
    r = raw_call(admin, "POST", "/api/v1/users", json.dumps({"username": "x"}),
                 {"Content-Type": "text/plain"})
    assert r.status == 415, r
    r = raw_call(admin, "DELETE", "/api/v1/me")
    assert r.status == 405 and r.headers["Allow"] == "GET", r
    r = raw_call(admin, "PUT", "/api/v1/login")
    assert r.status == 405 and r.headers["Allow"] == "POST", r
    r = raw_call(admin, "PATCH", "/api/v1/users")
    assert r.status == 405 and set(r.headers["Allow"].split(", ")) == {"GET", "POST"}, r
    node = Api(shared)
    r = node.request("node1", "DELETE", "/status", raw_path=True)
    assert r.status == 405 and "GET" in r.headers["Allow"], r


def test_the_last_administrator_cannot_remove_itself(shared, admin):
    r = admin.call("DELETE", "/api/v1/users/admin")
    assert r.status == 409 and r.json()["error"]["code"] == "last_admin", r
    assert AdminApi(shared).get("/api/v1/me").status == 200


def test_the_admin_server_refuses_a_weak_key_in_a_csr(shared, admin):
    r = admin.call("POST", "/api/v1/certificates",
                   {"csr": csr_for(rsa.generate_private_key(65537, 2048), "admin").decode()})
    assert r.status == 400 and r.json()["error"]["code"] == "bad_csr", r
    assert "RSA" in r.json()["error"]["message"]


def test_users_see_themselves_and_find_others_only_by_exact_name(shared, admin):
    for name in ("lister", "sharer", "stranger"):
        admin.add_user(name)
    lister, sharer = admin.as_user("lister"), admin.as_user("sharer")
    mine = lister.get("/api/v1/users").json()["users"]
    assert [u["username"] for u in mine] == ["lister"] and mine[0]["email"]
    # An exact name answers whether the account exists, and nothing about it.
    assert lister.get("/api/v1/users?username=stranger").json()["users"] == \
        [{"username": "stranger"}]
    assert lister.get("/api/v1/users?username=strange").json()["users"] == []
    assert lister.get("/api/v1/users?username=str_nger").json()["users"] == []
    assert lister.get("/api/v1/users?username=admin").json()["users"] == [{"username": "admin"}]
    # Sharing puts the two in each other's list (the TUI's sharing dialog offers them).
    r = sharer.call("PUT", "/api/v1/acl/sharer/notes/", {"username": "lister", "role": "reader"})
    assert r.status == 200, r
    assert [u["username"] for u in lister.get("/api/v1/users").json()["users"]] == \
        ["lister", "sharer"]
    others = [u for u in lister.get("/api/v1/users").json()["users"] if u["username"] != "lister"]
    assert all(set(u) == {"username"} for u in others)  # no e-mail, admin flag or usage
    everyone = admin.get("/api/v1/users").json()["users"]
    assert {"admin", "lister", "sharer", "stranger"} <= {u["username"] for u in everyone}
    assert all("admin" in u and "total_bytes" in u for u in everyone)


def test_events_filter_treats_underscore_literally(shared, admin):
    admin.add_user("bo_")
    admin.add_user("bob")
    bob, bo_ = admin.as_user("bob"), admin.as_user("bo_")
    r = bob.node_api().put("node1", "bob/diary.txt", b"dear diary")
    assert r.status in (200, 201), r

    def seen_by_admin():
        events = admin.get("/api/v1/events?limit=1000").json()["events"]
        return any(e["path"] == "bob/diary.txt" for e in events)

    wait_for(seen_by_admin, timeout=20, what="bob's upload in the audit events")
    assert any(e["path"] == "bob/diary.txt"
               for e in bob.get("/api/v1/events?limit=1000").json()["events"])
    leaked = [e for e in bo_.get("/api/v1/events?limit=1000").json()["events"]
              if e["username"] != "bo_"]
    assert leaked == []


def test_a_new_account_gets_an_enrolment_code_by_mail_never_a_password(shared, admin):
    r = admin.call("POST", "/api/v1/users", {"username": "newbie", "email": "newbie@example.com",
                                             "valid_days": 30})
    assert r.status == 201, r
    made = r.json()
    assert "password" not in made and "enrolment_code" not in made  # the e-mail went
    (text,) = outbox(shared, "newbie@example.com")
    code = re.search(r"Enrolment code:\s+(\S+)", text).group(1)
    assert "Initial password" not in text
    assert "securifile enrol" in text and "/api/v1/enrol" in text
    anonymous = AdminApi(shared, username=None)
    weak = anonymous.call("POST", "/api/v1/enrol",
                          {"username": "newbie", "code": code, "password": "newbie123456"})
    assert weak.status == 400 and weak.json()["error"]["code"] == "weak_password", weak
    ok = anonymous.call("POST", "/api/v1/enrol",
                        {"username": "newbie", "code": code, "password": NEW_PASSWORD})
    assert ok.status == 200 and ok.json()["username"] == "newbie", ok
    again = anonymous.call("POST", "/api/v1/enrol",
                           {"username": "newbie", "code": code, "password": PASSWORD})
    assert again.status == 401 and again.json()["error"]["code"] == "bad_enrolment_code"
    assert admin.as_user("newbie", NEW_PASSWORD).get("/api/v1/me").json()["username"] == "newbie"
    # A forgotten password: the administrator has a new code e-mailed.
    r = admin.call("POST", "/api/v1/users/newbie/enrolment")
    assert r.status == 201 and r.json()["email_sent"] is True, r
    assert len(outbox(shared, "newbie@example.com")) == 2


def test_password_change_over_rest(shared, admin):
    admin.add_user("changer")
    changer = admin.as_user("changer")
    r = changer.call("POST", "/api/v1/me/password",
                     {"current_password": "wrong password!", "new_password": NEW_PASSWORD})
    assert r.status == 401, r
    r = changer.call("POST", "/api/v1/me/password",
                     {"current_password": PASSWORD, "new_password": "changer12345"})
    assert r.status == 400 and r.json()["error"]["code"] == "weak_password", r
    r = changer.call("POST", "/api/v1/me/password",
                     {"current_password": PASSWORD, "new_password": NEW_PASSWORD})
    assert r.status == 200 and r.json()["username"] == "changer", r
    # The token the change was made with is revoked; the answer's fresh token works.
    assert changer.get("/api/v1/me").status == 401
    changer.token = r.json()["token"]
    assert changer.get("/api/v1/me").status == 200
    assert admin.as_user("changer", NEW_PASSWORD).get("/api/v1/me").status == 200


def test_cli_enrol_and_passwd(shared, admin, tmp_path):
    r = admin.call("POST", "/api/v1/users", {"username": "clier", "email": "clier@example.com",
                                             "valid_days": 30})
    assert r.status == 201, r
    (text,) = outbox(shared, "clier@example.com")
    code = re.search(r"Enrolment code:\s+(\S+)", text).group(1)
    person = User(tmp_path / "clier")
    out = person.ok("enrol", "--admin", shared.cfg.admin_url, "--user", "clier",
                    "--ca", shared.layout.ca_cert, stdin=f"{code}\n{PASSWORD}\n")
    assert "password set" in out
    r = person.login(shared, "clier", PASSWORD)
    assert r.returncode == 0, r.stderr
    person.ok("passwd", stdin=f"{PASSWORD}\n{NEW_PASSWORD}\n")
    assert person.login(shared, "clier", PASSWORD).returncode == 1
    assert person.login(shared, "clier", NEW_PASSWORD).returncode == 0
    # `securifile users` works for a non-administrator: themselves, and lookups by name.
    assert "clier" in person.ok("users")
    assert json.loads(person.ok("users", "admin", "--json")) == {"users": [{"username": "admin"}]}
    assert person.run("users", "nobody-here").returncode == 1


def private(path):
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def test_databases_audit_log_and_data_are_private_on_disk(shared, admin):
    api = Api(shared)
    r = api.put("node1", "alice/private/one.txt", b"for alice only")
    assert r.status in (200, 201), r
    admin_dir = shared.data_dir / "admin"
    wait_for(lambda: (admin_dir / "audit.log").exists(), what="the audit log")
    checked = [admin_dir, admin_dir / "admin.sqlite3", admin_dir / "audit.log", shared.data_dir]
    checked += [p for p in admin_dir.glob("admin.sqlite3-*")]
    for root in (shared.data_dir / "nodes",):
        checked += [root, *root.rglob("*")]
    assert any(p.name.startswith("locations") for p in checked)
    assert any(p.is_file() and "one.txt" not in p.name and p.parent.name != "nodes"
               for p in checked)
    loose = [f"{p} {stat.filemode(p.stat().st_mode)}" for p in checked if not private(p)]
    assert loose == []


# -- 9. without TLS: the debug secret is a node's, never the admin server's ---------------------


def test_without_tls_the_peer_secret_cannot_act_as_the_admin_server(make_cluster, tmp_path):
    cluster = make_cluster(servers=2, replicas=1, tls=False)
    secret = (cluster.layout.root / "peer-secret").read_text().strip()
    node = urlsplit(cluster.cfg.servers[0].url)
    import http.client

    def to_node(headers):
        conn = http.client.HTTPConnection(node.hostname, node.port, timeout=10)
        try:
            conn.request("POST", "/peer/admin/state", json.dumps({"state": "offline"}),
                         {"Content-Type": "application/json", **headers})
            r = conn.getresponse()
            return Response(r.status, r.headers, r.read())
        finally:
            conn.close()

    r = to_node({"X-SecuriFile-Peer-Secret": secret, "X-SecuriFile-Node": "admin"})
    assert r.status == 403 and r.json()["error"]["code"] == "not_the_admin", r
    token = (cluster.data_dir / "credentials" / "alice.token").read_text().strip()
    r = to_node({"Authorization": f"Bearer {token}"})
    assert r.status == 403, r
    # The admin server itself still takes nodes offline and back (with its signed token).
    root = AdminApi(cluster)
    assert root.call("POST", "/api/v1/servers/node2/offline").status == 200
    assert root.call("POST", "/api/v1/servers/node2/online").status == 200
    # --quiet hides everything but the plain-text warning.
    person = User(tmp_path / "alice")
    r = person.run("--quiet", "login", "--admin", cluster.cfg.admin_url, "--user", "alice",
                   stdin=password_of(cluster, "alice") + "\n")
    assert r.returncode == 0 and "plain HTTP" in r.stderr, r.stderr
    r = person.run("--quiet", "ls")
    assert r.returncode == 0 and "plain HTTP" in r.stderr, r.stderr


# -- 6. the TUI's password screen ----------------------------------------------------------------


class PasswordAdmin:
    """The one AdminClient call the password screen makes, answered like the server does."""

    def __init__(self):
        self.changed = []

    def change_password(self, current, new):
        from securifile.client.errors import ServerError
        if current != PASSWORD:
            raise ServerError(401, "bad_credentials", "the current password is wrong")
        self.changed.append(new)
        return {"token": "fresh", "username": "alice"}


class CredentialsClient:
    """Where the session puts the fresh token the change answered with."""

    def __init__(self):
        self.tokens = []

    def set_credentials(self, token, **_tls):
        self.tokens.append(token)


def test_the_tui_changes_the_password_and_shows_the_servers_reason(tmp_path):
    import asyncio

    from textual.app import App

    from securifile.tui.screens.password import PasswordScreen

    from .tui_fakes import fake_session, until

    admin = PasswordAdmin()
    session = fake_session(admin)
    session.client = CredentialsClient()

    class PasswordApp(App):
        def on_mount(self):
            self.push_screen(PasswordScreen(session))

    async def main():
        app = PasswordApp()
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await until(pilot, lambda: isinstance(app.screen, PasswordScreen)
                                 and app.screen.query("#current") and app.screen,
                                 what="the password screen")
            screen.query_one("#current").value = "not my password"
            screen.query_one("#new").value = NEW_PASSWORD
            screen.query_one("#again").value = NEW_PASSWORD + "x"
            screen.action_change()
            await pilot.pause()
            assert "differ" in str(screen.query_one("#password-error").render())
            screen.query_one("#again").value = NEW_PASSWORD
            screen.action_change()
            await until(pilot, lambda: "wrong" in str(screen.query_one("#password-error").render()),
                        what="the server's refusal")
            screen.query_one("#current").value = PASSWORD
            screen.action_change()
            await until(pilot, lambda: admin.changed, what="the change")
            await until(pilot, lambda: not isinstance(app.screen, PasswordScreen),
                        what="the screen to close")
        assert admin.changed == [NEW_PASSWORD]
        assert session.client.tokens == ["fresh"]  # the session carries on with it

    asyncio.run(main())
