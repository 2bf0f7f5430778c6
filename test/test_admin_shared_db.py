"""What two admin server instances share in one database: the witness's tie-break lease
(one compare-and-set row), audit events stored once per syslog record id, the login
back-off; and two instances refused on SQLite. Every test runs on SQLite and PostgreSQL."""
import threading

import pytest
from sqlalchemy import select

from securifile.admin import db
from securifile.admin.main import open_service
from securifile.admin.models import Event
from securifile.admin.service import AdminService
from securifile.admin.shared_throttle import SharedLoginThrottle
from securifile.admin.witness import Witness
from securifile.common.config import Config
from securifile.common.errors import ApiError
from securifile.common.syslog import SD_ACCESS, SD_RECORD

from .fakes import Clock, at_once


def test_the_witness_grants_one_side_at_a_time(sessions):
    clock = Clock()
    w = Witness(sessions, clock)
    assert w.ask("node1", ["node1", "node2"], 5) is True
    # the other side of a 2-2 split, asking another instance on the same database
    other = Witness(sessions, clock)
    assert other.ask("node3", ["node3", "node4"], 5) is False
    assert other.side == ["node1", "node2"] and other.lease_live()
    assert w.ask("node2", ["node2", "node1"], 5)  # a member renews
    clock.now += 4.9
    assert not w.ask("node3", ["node3", "node4"], 5)
    clock.now += 5.1  # not renewed: the other side may go on
    assert not other.lease_live()
    assert w.ask("node4", ["node4", "node3"], 5)
    assert not w.ask("node1", ["node1", "node2"], 5)


def test_the_witness_refuses_a_side_the_asker_is_not_on(sessions):
    w = Witness(sessions, Clock())
    assert w.ask("node1", ["node2"], 5) is False
    assert w.side is None


def test_two_instances_asked_at_once_grant_one_side(db_url):
    """Both sides of an even split ask at the same moment, each through its own admin
    server instance (its own engine): the database's clock and one compare-and-set row
    grant exactly one of them, round after round."""
    engines = [db.make_engine(db_url) for _ in range(2)]
    try:
        db.upgrade(engines[0])
        witnesses = [Witness(db.session_factory(e)) for e in engines]
        sides = (["node1", "node2"], ["node3", "node4"])
        for _round in range(20):
            with engines[0].begin() as c:  # the lease ran out: anybody may take it
                c.exec_driver_sql("UPDATE witness_lease SET side = '', until = 0")
            start, answers = threading.Barrier(2), [None, None]

            def ask(i):
                start.wait(10)
                answers[i] = witnesses[i].ask(sides[i][0], sides[i], 30)

            threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert answers.count(True) == 1, answers
            assert witnesses[1].side == sides[answers.index(True)]
    finally:
        for e in engines:
            e.dispose()


def test_a_syslog_message_received_twice_is_stored_once(sessions, tmp_path):
    """A node resends a batch after a broken connection, maybe to the other instance: the
    message's record id keeps it to one row; messages without an id are all kept."""
    service = AdminService(Config(data_dir=tmp_path, certs_dir=tmp_path / "certs",
                                  bcrypt_rounds=4), sessions)
    event = {"msgid": "ACCESS", "hostname": "node1", "msg": "bob modify alice/a on node1",
             "sd": {SD_ACCESS: {"user": "bob", "op": "modify", "path": "alice/a",
                                "server": "node1", "result": "200", "bytes": "3"},
                    SD_RECORD: {"id": "9f" * 16}}}
    other = AdminService(Config(data_dir=tmp_path, certs_dir=tmp_path / "certs",
                                bcrypt_rounds=4), sessions)
    service.record_event(event)
    other.record_event(event)  # the same message, received by the other instance
    service.record_event(dict(event, sd={SD_ACCESS: event["sd"][SD_ACCESS]}))
    service.record_event(dict(event, sd={SD_ACCESS: event["sd"][SD_ACCESS]}))
    with sessions() as s:
        rows = s.scalars(select(Event).where(Event.path == "alice/a")).all()
    assert sorted(r.record_id or "" for r in rows) == ["", "", "9f" * 16]


def test_two_instances_on_sqlite_are_refused(tmp_path):
    cfg = Config(data_dir=tmp_path, admin_url="https://127.0.0.1:1",
                 admin_urls=["https://127.0.0.1:1", "https://127.0.0.1:2"])
    with pytest.raises(ApiError, match="PostgreSQL"):
        open_service(cfg, with_node_client=False)


def test_the_login_back_off_is_one_count_across_instances(sessions):
    """A guesser who alternates between two instances meets the same back-off as with one;
    the owner's login from an address it used before is not held back."""
    clock = Clock()
    first, second = (SharedLoginThrottle(sessions, clock=clock, limit=4, window=300.0)
                     for _ in range(2))
    account, guesser, owner = ("account", 7), ("address", "10.0.0.66"), ("address", "10.0.0.1")
    with first.attempt(account, owner) as attempt:
        attempt.succeeded()  # the owner logs in once: her address is trusted
    for i in range(4):  # the free failures, alternating between the instances
        with (first, second)[i % 2].attempt(account, guesser) as attempt:
            attempt.failed()
    for throttle in (first, second):
        with pytest.raises(ApiError) as refused:
            throttle.check(account, guesser)
        assert refused.value.status == 429
    second.check(account, owner)  # trusted: no back-off for the owner
    clock.now += 301  # the window passes: free again, on either instance
    first.check(account, guesser)
    second.check(account, guesser)


def test_one_login_succeeding_on_two_instances_at_once_trusts_its_address_once(sessions):
    """Both instances read no trusted-address row and inserted one: the second login failed
    on the duplicate key (a 500 instead of a token). Raced twelve times."""
    clock = Clock()
    first, second = (SharedLoginThrottle(sessions, clock=clock, limit=4, window=300.0)
                     for _ in range(2))
    account = ("account", 7)
    for i in range(12):
        address = ("address", f"10.0.0.{i}")
        assert at_once(lambda: first._succeeded(account, address),
                       lambda: second._succeeded(account, address)) == []
        assert second._trusted_address(account, address)
