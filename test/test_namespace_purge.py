"""A removed account's sealed namespace is deleted once its grace period is over
(``removed_namespace_days``; issue 9, point 3; docs/SECURITY.md).

Tier 1 runs the admin server's side on SQLite and PostgreSQL: which files fall due, and
when a namespace counts as purged. The probe runs a real cluster (admin server and three
nodes over TLS) with a grace period of a few seconds, kills a holder and the admin server
mid-way, and checks the bytes on every node's disk, the catalogue and the audit log.
"""
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from securifile.admin.models import Event, RemovedAccount
from securifile.admin.service import AdminService
from securifile.common.certnames import CertLayout
from securifile.common.certs import ensure_ca
from securifile.common.config import Config

from .clusters import start_cluster
from .fakes import Clock
from .helpers import AdminApi, disk_copy, wait_for

PASSWORD = "correct horse battery"
NODES = ("node1", "node2", "node3")


# -- tier 1: which files are due, and when a namespace is purged -------------------------------


@pytest.fixture
def service(sessions, tmp_path):
    cfg = Config(certs_dir=tmp_path / "certs", data_dir=tmp_path / "data", bcrypt_rounds=4,
                 removed_namespace_days=2.5)
    ensure_ca(CertLayout(cfg.certs_dir))
    svc = AdminService(cfg, sessions, clock=Clock(datetime.now(timezone.utc)))
    return svc


def report(service, owner, path, n, deleted=False, version=1):
    service.catalog.apply_report({"id": f"r-{owner}-{path}-{n}", "server": "node1", "events": [{
        "type": "file", "record": {"owner": owner, "path": path, "size": 3, "digest": "00",
                                   "algorithm": "sha256", "version": version,
                                   "origin": "node1", "deleted": deleted,
                                   "modified": service.clock().timestamp(), "replicas": []}}]})


def test_only_the_removed_accounts_files_fall_due_after_the_grace_period(service):
    for name in ("carol", "dave"):
        service.accounts.create(name, f"{name}@example.com", 30, PASSWORD)
    report(service, "carol", "a.txt", 1)
    report(service, "carol", "dir/b.txt", 2)
    report(service, "dave", "d.txt", 3)
    service.accounts.remove("carol")
    service.clock.now += timedelta(seconds=1)
    service.accounts.create("carol", "carol2@example.com", 30, PASSWORD)  # somebody else
    report(service, "carol", "new.txt", 4)

    assert service.due_purges(10) == []
    service.clock.now += timedelta(days=2.4)
    assert service.due_purges(10) == [] and service.finish_purges() == []
    service.clock.now += timedelta(days=0.2)  # fractional days: 2.5 have passed
    due = [{"owner": "carol", "path": "a.txt", "version": 1},
           {"owner": "carol", "path": "dir/b.txt", "version": 1}]
    assert service.due_purges(10) == due
    assert service.due_purges(1) == due[:1]
    assert service.due_purges(10, ("carol", "a.txt")) == due[1:]
    # Not purged while a file is left; purged (and logged) once the nodes deleted them all.
    assert service.finish_purges() == []
    report(service, "carol", "a.txt", 5, deleted=True, version=2)
    assert service.finish_purges() == []
    report(service, "carol", "dir/b.txt", 6, deleted=True, version=2)
    assert service.due_purges(10) == []
    (done,) = service.finish_purges()
    assert done[0] == "carol"
    assert service.finish_purges() == []  # once
    with service.sessions() as s:
        assert s.scalar(select(RemovedAccount.purged_at)) is not None
        assert s.scalars(select(Event.operation).where(Event.operation == "purge")).all() == [
            "purge"]
    # The new carol's file never fell due; the old id stays refused.
    assert [f["path"] for f in service.catalog.owned_files("carol")["files"]] == ["new.txt"]


# -- the probe: a real cluster with a grace period of seconds -----------------------------------

GRACE_DAYS = 6 / 86400  # six seconds


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = start_cluster(tmp_path_factory, "purge", 3, 1, removed_namespace_days=GRACE_DAYS,
                      purge_interval=0.5, purge_batch=2)
    try:
        yield c
    finally:
        c.stop()


def on_disk(cluster, path):
    owner, rel = path.split("/", 1)
    return [n for n in NODES if disk_copy(cluster, n, owner, rel).exists()]


def catalogue(cluster, owner):
    """Every file row of ``owner`` in the admin database, sealed ones included (the API
    leaves those out)."""
    db = sqlite3.connect(f"file:{cluster.data_dir / 'admin' / 'admin.sqlite3'}?mode=ro",
                         uri=True)
    try:
        return sorted(p for (p,) in db.execute("SELECT path FROM files WHERE owner = ?",
                                               (owner,)))
    finally:
        db.close()


def test_a_removed_accounts_files_are_deleted_everywhere_after_the_grace_period(cluster):
    root = AdminApi(cluster)
    root.add_user("ruth")
    ruth = root.as_user("ruth").node_api()
    old = [f"ruth/old/{i}.txt" for i in range(5)]
    for i, path in enumerate(old):
        assert ruth.put(NODES[i % 3], path, b"old %d" % i).status == 201
    wait_for(lambda: all(len(on_disk(cluster, p)) == 2 for p in old), what="two copies each")
    wait_for(lambda: len(catalogue(cluster, "ruth")) == 5, what="the catalogue")
    # A holder of some of them is down when the grace period ends; it comes back later.
    down = on_disk(cluster, old[0])[0]
    assert root.call("DELETE", "/api/v1/users/ruth").status == 204
    root.add_user("ruth")  # somebody else, with the same name and files of their own
    new = root.as_user("ruth").node_api()
    other = next(n for n in NODES if n != down)
    assert new.put(other, "ruth/mine.txt", b"mine").status == 201
    wait_for(lambda: "mine.txt" in catalogue(cluster, "ruth"), what="the new file reported")
    assert new.follow(other, "GET", old[1])[1].status == 403  # sealed meanwhile
    cluster.kill(down)
    # The admin server dies too, mid-way; a restarted one carries on.
    wait_for(lambda: len(catalogue(cluster, "ruth")) < 6, timeout=60,
             what="the purge to begin")
    cluster.kill("admin")
    cluster.restart("admin")

    root = AdminApi(cluster)
    wait_for(lambda: catalogue(cluster, "ruth") == ["mine.txt"], timeout=60,
             what="the catalogue to hold only the new ruth's file")
    # Every copy on the running nodes goes (each when the tombstone reaches it; the
    # catalogue may hear first); the node that was down still has its own.
    wait_for(lambda: all(on_disk(cluster, p) in ([], [down]) for p in old), timeout=30,
             what="the copies on the running nodes to go")
    cluster.restart(down)
    wait_for(lambda: not any(on_disk(cluster, p) for p in old), timeout=60,
             what="the copies on the node that was down to go too")
    for node in NODES:  # (a node's cached decision may say "sealed" for a moment)
        wait_for(lambda: new.follow(node, "GET", old[2])[1].status == 404, timeout=30,
                 what=f"{node} to find the purged path free")
        assert new.follow(node, "GET", "ruth/mine.txt")[1].body == b"mine"

    def purge_events():
        events = root.get("/api/v1/events?limit=1000").json()["events"]
        return [e for e in events if e.get("operation") == "purge"
                or (e.get("username") == "(purge)" and e.get("path") in old)]
    events = wait_for(lambda: (found := purge_events()) and any(
        e.get("operation") == "purge" for e in found) and found,
        timeout=30, what="the purge in the audit log")
    assert {e["path"] for e in events if e.get("username") == "(purge)"} <= set(old)
    # The old files can be written again by the new owner: the name is theirs now.
    assert new.put("node2", old[0], b"new bytes").status == 201
