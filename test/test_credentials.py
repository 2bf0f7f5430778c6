"""Credentials die with the account, and nodes fail closed without the admin server
(issue 9, points 3 and 4; see docs/SECURITY.md).

Tier 1 runs the admin server's logic on SQLite and PostgreSQL (``sessions``): account ids,
removal, logout, short-lived certificates, the 0005 migration. The probe tests run a real
cluster (admin server and three nodes over TLS, one for the module), the ``securifile``
command, and kill the admin server.
"""
import os
import time
from datetime import datetime, timedelta, timezone

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select, text

from securifile.admin import db
from securifile.admin.models import File, RemovedAccount, User
from securifile.admin.service import AdminService
from securifile.common.certnames import CertLayout
from securifile.common.certs import CertificateAuthority, ensure_ca
from securifile.common.config import Config
from securifile.common.errors import Unauthenticated
from securifile.common.tokens import load_private_key, load_public_key, mint_token, verify_token

from .clusters import start_cluster
from .helpers import AdminApi, Api, wait_for
from .test_cli_admin import User as Person

PASSWORD = "correct horse battery"
NEW_PASSWORD = "violet kettle under moonlight"
CERT_ENV = "SECURIFILE_CERTIFICATE_SECONDS"
NODES = ("node1", "node2", "node3")


def csr_pem(name="x"):
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .sign(key, hashes.SHA256()))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return csr.public_bytes(serialization.Encoding.PEM).decode(), pem


def cert_uid(cert):
    return cert.subject.get_attributes_for_oid(NameOID.USER_ID)[0].value


def cert_generation(cert):
    values = cert.subject.get_attributes_for_oid(NameOID.GENERATION_QUALIFIER)
    return int(values[0].value) if values else 0


# -- tier 1: the admin server's logic on SQLite and PostgreSQL ---------------------------------


@pytest.fixture
def service(sessions, tmp_path):
    cfg = Config(certs_dir=tmp_path / "certs", data_dir=tmp_path / "data", bcrypt_rounds=4)
    cfg.certificate_seconds = 3 * 86400
    ensure_ca(CertLayout(cfg.certs_dir))
    svc = AdminService(cfg, sessions)
    svc.builtin_receiver = True  # no event rows: nothing here reads them
    return svc


def add(service, name, days=30):
    return service.accounts.create(name, f"{name}@example.com", days, PASSWORD).user


def report_file(catalog, owner, path, n, written=None):
    catalog.apply_report({"id": f"r-{owner}-{path}-{n}", "server": "node1", "events": [{
        "type": "file", "record": {"owner": owner, "path": path, "size": 3, "digest": "00",
                                   "algorithm": "sha256", "version": 1, "origin": "node1",
                                   "modified": written or time.time(), "replicas": []}}]})


def test_a_removed_accounts_credentials_files_and_grants_do_not_pass_to_the_next_of_its_name(
        service):
    add(service, "carol")
    add(service, "alice")
    add(service, "bob")
    login = service.login("bob", PASSWORD, "127.0.0.1")
    claims = verify_token(load_public_key(service.layout.token_public_key), login["token"])
    old_uid = claims["uid"]
    assert old_uid == service.accounts.get("bob").uid
    report_file(service.catalog, "bob", "old/secret.txt", 1)
    service.acl.grant("bob", "bob", "old/", "carol", "reader")
    service.acl.grant("alice", "alice", "", "bob", "editor")
    assert service.decide("carol", "bob", "old/secret.txt", service.accounts.get("carol").uid)["role"] == "reader"

    written_before_removal = time.time()
    service.accounts.remove("bob")
    # Grants the removed account gave on its files and the ones it was given are gone.
    assert service.acl.shared_with("carol") == []
    assert service.decide("carol", "bob", "old/secret.txt",
                          service.accounts.get("carol").uid)["role"] is None
    answer = service.decide("bob", "bob", "old/secret.txt", old_uid, claims["jti"])
    assert (answer["active"], answer["state"]) == (False, "removed")

    new = add(service, "bob")
    assert new.uid != old_uid
    # The old credential names the old id: refused although the name exists again.
    answer = service.decide("bob", "bob", "", old_uid, claims["jti"])
    assert (answer["active"], answer["state"]) == (False, "removed")
    # The new account reaches neither the old files nor the old grants.
    answer = service.decide("bob", "bob", "old/secret.txt", new.uid)
    assert answer["active"] and answer["role"] is None and answer["sealed"]
    assert service.decide("bob", "bob", "", new.uid)["may"]["list"] is False
    assert service.decide("bob", "alice", "x.txt", new.uid)["role"] is None
    assert service.acl.shared_with("bob") == []
    # A grant the new account gives on its namespace opens nothing of the old one.
    service.acl.grant("bob", "bob", "", "carol", "reader")
    assert service.decide("carol", "bob", "old/secret.txt",
                          service.accounts.get("carol").uid)["role"] is None
    # A node reports late a file the removed account wrote: sealed as well.
    report_file(service.catalog, "bob", "late.txt", 3, written=written_before_removal)
    assert service.decide("bob", "bob", "late.txt", new.uid)["role"] is None
    # Its own new files are its own, and the catalogue lists only those.
    report_file(service.catalog, "bob", "new.txt", 2)
    assert service.decide("bob", "bob", "new.txt", new.uid)["role"] == "owner"
    assert service.decide("carol", "bob", "new.txt", service.accounts.get("carol").uid)["role"] == "reader"
    owner = service.acl.role_function("bob", "bob")
    listing = service.catalog.list_folder("bob", "bob", "", owner, recursive=True)
    assert [f["path"] for f in listing["files"]] == ["new.txt"]
    assert service.catalog.list_folder("bob", "bob", "", owner)["folders"] == []
    assert [f["path"] for f in service.catalog.owned_files("bob")["files"]] == ["new.txt"]


def test_a_credential_without_the_account_id_is_refused(service):
    user = add(service, "dan")
    answer = service.decide("dan", "dan", "", None)
    assert (answer["active"], answer["state"]) == (False, "removed")
    assert service.decide("dan", "dan", "", user.uid)["active"]


def test_logout_revokes_the_credential_and_nodes_hear_it(service):
    user = add(service, "erin")
    login = service.login("erin", PASSWORD, "127.0.0.1")
    claims = verify_token(load_public_key(service.layout.token_public_key), login["token"])
    assert service.decide("erin", "erin", "", user.uid, claims["jti"])["active"]
    from securifile.common.auth import Principal
    service.logout(Principal("erin", "user", uid=user.uid, credential=claims["jti"],
                             expires=claims["exp"]))
    answer = service.decide("erin", "erin", "", user.uid, claims["jti"])
    assert (answer["active"], answer["state"]) == (False, "revoked")
    other = service.login("erin", PASSWORD, "127.0.0.1")
    jti = verify_token(load_public_key(service.layout.token_public_key), other["token"])["jti"]
    assert service.decide("erin", "erin", "", user.uid, jti)["active"]
    # Forgotten once it would have expired anyway.
    service.clock = lambda: datetime.now(timezone.utc) + timedelta(days=2)
    service.accounts.clock = service.clock
    assert service.accounts.prune_revoked() == 1


def test_certificates_are_short_lived_and_carry_the_account_id(service):
    user = add(service, "fay", days=300)
    pem, _key = csr_pem("someone-else")
    signed = service.sign_csr(user, pem)
    cert = x509.load_pem_x509_certificate(signed["certificate"].encode())
    life = cert.not_valid_after_utc - datetime.now(timezone.utc)
    assert timedelta(days=3) - timedelta(minutes=1) < life <= timedelta(days=3)
    assert cert_uid(cert) == user.uid
    # Never past the account's end.
    short = add(service, "gus", days=1)
    cert = x509.load_pem_x509_certificate(service.sign_csr(short, pem)["certificate"].encode())
    end = short.valid_until if short.valid_until.tzinfo else short.valid_until.replace(
        tzinfo=timezone.utc)
    assert end - timedelta(seconds=1) <= cert.not_valid_after_utc <= end
    # A renewal asked for with a certificate revokes it; one asked for with a token revokes
    # nothing (the token stays good).
    from securifile.common.auth import Principal
    serial = f"cert:{cert.serial_number:X}"
    by_cert = Principal("gus", "user", uid=short.uid, credential=serial,
                        expires=cert.not_valid_after_utc.timestamp())
    service.sign_csr(short, pem, by_cert)
    assert service.decide("gus", "gus", "", short.uid, serial)["state"] == "revoked"
    by_token = Principal("gus", "user", uid=short.uid, credential="jti-1", expires=time.time() + 60)
    service.sign_csr(short, pem, by_token)
    assert service.decide("gus", "gus", "", short.uid, "jti-1")["active"]


def test_a_password_change_or_reset_revokes_the_credentials_issued_before(service):
    """Tokens and certificates carry the account's credential generation; a password change,
    an enrolment and an administrator's reset start a new one, and older ones are refused."""
    from securifile.common.auth import Principal
    user = add(service, "hal")
    public = load_public_key(service.layout.token_public_key)
    old = verify_token(public, service.login("hal", PASSWORD, "127.0.0.1")["token"])
    pem, _key = csr_pem()
    old_cert = x509.load_pem_x509_certificate(service.sign_csr(user, pem)["certificate"].encode())
    assert old.get("gen", 0) == 0 and cert_generation(old_cert) == 0
    assert service.decide("hal", "hal", "", user.uid, old["jti"], 0)["active"]

    changed = service.accounts.change_password("hal", PASSWORD, NEW_PASSWORD, "127.0.0.1")
    fresh = verify_token(public, service.session(changed)["token"])
    assert fresh["gen"] == 1 and fresh["uid"] == user.uid
    for jti in (old["jti"], f"cert:{old_cert.serial_number:X}"):
        answer = service.decide("hal", "hal", "", user.uid, jti, 0)
        assert (answer["active"], answer["state"]) == (False, "revoked"), answer
        assert "password" in answer["reason"]
    assert service.decide("hal", "hal", "", user.uid, fresh["jti"], 1)["active"]
    new_cert = x509.load_pem_x509_certificate(
        service.sign_csr(changed, pem)["certificate"].encode())
    assert cert_generation(new_cert) == 1
    # The admin server's own check on every request.
    stale = Principal("hal", "user", uid=user.uid, credential=old["jti"], generation=0)
    with pytest.raises(Unauthenticated):
        service.accounts.check_credential(service.accounts.get("hal"), stale)

    # An administrator's reset (a forgotten, perhaps stolen password) revokes too, and so
    # does the enrolment that follows it.
    _user, code, _expires = service.accounts.issue_enrolment("hal")
    assert service.decide("hal", "hal", "", user.uid, fresh["jti"], 1)["state"] == "revoked"
    assert service.decide("hal", "hal", "", user.uid, "t", 2)["active"]
    service.accounts.enrol("hal", code, PASSWORD + " again")
    assert service.decide("hal", "hal", "", user.uid, "t", 2)["state"] == "revoked"
    assert service.decide("hal", "hal", "", user.uid, "t", 3)["active"]


def test_the_0005_migration_gives_accounts_ids_and_files_their_owners_id(db_url):
    engine = db.make_engine(db_url)
    try:
        db.upgrade(engine, "0004")
        now = datetime.now(timezone.utc)
        with engine.begin() as c:
            for name in ("ann", "ben"):
                c.execute(text("INSERT INTO users (username, email, password_hash, admin, "
                               "disabled, created_at, valid_until) VALUES (:n, :e, 'x', false, "
                               "false, :t, :t)"), {"n": name, "e": f"{name}@example.com", "t": now})
            for owner in ("ann", "gone"):
                c.execute(text("INSERT INTO files (owner, path, folder, size, algorithm, digest, "
                               "version, origin, under_replicated, created_at, modified_at) "
                               "VALUES (:o, 'a.txt', '', 1, 'sha256', '00', 1, 'node1', false, "
                               ":t, :t)"), {"o": owner, "t": now})
        db.upgrade(engine)
        sessions = db.session_factory(engine)
        with sessions() as s:
            uids = dict(s.execute(select(User.username, User.uid)).all())
            owners = dict(s.execute(select(File.owner, File.owner_uid)).all())
        assert len(set(uids.values())) == 2 and all(len(u) == 32 for u in uids.values())
        assert owners == {"ann": uids["ann"], "gone": None}
        db.upgrade(engine, "0004")  # and back
        db.upgrade(engine)
    finally:
        engine.dispose()


def test_the_0006_and_0007_migrations_start_accounts_at_generation_zero_and_none_purged(
        db_url):
    """Credentials issued before the upgrade carry no generation (0): nobody is logged out.
    Removed accounts are not purged yet: their files fall due when their date comes."""
    engine = db.make_engine(db_url)
    try:
        db.upgrade(engine, "0005")
        now = datetime.now(timezone.utc)
        with engine.begin() as c:
            c.execute(text("INSERT INTO users (uid, username, email, password_hash, admin, "
                           "disabled, created_at, valid_until) VALUES ('u1', 'ann', "
                           "'ann@example.com', 'x', false, false, :t, :t)"), {"t": now})
            c.execute(text("INSERT INTO removed_accounts (uid, username, removed_at, "
                           "purge_after) VALUES ('u0', 'ann', :t, :t)"), {"t": now})
        db.upgrade(engine)
        sessions = db.session_factory(engine)
        with sessions() as s:
            assert s.execute(select(User.username, User.credential_generation)).all() == [
                ("ann", 0)]
            assert s.execute(select(RemovedAccount.uid, RemovedAccount.purged_at)).all() == [
                ("u0", None)]
        db.upgrade(engine, "0005")  # and back
        db.upgrade(engine)
    finally:
        engine.dispose()


# -- the node's memory for deciding without the admin server -----------------------------------


def test_a_nodes_memory_fails_closed_for_what_it_saw_and_forgets_what_was_lifted(tmp_path):
    from securifile.common.auth import Principal
    from securifile.nodes.access import AccountMemory
    now = [1000.0]
    path = tmp_path / "refused.json"
    memory = AccountMemory(path, wall=lambda: now[0])
    dora = Principal("dora", "user", uid="u-dora", credential="t1", expires=5000.0)
    olga = Principal("olga", "user", uid="u-olga", credential="t2", expires=5000.0)
    assert memory.refusal(dora, "dora") is None
    memory.learn(dora, "dora/", {"active": False, "state": "disabled",
                                 "reason": "account dora is disabled"})
    memory.learn(olga, "olga/", {"active": True, "valid_until": 2000.0, "role": "owner"})
    assert memory.refusal(dora, "dora") == "account dora is disabled"
    assert memory.refusal(olga, "olga") is None
    # Kept across a restart; an account enabled again is forgotten.
    again = AccountMemory(path, wall=lambda: now[0])
    assert again.refusal(dora, "dora") == "account dora is disabled"
    again.learn(dora, "dora/", {"active": True, "valid_until": 9000.0})
    assert again.refusal(dora, "dora") is None
    assert AccountMemory(path, wall=lambda: now[0]).refusal(dora, "dora") is None
    # A revoked credential, not the account; the account's end as last seen; no id at all.
    again.learn(dora, "dora/", {"active": False, "state": "revoked", "reason": "logged out"})
    assert again.refusal(dora, "dora") == "the credential was revoked"
    assert again.refusal(Principal("dora", "user", uid="u-dora", credential="t3"), "dora") is None
    now[0] = 2500.0
    assert again.refusal(olga, "olga") == "the account has expired"
    assert again.refusal(Principal("olga", "user"), "olga") == "the credential carries no account id"
    now[0] = 6000.0
    assert again.refusal(Principal("eve", "user", uid="u-eve", expires=5999.0), "eve") == \
        "the credential has expired"


# -- probes: a real cluster ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory):
    # Certificates of 20 s (days in production), through the environment the servers inherit.
    os.environ[CERT_ENV] = "20"
    try:
        cluster = start_cluster(tmp_path_factory, "credentials", heartbeat_misses=10)
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        os.environ.pop(CERT_ENV, None)


@pytest.fixture
def cluster(module_cluster):
    c = module_cluster
    for name, proc in list(c.procs.items()):
        if proc.poll() is not None:
            c.restart(name)
    wait_for(lambda: c.status("admin"), timeout=30, what="the admin server to answer")
    return c


@pytest.fixture
def root(cluster):
    return AdminApi(cluster)


def error_code(r):
    return r.json()["error"]["code"]


def certificate_for(cluster, user, folder):
    """A certificate (and key) signed for ``user`` (an AdminApi), in files under ``folder``."""
    pem, key = csr_pem()
    r = user.call("POST", "/api/v1/certificates", {"csr": pem})
    assert r.status == 201, r
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "c.crt").write_text(r.json()["certificate"])
    (folder / "c.key").write_bytes(key)
    return str(folder / "c.crt"), str(folder / "c.key")


def node_with_cert(cluster, cert, key):
    return Api(cluster).with_identity(cert, key)


def refused_on_every_node(api, path, timeout=10):
    for node in NODES:
        wait_for(lambda: api.request(node, "GET", path).status == 403, timeout=timeout,
                 what=f"{node} to refuse {path}")


def test_a_removed_users_token_and_certificate_are_refused_also_once_the_name_is_taken_again(
        cluster, root, tmp_path):
    root.add_user("remy")
    root.add_user("cleo")
    remy = root.as_user("remy")
    remy_node = remy.node_api()
    cert, key = certificate_for(cluster, remy, tmp_path / "remy")
    remy_cert_node = node_with_cert(cluster, cert, key)
    assert remy_node.put("node1", "remy/old/secret.txt", b"old secret").status == 201
    assert remy_cert_node.follow("node2", "GET", "remy/old/secret.txt")[1].status == 200
    assert remy.call("PUT", "/api/v1/acl/remy/old/",
                     {"username": "cleo", "role": "reader"}).status == 200
    cleo = root.as_user("cleo").node_api()
    assert cleo.follow("node3", "GET", "remy/old/secret.txt")[1].body == b"old secret"
    wait_for(lambda: remy.get("/api/v1/files?prefix=remy/&recursive=1").json()["files"],
             what="the catalogue to list remy's file")

    assert root.call("DELETE", "/api/v1/users/remy").status == 204
    root.add_user("remy")  # somebody else, with the same name
    new = root.as_user("remy")

    # The old token and certificate: refused by the admin server and by every node.
    r = remy.get("/api/v1/me")
    assert (r.status, error_code(r)) == (401, "credential_revoked")
    admin_by_cert = AdminApi(cluster, None)
    admin_by_cert.ctx = node_with_cert(cluster, cert, key).ctx
    r = admin_by_cert.get("/api/v1/me")
    assert (r.status, error_code(r)) == (401, "credential_revoked")
    refused_on_every_node(remy_node, "remy/old/secret.txt")
    refused_on_every_node(remy_cert_node, "remy/old/secret.txt")
    assert remy_node.put("node1", "remy/planted.txt", b"x").status == 403
    # The grant the removed owner gave is gone, also now that the name is back.
    refused_on_every_node(cleo, "remy/old/secret.txt")
    assert root.as_user("cleo").get("/api/v1/shared").json()["shared"] == []

    # The new remy sees nothing of the old one: not the files, not the grants.
    new_node = new.node_api()
    for node in NODES:
        r = new_node.follow(node, "GET", "remy/old/secret.txt")[1]
        assert r.status == 403 and b"old secret" not in r.body, node
    assert new_node.request("node1", "GET", "remy/old/").status == 403
    assert new_node.put("node1", "remy/old/secret.txt", b"overwrite").status == 403
    assert new.get("/api/v1/shared").json()["shared"] == []
    assert new.get("/api/v1/acl/remy/old/").json()["grants"] == []
    # ... and has a namespace of its own.
    assert new_node.put("node1", "remy/mine.txt", b"mine").status == 201
    assert new_node.follow("node2", "GET", "remy/mine.txt")[1].body == b"mine"
    wait_for(lambda: [f["path"] for f in new.get("/api/v1/files?prefix=remy/&recursive=1")
                      .json()["files"]] == ["mine.txt"], what="the new remy's own listing")


def test_logout_revokes_the_token_at_the_admin_server_and_on_the_nodes(cluster, root, tmp_path):
    root.add_user("lou")
    person = Person(tmp_path / "lou")
    r = person.login(cluster, "lou", PASSWORD)
    assert r.returncode == 0, r.stderr
    token = (person.login_dir / "token").read_text().strip()
    saved = AdminApi(cluster, None, token=token)
    assert saved.get("/api/v1/me").status == 200
    node = Api(cluster, cert=False, token=token)
    assert node.put("node1", "lou/a.txt", b"a").status == 201
    copied = tmp_path / "kept"  # what a thief copied before the logout
    copied.mkdir()
    for name in ("client.crt", "client.key"):
        (copied / name).write_bytes((person.login_dir / name).read_bytes())
    by_cert = node_with_cert(cluster, str(copied / "client.crt"), str(copied / "client.key"))
    assert by_cert.follow("node2", "GET", "lou/a.txt")[1].status == 200

    out = person.ok("logout")
    assert "revoked" in out and not (person.login_dir / "token").exists()
    r = saved.get("/api/v1/me")
    assert (r.status, error_code(r)) == (401, "credential_revoked")
    refused_on_every_node(node, "lou/a.txt")
    refused_on_every_node(by_cert, "lou/a.txt")
    # A new login works: only the logged-out credentials died.
    assert person.login(cluster, "lou", PASSWORD).returncode == 0
    fresh = Api(cluster, cert=False, token=(person.login_dir / "token").read_text().strip())
    assert fresh.follow("node3", "GET", "lou/a.txt")[1].body == b"a"


def test_a_short_lived_certificate_is_renewed_by_the_cli(cluster, root, tmp_path):
    root.add_user("rita")
    person = Person(tmp_path / "rita")
    assert person.login(cluster, "rita", PASSWORD).returncode == 0
    path = person.login_dir / "client.crt"
    first = x509.load_pem_x509_certificate(path.read_bytes())
    # certificate_seconds = 20 for this cluster: days in production, never the account's end.
    assert first.not_valid_after_utc - datetime.now(timezone.utc) <= timedelta(seconds=21)
    assert cert_uid(first) == root.get("/api/v1/users?username=rita").json()["users"][0]["id"]
    wait_for(lambda: datetime.now(timezone.utc) >= first.not_valid_after_utc - timedelta(seconds=9),
             timeout=30, interval=0.2, what="half the certificate's life to pass")
    person.ok("whoami")  # any command renews a certificate past half its life
    second = x509.load_pem_x509_certificate(path.read_bytes())
    assert second.serial_number != first.serial_number
    assert second.not_valid_after_utc > first.not_valid_after_utc
    assert cert_uid(second) == cert_uid(first)
    by_cert = node_with_cert(cluster, str(path), str(person.login_dir / "client.key"))
    assert by_cert.put("node1", "rita/renewed.txt", b"r").status == 201
    out = person.ok("renew")
    assert "renewed" in out
    third = x509.load_pem_x509_certificate(path.read_bytes())
    assert third.serial_number != second.serial_number
    # The certificate a renewal was asked with is revoked: a copy of it dies with it.
    refused_on_every_node(by_cert, "rita/renewed.txt")
    by_third = node_with_cert(cluster, str(path), str(person.login_dir / "client.key"))
    assert by_third.follow("node2", "GET", "rita/renewed.txt")[1].body == b"r"
    # Run out, with no token left to renew it: the command says to log in again.
    ca = CertificateAuthority.load(cluster.layout.ca_cert, cluster.layout.ca_key)
    key = serialization.load_pem_private_key((person.login_dir / "client.key").read_bytes(), None)
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    old = ca.sign_user_csr(csr, "rita", datetime.now(timezone.utc) - timedelta(seconds=1),
                           cert_uid(third))
    path.write_bytes(old.public_bytes(serialization.Encoding.PEM))
    (person.login_dir / "token").unlink()
    r = person.run("whoami")
    assert r.returncode == 1 and "securifile login" in r.stderr, r.stderr


def test_a_password_change_revokes_other_sessions_and_keeps_the_changing_device_logged_in(
        cluster, root, tmp_path):
    from securifile.client.settings import LoginFolder
    from securifile.tui.session import Session
    root.add_user("pia")
    person = Person(tmp_path / "pia")
    assert person.login(cluster, "pia", PASSWORD).returncode == 0
    kept = tmp_path / "kept"  # another device's login, or what a thief copied
    kept.mkdir()
    for name in ("client.crt", "client.key", "token"):
        (kept / name).write_bytes((person.login_dir / name).read_bytes())
    old_token = (kept / "token").read_text().strip()
    by_token = Api(cluster, cert=False, token=old_token)
    by_cert = node_with_cert(cluster, str(kept / "client.crt"), str(kept / "client.key"))
    assert by_token.put("node1", "pia/a.txt", b"a").status == 201
    assert by_cert.follow("node2", "GET", "pia/a.txt")[1].body == b"a"

    out = person.ok("passwd", stdin=f"{PASSWORD}\n{NEW_PASSWORD}\n")
    assert "must log in again" in out
    r = AdminApi(cluster, None, token=old_token).get("/api/v1/me")
    assert (r.status, error_code(r)) == (401, "credential_revoked")
    refused_on_every_node(by_token, "pia/a.txt")
    refused_on_every_node(by_cert, "pia/a.txt")
    # The device that changed it saved a fresh token and certificate: still logged in.
    assert (person.login_dir / "token").read_text().strip() != old_token
    assert "pia" in person.ok("whoami")
    saved = node_with_cert(cluster, str(person.login_dir / "client.crt"),
                           str(person.login_dir / "client.key"))
    assert saved.follow("node3", "GET", "pia/a.txt")[1].body == b"a"

    # The terminal client, started from the saved login, changes it back and carries on.
    session = Session.from_saved_login(LoginFolder(person.login_dir))
    try:
        session.change_password(NEW_PASSWORD, PASSWORD + " now")
        assert session.client.get_bytes("pia/a.txt") == b"a"
        assert session.admin.me()["username"] == "pia"
    finally:
        session.close()
    refused_on_every_node(saved, "pia/a.txt")
    assert "pia" in person.ok("whoami")  # the TUI saved what it got for the command line

    # An administrator's reset (a forgotten password) ends every session of the account.
    assert root.call("POST", "/api/v1/users/pia/enrolment").status == 201
    r = person.run("whoami")
    assert r.returncode != 0 and "log in again" in r.stderr, r.stderr


def test_without_the_admin_server_a_node_refuses_accounts_it_saw_refused_and_expired_tokens(
        cluster, root):
    for name in ("dora", "remo", "olga"):
        root.add_user(name)
    users = {name: root.as_user(name).node_api() for name in ("dora", "remo", "olga")}
    for name, api in users.items():
        assert api.put("node1", f"{name}/f.txt", name.encode()).status == 201
    uid = root.get("/api/v1/users?username=olga").json()["users"][0].get("id")

    disable(cluster, "dora")
    assert root.call("DELETE", "/api/v1/users/remo").status == 204
    # The node asks, and hears the accounts are refused.
    for name in ("dora", "remo"):
        wait_for(lambda: users[name].get("node1", f"{name}/f.txt").status == 403,
                 timeout=10, what=f"node1 to refuse {name}")

    cluster.procs["admin"].terminate()
    cluster.procs["admin"].wait(timeout=30)
    killed = time.monotonic()  # decisions cached before this are good for the cache's time
    wait_for(lambda: time.monotonic() > killed + 2 * cluster.cfg.authz_cache_seconds,
             what="the cached decisions to run out")
    wait_for(lambda: users["olga"].get("node1", "olga/f.txt").status == 200, timeout=10,
             what="the owner in good standing to keep access without the admin server")
    for name in ("dora", "remo"):
        r = users[name].get("node1", f"{name}/f.txt")
        assert r.status == 403, (name, r)
        assert error_code(r) == "account_inactive"
        assert users[name].put("node1", f"{name}/g.txt", b"g").status == 403
    # A node restarted while the admin server is still away remembers them.
    cluster.procs["node1"].terminate()
    cluster.procs["node1"].wait(timeout=30)
    cluster.restart("node1")
    wait_for(lambda: users["olga"].get("node1", "olga/f.txt").status == 200, timeout=20,
             what="node1 to serve again")
    for name in ("dora", "remo"):
        assert users[name].get("node1", f"{name}/f.txt").status == 403, name
    # The expiry a token carries holds offline: good until then, refused after.
    short, _ = mint_token(load_private_key(cluster.layout.token_private_key), "olga",
                          ttl_seconds=3, uid=uid)
    short_api = Api(cluster, cert=False, token=short)
    assert short_api.get("node1", "olga/f.txt").status == 200
    wait_for(lambda: time.time() > expiry(short) + 1, timeout=10, what="the short token to expire")
    r = short_api.get("node1", "olga/f.txt")
    assert (r.status, error_code(r)) == (401, "token_expired")


def expiry(token):
    return jwt.decode(token, options={"verify_signature": False})["exp"]


def disable(cluster, name):
    """As ``securifile-admin`` does it, on the admin server's database."""
    from securifile.admin.main import open_service
    service = open_service(cluster.cfg, with_node_client=False)
    try:
        service.accounts.set_disabled(name, True)
    finally:
        service.sessions.kw["bind"].dispose()
