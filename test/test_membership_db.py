"""Tier 1: the membership in the admin database (admin/membership.py), on SQLite and on a
real PostgreSQL: one change at a time, each only once the last is known to a majority of
its list, none while a tie-break lease is out, and a server removed only once drained."""
import time

import pytest
from sqlalchemy import delete, select

from securifile.admin.catalog import Catalog
from securifile.admin.membership import DRAINING, MembershipBook
from securifile.admin.models import Membership, Server, WitnessLease
from securifile.admin.servers import ServerRegistry
from securifile.admin.witness import Witness
from securifile.common.config import ServerEntry
from securifile.common.errors import ApiError

from .databases import db_url, sessions  # noqa: F401  (fixtures)
from .fakes import Clock, at_once

THREE = [ServerEntry(f"node{i}", f"https://127.0.0.1:{9000 + i}") for i in (1, 2, 3)]


def book(sessions, replicas=1, clock=None):
    return MembershipBook(sessions, ServerRegistry(sessions), Witness(sessions, clock or Clock()),
                          replicas)


def holds(membership, epoch, *names):
    for name in names:
        membership.heard(name, epoch)


def refused(call, code):
    with pytest.raises(ApiError) as e:
        call()
    assert e.value.status in (400, 404, 409) and e.value.code == code, e.value.to_json()
    return e.value


def test_bootstrap_writes_the_configured_list_once(sessions):
    m = book(sessions)
    assert m.bootstrap(THREE)[0] == 1
    # A later start with another configuration does not change the membership.
    assert m.bootstrap(THREE[:2]) == (1, [{"name": n, "url": u, "state": "member"}
                                         for n, u in [(e.name, e.url) for e in THREE]])
    with sessions() as s:
        assert sorted(s.scalars(select(Server.name))) == ["node1", "node2", "node3"]


def test_a_change_waits_until_a_majority_of_the_new_list_holds_the_last(sessions):
    m = book(sessions)
    m.bootstrap(THREE)
    refused(lambda: m.add("node4", "https://127.0.0.1:9004"), "membership_changing")
    holds(m, 1, "node1", "node2")  # two of three
    assert m.add("node4", "https://127.0.0.1:9004")["epoch"] == 2
    # Epoch 2 has four servers: two holding it are not a majority, three are.
    holds(m, 2, "node1", "node2")
    refused(lambda: m.drain("node3"), "membership_changing")
    holds(m, 2, "node4")
    assert m.drain("node3")["epoch"] == 3
    # An older epoch reported later never lowers what a server holds.
    m.heard("node1", 1)
    with sessions() as s:
        assert s.get(Server, "node1").known_epoch == 2
        assert [r.change for r in s.scalars(select(Membership).order_by(Membership.epoch))] == \
            ["bootstrap", "add node4", "drain node3"]


def test_no_change_while_the_witness_has_a_tie_lease_out(sessions):
    clock = Clock()
    m = book(sessions, clock=clock)
    m.bootstrap(THREE)
    holds(m, 1, *[e.name for e in THREE])
    assert m.witness.ask("node1", ["node1", "node2"], 5.0)
    refused(lambda: m.add("node4", "https://127.0.0.1:9004"), "witness_lease")
    clock.now += 5.1
    assert m.add("node4", "https://127.0.0.1:9004")["epoch"] == 2


def test_a_lease_written_down_by_the_admin_server_stops_changes_made_elsewhere(sessions):
    server, cli = book(sessions), book(sessions)  # two processes on one database
    server.bootstrap(THREE)
    holds(server, 1, *[e.name for e in THREE])
    server.note_lease(["node1", "node2"], time.time() + 3.0)
    refused(lambda: cli.add("node4", "https://127.0.0.1:9004"), "witness_lease")
    server.note_lease(["node1", "node2"], time.time() - 2.0)  # ran out
    assert cli.add("node4", "https://127.0.0.1:9004")["epoch"] == 2


def test_bad_or_duplicate_servers_are_refused_and_change_nothing(sessions):
    m = book(sessions)
    m.bootstrap(THREE)
    holds(m, 1, "node1", "node2", "node3")
    refused(lambda: m.add("Node 4", "https://127.0.0.1:9004"), "bad_server_name")
    refused(lambda: m.add("admin", "https://127.0.0.1:9004"), "bad_server_name")
    refused(lambda: m.add("node4", "ftp://127.0.0.1:9004"), "bad_server_url")
    refused(lambda: m.add("node4", "https://127.0.0.1"), "bad_server_url")
    refused(lambda: m.add("node2", "https://127.0.0.1:9100"), "server_exists")
    refused(lambda: m.add("node4", "https://127.0.0.1:9002"), "server_exists")
    refused(lambda: m.drain("node9"), "no_such_server")
    refused(lambda: m.remove("node1"), "not_drained")
    assert m.current()[0] == 1


def test_a_drain_must_leave_room_for_every_copy(sessions):
    m = book(sessions, replicas=2)
    m.bootstrap(THREE)
    holds(m, 1, "node1", "node2", "node3")
    refused(lambda: m.drain("node1"), "too_few_servers")


def test_a_server_is_removed_only_once_the_catalogue_shows_it_empty(sessions):
    m = book(sessions)
    m.bootstrap(THREE)
    catalog = Catalog(sessions)
    record = {"owner": "alice", "path": "a.txt", "origin": "node1", "digest": "d" * 64,
              "algorithm": "sha256", "size": 3, "version": 1, "modified": 1.0e9,
              "replicas": [{"server": "node2", "priority": 1}], "deleted": False, "stale": []}
    catalog.apply_report({"id": "node1:1-1", "server": "node1",
                          "events": [{"type": "file", "record": record}]})
    holds(m, 1, "node1", "node2", "node3")
    m.drain("node2")
    holds(m, 2, "node1", "node2", "node3")
    assert m.status()["servers"][1] == {"name": "node2", "url": THREE[1].url, "state": DRAINING,
                                        "known_epoch": 2, "files_left": 1}
    e = refused(lambda: m.remove("node2"), "not_drained")
    assert e.details["files_left"] == 1
    moved = dict(record, replicas=[{"server": "node3", "priority": 1}], modified=1.0e9 + 1)
    catalog.apply_report({"id": "node1:2-2", "server": "node1",
                          "events": [{"type": "file", "record": moved}]})
    assert m.status()["servers"][1]["files_left"] == 0
    assert m.remove("node2")["epoch"] == 3
    assert m.names() == {"node1", "node2", "node3"}  # still answered until the next change
    with sessions() as s:
        assert s.get(Server, "node2") is None
    assert [x["name"] for x in m.current()[1]] == ["node1", "node3"]


def test_two_admin_servers_noting_the_lease_at_once_both_succeed(sessions):
    """Two admin instances on one database (or two of one instance's threads) granted the
    tie-break lease at the same moment both write it down. Before, each read no row and
    inserted one: the second failed (duplicate key, a 500 to the node that asked, seen in
    the admin failover tests on PostgreSQL)."""
    first, second = book(sessions), book(sessions)
    side = ["node1", "node2"]
    for i in range(12):
        with sessions.begin() as s:
            s.execute(delete(WitnessLease))
        until = 1000.0 + 10 * i
        assert at_once(lambda: first.note_lease(side, until),
                       lambda: second.note_lease(side, until + 1)) == []
        with sessions() as s:
            row = s.get(WitnessLease, 1)
            assert row.side == '["node1", "node2"]' and row.until in (until, until + 1)


def test_two_membership_changes_at_once_give_one_epoch_and_a_409(sessions):
    """Two administrators (or two admin instances) adding servers at the same moment both
    read epoch 1 and both wrote epoch 2: the second got a 500 (the epoch's key). Now one
    change lands and the other is refused as membership_changing."""
    first, second = book(sessions), book(sessions)
    first.bootstrap(THREE)
    holds(first, 1, *[e.name for e in THREE])
    errors = at_once(lambda: first.add("node4", "https://127.0.0.1:9004"),
                     lambda: second.add("node5", "https://127.0.0.1:9005"))
    with sessions() as s:
        epochs = sorted(s.scalars(select(Membership.epoch)))
    assert epochs == [1, 2], epochs
    assert len(errors) <= 1 and all(isinstance(e, ApiError) and e.status == 409
                                    and e.code == "membership_changing" for e in errors), errors
