"""Upgrades in place: today's servers started on data directories an older version wrote.

``fixtures/data-v1.tar.gz`` holds the three node data directories (location map, copies,
report queue) of a cluster run by the first released version; ``fixtures/make_v1_data.py``
says how it was made and what is in it. A new cluster (new certificates, new admin
database, same server names) is started on them: every file must read back whole through
every node, the deleted file must stay deleted, and the cluster must take new writes.
"""
import hashlib
import json
import shutil
import tarfile
from pathlib import Path
from urllib.parse import quote

import pytest

from securifile.client.errors import FileNotFound, NoHolderAvailable
from securifile.client.storage import Client

from .clusters import start_cluster
from .helpers import AdminApi, wait_for

FIXTURE = Path(__file__).parent / "fixtures" / "data-v1.tar.gz"


def fixture_manifest():
    with tarfile.open(FIXTURE) as tar:
        return json.load(tar.extractfile("manifest.json"))


def put_v1_data_in_place(cluster):
    """Replace each node's data directory (empty, the cluster being new) with the fixture's."""
    with tarfile.open(FIXTURE) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith("nodes/")]
        for name in cluster.names:
            shutil.rmtree(cluster.cfg.node_data_dir(name), ignore_errors=True)
        tar.extractall(cluster.data_dir, members=members, filter="data")


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory):
    manifest = fixture_manifest()
    cluster = start_cluster(tmp_path_factory, "upgrade", servers=len(manifest["servers"]),
                            replicas=manifest["replicas"], before_start=put_v1_data_in_place)
    try:
        # Each node checks its peers' copies (the v1 ones), and hears from each peer that it
        # runs, before it redirects to it: until then a read may get 503 no_holder_running.
        wait_for(lambda: all(all_peers_running(cluster, n) for n in cluster.names), timeout=60,
                 what="every node to see its peers running")
        wait_for(lambda: all_holders_trusted(cluster, manifest), timeout=30,
                 what="every node to redirect to the holders")
        yield cluster, manifest
    finally:
        cluster.stop()


def all_peers_running(cluster, name):
    status = cluster.status(name)
    return status is not None and all(p["status"] == "running" for p in status["peers"])


def all_holders_trusted(cluster, manifest):
    """True once a HEAD of every file through every node ends in a holder (no 503)."""
    for name in cluster.names:
        with client_through(cluster, name) as client:
            for path in manifest["files"]:
                try:
                    client.stat(path)
                except NoHolderAvailable:
                    return False
    return True


def client_through(cluster, name):
    """A client that starts at node ``name`` and follows redirects to the others."""
    urls = [cluster.url(n) for n in cluster.names]
    client = Client([cluster.url(name)], ca=str(cluster.layout.ca_cert),
                    cert=cluster.user["cert"], key=cluster.user["key"])
    client.set_servers([cluster.url(name)], members=urls)
    return client


def test_the_fixture_is_small_and_holds_no_secrets():
    assert FIXTURE.stat().st_size < 64 << 10
    with tarfile.open(FIXTURE) as tar:
        names = tar.getnames()
    assert not [n for n in names if n.endswith((".key", ".pem", ".crt", ".log"))]
    assert {n.split("/")[1] for n in names if n.startswith("nodes/")} == set(fixture_manifest()["servers"])


def test_the_nodes_keep_their_data_dirs_and_every_file_reads_back_through_every_node(upgraded):
    cluster, manifest = upgraded
    for name in cluster.names:
        assert (cluster.cfg.node_data_dir(name) / "locations.sqlite3").exists()
        with client_through(cluster, name) as client:
            for path, digest in manifest["files"].items():
                data = client.get_bytes(path)
                assert hashlib.sha256(data).hexdigest() == digest, (name, path)
                assert client.stat(path)["digest"] == digest


def test_a_file_deleted_before_the_upgrade_stays_deleted(upgraded):
    cluster, manifest = upgraded
    for name in cluster.names:
        with client_through(cluster, name) as client:
            for path in manifest["deleted"]:
                with pytest.raises(FileNotFound):
                    client.get_bytes(path)


def test_the_listing_names_exactly_the_files_that_were_there(upgraded):
    cluster, manifest = upgraded
    owner = next(iter(manifest["files"])).split("/")[0]
    for name in cluster.names:
        with client_through(cluster, name) as client:
            listing = {f"{r['owner']}/{r['path']}": r["digest"] for r in client.list(owner)}
            assert listing == manifest["files"]


def test_reports_queued_before_the_upgrade_reach_the_new_admin_server(upgraded):
    """The fixture's report queues hold records the old admin server never got."""
    cluster, manifest = upgraded
    owner = next(iter(manifest["files"])).split("/")[0]
    alice = AdminApi(cluster, owner)
    late = f"{owner}/late.txt"

    def listed():
        r = alice.get(f"/api/v1/files?prefix={quote(owner)}/")
        return r.status == 200 and {f"{f['owner']}/{f['path']}": f for f in r.json()["files"]}.get(late)

    assert wait_for(listed, timeout=20, what=f"{late} in the admin database")["digest"] == manifest["files"][late]


def test_new_uploads_and_modifications_work_after_the_upgrade(upgraded):
    """Last in the module: it changes a file the tests above read as the fixture wrote it."""
    cluster, manifest = upgraded
    modified = sorted(manifest["files"])[0]
    owner = modified.split("/")[0]
    first, *others = cluster.names
    with client_through(cluster, first) as client:
        record = client.put_bytes(b"new after the upgrade\n", f"{owner}/after-upgrade/new.txt")
        assert record["version"] == 1
        changed = client.put_bytes(b"changed after the upgrade\n", modified)
        assert changed["version"] >= 2
    for name in others:
        with client_through(cluster, name) as client:
            assert client.get_bytes(f"{owner}/after-upgrade/new.txt") == b"new after the upgrade\n"
            assert client.get_bytes(modified) == b"changed after the upgrade\n"
            listing = {f"{r['owner']}/{r['path']}": r["digest"] for r in client.list(owner)}
            assert listing == {**manifest["files"],
                               modified: hashlib.sha256(b"changed after the upgrade\n").hexdigest(),
                               f"{owner}/after-upgrade/new.txt": record["digest"]}
