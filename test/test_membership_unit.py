"""A node's membership (nodes/membership.py) on a real data folder: adopted only upwards,
saved before it counts, kept across a restart, and followed by the peer table, the
addresses, the majority's size and the node certificates accepted."""
import json

import pytest

from securifile.common.config import ServerEntry
from securifile.common.errors import ApiError
from securifile.nodes.membership import NodeMembership, follow
from securifile.nodes.peers import DOWN, PeerTable
from securifile.nodes.quorum import Quorum

THREE = [ServerEntry(f"node{i}", f"https://127.0.0.1:{9000 + i}/") for i in (1, 2, 3)]


def servers(*names, draining=()):
    return [{"name": n, "url": f"https://127.0.0.1:{9000 + int(n[4:])}",
             "state": "draining" if n in draining else "member"} for n in names]


class FakeNode:
    """What ``follow`` sets on a StorageNode: its draining set, and whether it was removed."""

    def __init__(self):
        self.draining, self.removed = set(), False

    def set_removed(self):
        self.removed = True


def test_the_configuration_only_bootstraps_and_a_lower_epoch_is_never_adopted(tmp_path):
    path = tmp_path / "membership.json"
    m = NodeMembership(path, THREE)
    assert (m.epoch, m.names) == (0, ["node1", "node2", "node3"]) and not path.exists()
    assert m.adopt(2, servers("node1", "node2", "node3", "node4"), "test")
    assert not m.adopt(1, servers("node1"), "test") and not m.adopt(2, servers("node1"), "test")
    assert json.loads(path.read_text())["epoch"] == 2
    again = NodeMembership(path, THREE)  # a restart with the old three-server configuration
    assert (again.epoch, again.names) == (2, ["node1", "node2", "node3", "node4"])
    assert not m.adopt("x", [], "test") and not m.adopt(3, [{"url": "u"}], "test")
    assert m.epoch == 2


def test_gossip_takes_only_a_newer_list_and_old_coordinators_are_refused(tmp_path):
    m = NodeMembership(tmp_path / "membership.json", THREE)
    m.gossip({"epoch": 0, "servers": servers("node1")}, "node2")
    m.gossip(None, "node2")
    assert m.epoch == 0 and len(m.names) == 3
    m.gossip({"epoch": 3, "servers": servers("node1", "node2", "node3", draining=("node3",))},
             "node2")
    assert m.epoch == 3 and m.draining == {"node3"}
    m.check_coordinator(3)
    m.check_coordinator(None)  # a peer that sends no epoch
    with pytest.raises(ApiError) as e:
        m.check_coordinator(2)
    assert e.value.status == 409 and e.value.code == "stale_membership"


def test_the_node_follows_additions_drains_and_removals(tmp_path):
    m = NodeMembership(tmp_path / "membership.json", THREE)
    peers = PeerTable("node1", m.names)
    quorum = Quorum(peers, 3, window=10, clock=lambda: 100.0)
    urls, names, node = {}, set(), FakeNode()
    follow(m, node, peers, quorum, urls, names)
    assert urls == {"node1": "https://127.0.0.1:9001", "node2": "https://127.0.0.1:9002",
                    "node3": "https://127.0.0.1:9003"} and names == set(urls)
    quorum.heard("node2")
    assert quorum.has()  # two of three
    m.adopt(1, servers("node1", "node2", "node3", "node4"), "test")
    # Two of four is no majority; the new server starts down, to be challenged when it answers.
    assert quorum.size == 4 and not quorum.has() and peers.status("node4") == DOWN
    assert "node4" in urls and "node4" in names
    quorum.heard("node3")
    assert quorum.has()
    m.adopt(2, servers("node1", "node2", "node3", "node4", draining=("node3",)), "test")
    assert node.draining == {"node3"} and quorum.size == 4
    m.adopt(3, servers("node1", "node2", "node4"), "test")
    assert "node3" not in peers.names and "node3" not in urls and "node3" not in names
    # node3's last answer no longer counts: node1 and node2 are two of three.
    assert quorum.size == 3 and quorum.reachable() == ["node1", "node2"] and quorum.has()
    assert not node.removed
    m.adopt(4, servers("node2", "node4"), "test")
    assert node.removed
    assert not peers.record_ack("node3") and peers.record_miss("node3") is None
