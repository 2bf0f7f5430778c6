"""Two admin server instances on one PostgreSQL database: kill one, the other serves.

One cluster for the module: two admin instances (``admin``, ``admin2``) and two nodes
(an even number, so the nodes use the witness), all real processes. With one instance
killed (SIGKILL): password logins, ``securifile login`` (certificate signing) and
``renew``, a shared file's upload (the node asks the admin server for every access
decision), the nodes' reports reaching the catalogue, the TUI's session, and the witness's
tie-break lease all go on through the other; every audit message is stored once.

PostgreSQL only: two instances need one database that both reach (SQLite is refused).
"""
import asyncio
import json
import signal

import pytest
from sqlalchemy import create_engine, text

from securifile.client.admin import AdminClient
from securifile.client.settings import LoginFolder
from securifile.client.storage import Client
from securifile.common.tls import client_context
from securifile.launcher.cluster import Cluster
from securifile.tui.app import SecuriFileApp
from securifile.tui.screens.login import LoginScreen
from securifile.tui.screens.servers import ServersScreen
from securifile.tui.session import Session

from .clusters import start_cluster
from .databases import fresh_postgres_database
from .helpers import AdminApi, Api, wait_for
from .netns import http_connection
from .test_cli_admin import User
from .test_tui_app import cell, until
from .tui_fakes import type_ahead

NODES = ("node1", "node2")
PASSWORD = "correct horse battery"
NEW = b"written with one admin instance down"


@pytest.fixture(scope="module")
def pg():
    # PostgreSQL is part of every run (scripts/test starts one where none is configured):
    # without it this test fails rather than skipping.
    url, drop = fresh_postgres_database()
    yield url
    drop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, pg):
    c = start_cluster(tmp_path_factory, "admin-failover", servers=2, database_url=pg,
                      admin_instances=2, heartbeat_misses=6)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def running(cluster):
    """Every process of the module's cluster running (a test may have killed one)."""
    for name, proc in cluster.procs.items():
        if proc.poll() is not None:
            cluster.restart(name, timeout=60)
    return cluster


def admin_client(cluster, **kw):
    """A client of both instances, as a user's saved login or the TUI holds it."""
    return AdminClient(cluster.cfg.admin_endpoints, ca=str(cluster.layout.ca_cert), **kw)


def duplicated_events(db_url):
    engine = create_engine(db_url)
    try:
        with engine.connect() as c:
            return c.execute(text("SELECT record_id, count(*) FROM events WHERE record_id IS "
                                  "NOT NULL GROUP BY record_id HAVING count(*) > 1")).all()
    finally:
        engine.dispose()


def test_sqlite_with_two_instances_is_refused(tmp_path):
    with pytest.raises(ValueError, match="PostgreSQL"):
        Cluster.create(tmp_path / "c", 2, base_port=0, admin_instances=2)


def test_with_one_instance_killed_everything_goes_on_through_the_other(running, pg, tmp_path):
    cluster = running
    root = AdminApi(cluster)
    for name in ("bob", "carol"):
        root.add_user(name, password=PASSWORD)
    alice = AdminApi(cluster, "alice")
    assert alice.call("PUT", "/api/v1/acl/alice/team/", {"username": "bob",
                                                          "role": "editor"}).status == 200
    assert Api(cluster).put("node1", "alice/team/notes.txt", b"first version").status == 201
    carol = User(tmp_path / "carol")
    assert carol.run("login", "--admin", ",".join(cluster.cfg.admin_endpoints), "--user",
                     "carol", "--ca", cluster.layout.ca_cert, stdin=PASSWORD + "\n").returncode == 0
    saved = json.loads((carol.login_dir / "login.json").read_text())
    assert saved["admin_urls"] == cluster.cfg.admin_endpoints  # the login keeps both

    cluster.kill("admin")  # SIGKILL: the first instance, the one everybody asked so far

    # Logins, and `securifile login` with certificate signing, through the other instance.
    bob_admin = admin_client(cluster)
    assert bob_admin.login("bob", PASSWORD)["username"] == "bob"
    assert bob_admin.url == cluster.cfg.admin_endpoints[1]
    bob = User(tmp_path / "bob")
    r = bob.run("login", "--admin", ",".join(cluster.cfg.admin_endpoints), "--user", "bob",
                "--ca", cluster.layout.ca_cert, stdin=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    assert (bob.login_dir / "client.crt").is_file()
    # carol's saved login names both: her renewal and commands find the live one.
    assert "renewed" in carol.ok("renew")
    assert "carol" in carol.ok("whoami")

    # A shared file: the node asks the admin server whether bob may write it, and only the
    # surviving instance can answer (without an admin server, shared access fails closed).
    client = Client.from_settings(LoginFolder(bob.login_dir).settings())
    try:
        client.put_bytes(NEW, "alice/team/notes.txt")
        assert client.get_bytes("alice/team/notes.txt") == \
            NEW
    finally:
        client.close()

    # The nodes' reports reach the catalogue through the other instance.
    alice = AdminApi(cluster, "alice", url=cluster.cfg.admin_endpoints[1])
    def catalogued():
        page = alice.get("/api/v1/files?prefix=alice/team/").json()
        return [f for f in page["files"] if f["size"] == len(NEW)]
    wait_for(catalogued, timeout=30, interval=0.5, what="bob's version in the catalogue")

    # The TUI's session, from carol's saved login, as the terminal client opens it.
    session = Session.from_saved_login(LoginFolder(carol.login_dir))
    try:
        assert session.username == "carol"
        assert {s["name"] for s in session.admin.servers()["servers"]} == set(NODES)
        session.client.put_bytes(b"from the TUI's session", "carol/tui.txt")
    finally:
        session.close()

    # The audit log: bob's write reached the surviving receiver, and nothing twice.
    root = AdminApi(cluster, url=cluster.cfg.admin_endpoints[1])

    def written():
        events = root.get("/api/v1/events?limit=500").json()["events"]
        return [e for e in events
                if e["path"] == "alice/team/notes.txt" and e["operation"] == "modify"
                and e["username"] == "bob"]
    wait_for(written, timeout=30, what="bob's write in the audit events")
    assert len(written()) == 1
    assert duplicated_events(pg) == []


def witness_holder(db_url):
    """The side that holds the lease now (None: nobody; it may be an old grant run out)."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as c:
            side = c.execute(text("SELECT side FROM witness_lease WHERE until > "
                                  "EXTRACT(EPOCH FROM clock_timestamp())")).scalar()
            return json.loads(side) if side else None
    finally:
        engine.dispose()


def test_the_witness_lease_is_shared_by_both_instances(running, pg):
    """node2 stops (SIGSTOP) with the first instance killed: node1 reaches exactly half of
    the servers and keeps its majority only with the witness's lease, which it must get
    from the second instance; node2's side, asking either instance, is refused meanwhile."""
    cluster = running
    cluster.kill("admin")
    cluster.signal("node2", signal.SIGSTOP)
    try:
        wait_for(lambda: Api(cluster).sees("node1", "node2", "down"), timeout=30,
                 what="node1 to see node2 down")
        wait_for(lambda: witness_holder(pg) == ["node1"], timeout=30,
                 what="the lease granted to node1's side")
        assert (cluster.status("node1") or {}).get("quorum") is True
        ctx = client_context(cluster.layout.ca_cert, cluster.layout.server_cert("node2"),
                             cluster.layout.server_key("node2"))
        conn = http_connection(cluster.cfg.admin_endpoints[1], ctx, 30)
        try:
            conn.request("POST", "/api/v1/witness", body=json.dumps(
                {"side": ["node2"], "lease": 5}), headers={"Content-Type": "application/json"})
            answer = json.loads(conn.getresponse().read())
        finally:
            conn.close()
        assert answer["granted"] is False and answer["side"] == ["node1"], answer
    finally:
        cluster.signal("node2", signal.SIGCONT)


def test_the_terminal_client_logs_in_and_shows_the_servers_through_the_other(running, tmp_path):
    """The TUI's login form with both URLs, the first instance killed: the servers screen
    fills from the second."""
    cluster = running
    cluster.kill("admin")
    password = json.loads((cluster.data_dir / "credentials" / "admin.json").read_text())[
        "password"]

    async def scenario():
        app = SecuriFileApp(config_dir=tmp_path, login=True,
                            admin_url=",".join(cluster.cfg.admin_endpoints),
                            ca=str(cluster.layout.ca_cert), start="servers", poll_seconds=0.3)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, LoginScreen) and app.screen.focused,
                        what="the login screen")
            type_ahead(app, [*"admin", "tab", *password, "enter"])
            # Mounted, not only pushed: its table exists once it is composed.
            screen = await until(pilot, lambda: isinstance(app.screen, ServersScreen)
                                 and len(app.screen.query("#servers-table")) and app.screen,
                                 what="the servers screen")
            await until(pilot, lambda: {str(k.value): cell(screen.table, k, "status")
                                        for k in screen.table.rows} ==
                        {n: "running" for n in NODES}, what="both servers running")

    asyncio.run(scenario())
