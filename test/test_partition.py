"""Partitions between real processes, each server in its own network namespace (test/netns.py).

The harness is checked first: addresses, which namespace reaches which, a cut that separates
a server from its peers only, a heal, and a cluster serving across namespaces. Then the
scenarios of the split-brain report: a server cut off from its peers while clients still
reach it, and the admin server as the witness that breaks ties.
"""
import os
import socket
import subprocess

import pytest

from .helpers import Api, wait_for
from .netns import ADMIN_ADDRESS, CLIENT_ADDRESS, entered, lab_or_skip, server_address

PROBE_PORT = 9000


# -- the harness --------------------------------------------------------------------------

@pytest.fixture
def lab():
    made = lab_or_skip(3)
    yield made
    made.remove()


def reaches(netns, address, timeout=1.0):
    with entered(netns):
        try:
            socket.create_connection((address, PROBE_PORT), timeout=timeout).close()
            return True
        except OSError:
            return False


def reachability(lab):
    """{(from, to): reached} between every pair of the lab's hosts."""
    hosts = {f"node{i}": (ns, server_address(i)) for i, ns in enumerate(lab.nodes, 1)}
    hosts.update(admin=(lab.admin, ADMIN_ADDRESS), client=(lab.client, CLIENT_ADDRESS))
    return {(a, b): reaches(hosts[a][0], hosts[b][1]) for a in hosts for b in hosts if a != b}


def test_the_lab_cuts_a_server_off_from_its_peers_only_and_heals(lab):
    listeners = []
    try:
        for netns, address in [(ns, server_address(i)) for i, ns in enumerate(lab.nodes, 1)] + \
                [(lab.admin, ADMIN_ADDRESS), (lab.client, CLIENT_ADDRESS)]:
            with entered(netns):
                s = socket.socket()
                s.bind((address, PROBE_PORT))
                s.listen(64)
                listeners.append(s)
        assert all(reachability(lab).values())
        lab.cut(3)
        assert lab.cut_off() == [3]
        cut = reachability(lab)
        assert {pair for pair, ok in cut.items() if not ok} == {
            ("node1", "node3"), ("node2", "node3"), ("node3", "node1"), ("node3", "node2")}
        lab.heal(3)
        assert lab.cut_off() == []
        assert all(reachability(lab).values())
    finally:
        for s in listeners:
            s.close()


def test_the_lab_is_removed_with_its_namespaces():
    made = lab_or_skip(2)
    names = made.namespaces
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert all(ns in listed for ns in names)
    made.remove()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(ns in listed for ns in names)


def netns_inode(name):
    return os.stat(f"/run/netns/{name}").st_ino


def test_a_cluster_serves_across_namespaces(make_netns_cluster):
    cluster = make_netns_cluster(servers=3, replicas=1)
    for name in cluster.names + ["admin"]:  # each process runs in its own namespace
        assert os.stat(f"/proc/{cluster.procs[name].pid}/ns/net").st_ino == \
            netns_inode(cluster.lab.netns_of(name))
    assert cluster.cfg.server("node2").url == "https://169.254.1.2:8442"
    wait_for(lambda: all(Api(cluster).sees(o, p, "running") for o in cluster.names
                         for p in cluster.names if p != o), 20, what="every node running")
    api = Api(cluster)
    r = api.put("node1", "alice/a.txt", b"across namespaces")
    assert r.status == 201, r
    for node in cluster.names:
        _, got = api.follow(node, "GET", "alice/a.txt")
        assert got.status == 200 and got.body == b"across namespaces", (node, got)
