"""Probe tests of ``securifile-admin`` as provisioning scripts use it: a subprocess with
``--config CLUSTER.toml``, passwords piped in, exit codes checked, against a running cluster."""
import email
import json
import os
import subprocess
import sys
from email import policy
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from .databases import fresh_postgres_database
from .helpers import AdminApi, Api, wait_for
from .clusters import start_cluster

ADMIN_CLI = str(Path(sys.executable).parent / "securifile-admin")


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    cluster = start_cluster(tmp_path_factory, "admin-cli")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def admin(shared):
    return AdminApi(shared)


def cli(cluster, *args, stdin="", env=None):
    """Run ``securifile-admin --config CLUSTER.toml ARGS``; stdin is a pipe, never a TTY."""
    return subprocess.run([ADMIN_CLI, "--config", str(cluster.config_path), *args], input=stdin,
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, **(env or {})))


def mails_to(cluster, address):
    """The plain text of every message to ``address`` in the outbox, oldest first."""
    found = []
    for path in sorted((cluster.data_dir / "admin" / "outbox").glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        if address in message["To"]:
            found.append(message.get_body(("plain",)).get_content())
    return found


def mail_to(cluster, address):
    found = mails_to(cluster, address)
    return found[0] if found else None


PASSWORD = "correct horse battery"


def statuses(admin):
    return {s["name"]: s["status"] for s in admin.get("/api/v1/servers").json()["servers"]}


def test_db_upgrade_is_idempotent_on_sqlite_and_postgresql(shared, admin):
    r = cli(shared, "db", "upgrade")  # the running admin server upgraded it already
    assert r.returncode == 0, r.stderr
    assert "newest schema" in r.stdout
    assert admin.get("/api/v1/users").status == 200
    url, drop = fresh_postgres_database()
    try:
        for _ in range(2):
            r = cli(shared, "db", "upgrade", env={"SECURIFILE_DATABASE_URL": url})
            assert r.returncode == 0, r.stderr
        engine = create_engine(url)
        try:
            assert {"users", "files", "grants", "servers", "storage_samples"} <= \
                set(inspect(engine).get_table_names())
        finally:
            engine.dispose()
    finally:
        drop()


def test_user_add_with_a_piped_password_emails_the_owner_and_can_log_in(shared, admin):
    r = cli(shared, "user", "add", "newbie", "--email", "newbie@example.com", "--valid-days", "7",
            "--password-stdin", stdin="piped secret pw\n")
    assert r.returncode == 0, r.stderr
    made = json.loads(r.stdout)
    assert (made["username"], made["email"], made["admin"]) == ("newbie", "newbie@example.com", False)
    assert "password" not in made and "piped secret pw" not in r.stdout
    body = mail_to(shared, "newbie@example.com")
    assert "newbie" in body and "piped secret pw" not in body and made["valid_until"][:10] in body
    assert "7 days" in body
    newbie = AdminApi(shared, "newbie", "piped secret pw")  # logs in through the running server
    assert newbie.get("/api/v1/me").json()["username"] == "newbie"
    assert any(u["username"] == "newbie" for u in admin.get("/api/v1/users").json()["users"])


def test_user_add_without_a_password_emails_an_enrolment_code(shared):
    r = cli(shared, "user", "add", "genny", "--email", "genny@example.com", "--valid-days", "1",
            "--admin")
    assert r.returncode == 0, r.stderr
    made = json.loads(r.stdout)
    assert made["admin"] is True and "password" not in made and "enrolment_code" not in made
    code = mail_to(shared, "genny@example.com").split("Enrolment code:")[1].split()[0]
    r = cli(shared, "user", "enrol", "genny")  # a second code replaces the first
    assert r.returncode == 0, r.stderr
    assert AdminApi(shared, None).call("POST", "/api/v1/enrol", {
        "username": "genny", "code": code, "password": PASSWORD}).status == 401
    code = mails_to(shared, "genny@example.com")[-1].split("Enrolment code:")[1].split()[0]
    assert AdminApi(shared, None).call("POST", "/api/v1/enrol", {
        "username": "genny", "code": code, "password": PASSWORD}).status == 200
    genny = AdminApi(shared, "genny", PASSWORD)
    assert genny.call("POST", "/api/v1/users", {"username": "by-genny", "email": "bg@example.com",
                                                "valid_days": 1}).status == 201


@pytest.mark.parametrize("args, stdin, message", [
    (["alice", "--email", "other@example.com"], "a long password\n", "user name already in use"),
    (["alicia", "--email", "alice@localhost"], "a long password\n", "e-mail address already in use"),
    (["weak", "--email", "weak@example.com"], "short\n", "at least 12 characters"),
    (["empty", "--email", "empty@example.com"], "", "no password on standard input"),
    (["Bad", "--email", "bad@example.com"], "a long password\n", "invalid user name"),
])
def test_user_add_refusals_exit_1_with_the_reason(shared, args, stdin, message):
    r = cli(shared, "user", "add", *args, "--valid-days", "5", "--password-stdin", stdin=stdin)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stderr.startswith("securifile-admin: ") and message in r.stderr
    assert r.stdout == ""


def test_bad_usage_exits_2(shared):
    r = cli(shared, "user", "add", "nomail")
    assert r.returncode == 2 and "--email" in r.stderr


def test_user_list_and_remove(shared, admin):
    assert cli(shared, "user", "add", "leaving", "--email", "leaving@example.com",
               "--password-stdin", stdin="a long password\n").returncode == 0
    r = cli(shared, "user", "list")
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines()}
    assert {"admin", "alice", "leaving"} <= set(rows)
    assert "leaving@example.com" in rows["leaving"] and "files=0 bytes=0" in rows["leaving"]
    assert "admin" in rows["admin"].split()[4:]  # the administrator is marked as one
    r = cli(shared, "user", "remove", "leaving")
    assert r.returncode == 0 and "removed leaving" in r.stdout
    assert "leaving" not in {u["username"] for u in admin.get("/api/v1/users").json()["users"]}
    assert AdminApi(shared, None).call("POST", "/api/v1/login", {
        "username": "leaving", "password": "a long password"}).status == 401
    again = cli(shared, "user", "remove", "leaving")
    assert again.returncode == 1 and "no user leaving" in again.stderr


def test_quota_on_add_and_set_quota_with_sizes_as_typed(shared, admin):
    r = cli(shared, "user", "add", "quoted", "--email", "quoted@example.com", "--quota", "10G",
            "--password-stdin", stdin="a long password\n")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["quota_bytes"] == 10 << 30
    r = cli(shared, "user", "set-quota", "quoted", "500M")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["quota_bytes"] == 500 << 20
    quoted = AdminApi(shared, "quoted", "a long password")  # the running server sees it
    me = quoted.get("/api/v1/me").json()
    assert (me["quota_bytes"], me["used_bytes"]) == (500 << 20, 0)
    r = cli(shared, "user", "list")
    assert f"quota={500 << 20}" in next(l for l in r.stdout.splitlines() if l.startswith("quoted"))
    assert json.loads(cli(shared, "user", "set-quota", "quoted", "none").stdout)["quota_bytes"] is None
    r = cli(shared, "user", "set-quota", "quoted", "lots")
    assert r.returncode == 2 and "not a size" in r.stderr
    r = cli(shared, "user", "set-quota", "nobody", "1G")
    assert r.returncode == 1 and "no user nobody" in r.stderr


def test_server_offline_and_online(shared, admin):
    wait_for(lambda: set(statuses(admin).values()) == {"running"}, what="every server running")
    unknown = cli(shared, "server", "offline", "node9")
    assert unknown.returncode == 1 and "node9" in unknown.stderr
    r = cli(shared, "server", "offline", "node2")
    assert r.returncode == 0, r.stderr
    assert "node2 is offline" in r.stdout
    api = Api(shared)
    wait_for(lambda: api.sees("node1", "node2", "down") and api.sees("node3", "node2", "down"),
             what="the other nodes to see node2 down")
    wait_for(lambda: statuses(admin)["node2"] == "offline", what="node2 listed offline")
    assert statuses(admin) == {"node1": "running", "node2": "offline", "node3": "running"}
    try:  # an offline server serves nobody
        assert api.put("node2", "alice/offline.txt", b"x").status == 503
    except ConnectionError:
        pass
    r = cli(shared, "server", "online", "node2")
    assert r.returncode == 0 and "node2 is online" in r.stdout
    wait_for(lambda: statuses(admin) == dict.fromkeys(shared.names, "running"),
             what="node2 running again")
    # The admin server's list follows node2's own report; node1 sees it on its next beats.
    wait_for(lambda: api.sees("node1", "node2", "running"), what="node1 to see node2 running")
    assert api.put("node2", "alice/online.txt", b"x").status == 201
