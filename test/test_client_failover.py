"""The client against a real cluster when servers stop serving: it goes on through the others.

A server taken offline answers 503 ``server_not_running``: the client moves to the next
server, and a node that still redirects to the offline holder is asked again with
``avoid``. A killed origin does not answer: the read goes to the next holder at once, named
by the node that is asked again with ``avoid``, not after the heartbeats have noticed.
Right after a whole-cluster restart the servers answer that they are verifying, or that a
holder is (``Retry-After``): the client waits for them instead of failing.
"""
import os
import threading
import time

import pytest

from securifile.client.errors import FileLocked
from securifile.client.storage import Client

from .helpers import AdminApi, Api, wait_for
from .test_faults import SlowUpload


class RecordingClient(Client):
    """A Client that notes each URL it asks and each pause it makes."""

    def __init__(self, *args, **kwargs):
        self.asked, self.pauses = [], []
        super().__init__(*args, sleep=self._pause, **kwargs)

    def _pause(self, seconds):
        self.pauses.append(seconds)
        time.sleep(seconds)

    def _exchange(self, method, url, headers, body):
        self.asked.append(url)
        return super()._exchange(method, url, headers, body)


class FirstServer:
    """An rng for the client's random start that always picks the first server listed."""

    def randrange(self, n):
        return 0


def client_starting_at(cluster, name):
    """A client with every server of the cluster that talks to ``name`` first."""
    urls = [cluster.url(name)] + [cluster.url(n) for n in cluster.names if n != name]
    client = RecordingClient(urls, ca=str(cluster.layout.ca_cert), cert=cluster.user["cert"],
                             key=cluster.user["key"], connect_timeout=2, rng=FirstServer())
    assert client.current_server == cluster.url(name)
    return client


@pytest.fixture
def cluster(make_cluster):
    return make_cluster(servers=3, replicas=1)


def test_a_server_taken_offline_is_left_for_another_for_reads_and_writes(cluster):
    with client_starting_at(cluster, "node1") as client:
        record = client.put_bytes(b"held by the server going offline", "alice/kept.txt")
    origin = record["origin"]
    admin = AdminApi(cluster)
    assert admin.call("POST", f"/api/v1/servers/{origin}/offline").status == 200
    wait_for(lambda: (cluster.status(origin) or {}).get("status") == "offline", timeout=15,
             what=f"{origin} offline")

    # Straight away, before the others have marked it down: the client starts at it.
    with client_starting_at(cluster, origin) as client:
        assert client.get_bytes("alice/kept.txt") == b"held by the server going offline"
        assert client.asked[0].startswith(cluster.url(origin))  # it answered 503 server_not_running
        written = client.put_bytes(b"written while a server is offline", "alice/new.txt")
        assert client.current_server != cluster.url(origin)
        assert client.pauses == []
    assert written["origin"] != origin
    for name in cluster.names:
        if name != origin:
            with client_starting_at(cluster, name) as client:
                assert client.get_bytes("alice/new.txt") == b"written while a server is offline"
                assert client.get_bytes("alice/kept.txt") == b"held by the server going offline"


def test_a_read_whose_origin_was_killed_goes_to_the_next_holder_at_once(cluster):
    with client_starting_at(cluster, "node1") as client:
        record = client.put_bytes(b"x" * 5000, "alice/origin-dies.bin")
    origin = record["origin"]
    others = [n for n in cluster.names if n != origin]
    cluster.kill(origin)
    for name in others:
        with client_starting_at(cluster, name) as client:
            assert client.get_bytes("alice/origin-dies.bin") == b"x" * 5000
            assert client.pauses == []  # no waiting for the heartbeats to notice
            sent_to_origin = [u for u in client.asked if u.startswith(cluster.url(origin))]
            if sent_to_origin:  # the node still thought it running: avoid made it move on
                assert any(f"avoid={origin}" in u for u in client.asked), client.asked


def test_an_upload_whose_server_dies_under_it_waits_out_that_servers_lock(cluster, tmp_path):
    """The killed server held the file's lock on its peers for the upload it took with it:
    sent again to another server, the upload meets that lock (423) until the peers see the
    server down, and waits for it, as a resumable upload does; another writer's 423 is the
    answer at once (below)."""
    local = tmp_path / "three.bin"
    data = os.urandom(3 << 20)  # a plain PUT (resumable uploads start at 4 MiB)
    local.write_bytes(data)
    killed = []

    def kill_at_one_mib(done, total):
        if done >= 1 << 20 and not killed:  # past 100 Continue: the lock round is done
            killed.append("node1")
            cluster.kill("node1")

    with client_starting_at(cluster, "node1") as client:
        record = client.put(local, "alice/orphaned-lock.bin", progress=kill_at_one_mib)
        assert killed and record["origin"] != "node1" and record["size"] == len(data)
        assert client.pauses  # it waited for the lost lock to go
        assert client.get_bytes("alice/orphaned-lock.bin") == data

    # A 423 with no lost request behind it is another writer's: no waiting.
    survivor = record["origin"]
    writer = SlowUpload(Api(cluster), survivor, "alice/busy.bin", 100)
    try:
        writer.wait_continue()  # its lock is held on every running node
        with client_starting_at(cluster, survivor) as client:
            with pytest.raises(FileLocked):
                client.put_bytes(b"second writer", "alice/busy.bin")
            assert client.pauses == []
    finally:
        writer.close()


def test_an_upload_over_the_users_places_on_a_server_waits_for_one(make_cluster):
    """A node takes ``max_uploads_per_user`` of a user's uploads at a time and answers 429
    ``too_many_uploads`` past that; the client asks again once one is free (a folder's files
    several at a time, or another command of the same user)."""
    cluster = make_cluster(servers=3, replicas=1, max_uploads_per_user=1)
    other = SlowUpload(Api(cluster), "node1", "alice/first.bin", 5)
    try:
        other.wait_continue()  # alice's one place on node1 is taken
        with client_starting_at(cluster, "node1") as client:
            def finish_the_other():
                wait_for(lambda: client.pauses, timeout=20, what="the client to pause")
                other.send(b"first")
                assert other.response().status == 201

            finisher = threading.Thread(target=finish_the_other)
            finisher.start()
            record = client.put_bytes(b"second", "alice/second.bin")
            finisher.join(timeout=30)
            assert record["origin"] == "node1" and client.pauses
            assert client.get_bytes("alice/first.bin") == b"first"
    finally:
        other.close()


def test_reads_right_after_a_whole_cluster_restart_all_succeed(cluster):
    paths = [f"alice/restart/f{i}.txt" for i in range(15)]
    with client_starting_at(cluster, "node1") as client:
        for path in paths:
            client.put_bytes(path.encode(), path)
    for name in cluster.names:
        cluster.procs[name].terminate()
    for name in cluster.names:
        cluster.procs[name].wait(timeout=30)
    for name in cluster.names:
        cluster.start_node(name)
    wait_for(lambda: all(cluster.status(n) for n in cluster.names), timeout=30,
             what="every server to answer again")
    # At once, while they verify each other: the client with the admin server's list, as users run it.
    with Client.from_cluster_file(cluster.data_dir / "cluster.json", connect_timeout=2) as client:
        for _ in range(3):
            for path in paths:
                assert client.get_bytes(path) == path.encode()
