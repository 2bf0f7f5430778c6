"""Quotas and reservations in the admin database, on SQLite and PostgreSQL (admin/quotas.py)."""
import threading
import uuid
from datetime import datetime, timezone

import pytest

from securifile.admin.catalog import Catalog
from securifile.admin.quotas import QuotaExceeded, Quotas
from securifile.common.errors import ApiError, Forbidden, NotFound
from securifile.common.sizes import parse_size, size_text

from .databases import db_url, sessions  # noqa: F401 (fixtures)
from .fakes import Clock
from .test_admin_db import PASSWORD, file_event, new_accounts, report

KiB = 1024


def rid():
    return uuid.uuid4().hex


@pytest.fixture
def clock():
    return Clock(datetime(2030, 1, 1, tzinfo=timezone.utc))


@pytest.fixture
def quotas(sessions, clock):  # noqa: F811
    new_accounts(sessions, clock).create("alice", "alice@example.com", 30, PASSWORD,
                                         quota_bytes=100 * KiB)
    new_accounts(sessions, clock).create("free", "free@example.com", 30, PASSWORD)
    q = Quotas(sessions, clock, reservation_seconds=60)
    return q


def catalogue(sessions, q, *events, rid_="r1", server="node1"):  # noqa: F811
    cat = Catalog(sessions)
    cat.on_quota_done = q.finish
    cat.apply_report(report(rid_, server, *events))


def test_usage_counts_each_file_once_and_reservations_until_the_report(sessions, quotas):  # noqa: F811
    assert quotas.usage("alice") == {"quota_bytes": 100 * KiB, "used_bytes": 0,
                                     "reserved_bytes": 0}
    r = rid()
    answer = quotas.reserve("node1", r, "alice", "a.bin", 40 * KiB)
    assert answer["covered_bytes"] == 40 * KiB
    assert quotas.usage("alice")["reserved_bytes"] == 40 * KiB
    # The stored file's report (two replicas in it: counted once) and then the end of the
    # reservation, in one report as the node queues them.
    catalogue(sessions, quotas, file_event("alice", "a.bin", size=40 * KiB,
                                           replicas=(("node2", 1), ("node3", 2))),
              {"type": "quota_done", "id": r})
    assert quotas.usage("alice") == {"quota_bytes": 100 * KiB, "used_bytes": 40 * KiB,
                                     "reserved_bytes": 0}


def test_over_quota_is_refused_with_the_figures(quotas):
    quotas.reserve("node1", rid(), "alice", "a.bin", 70 * KiB)
    with pytest.raises(QuotaExceeded) as e:
        quotas.reserve("node2", rid(), "alice", "b.bin", 31 * KiB)
    assert e.value.status == 507
    assert e.value.details == {"used_bytes": 0, "quota_bytes": 100 * KiB,
                               "reserved_bytes": 70 * KiB, "needed_bytes": 31 * KiB}
    # Exactly the rest fits.
    assert quotas.reserve("node2", rid(), "alice", "b.bin", 30 * KiB)["covered_bytes"] == 30 * KiB


def test_a_modification_reserves_only_the_growth(sessions, quotas):  # noqa: F811
    catalogue(sessions, quotas, file_event("alice", "a.bin", size=90 * KiB))
    assert quotas.reserve("node1", rid(), "alice", "a.bin", 95 * KiB)["covered_bytes"] == 95 * KiB
    with pytest.raises(QuotaExceeded):
        quotas.reserve("node1", rid(), "alice", "a.bin", 106 * KiB)
    # Shrinking needs nothing, even past the quota (lowered meanwhile).
    quotas.set_quota("alice", 10 * KiB)
    assert quotas.reserve("node1", rid(), "alice", "a.bin", 50 * KiB)["covered_bytes"] == 90 * KiB


def test_a_step_ahead_takes_what_headroom_there_is(quotas):
    r = rid()
    answer = quotas.reserve("node1", r, "alice", "s.bin", 0, wanted=1 << 30)
    assert answer["covered_bytes"] == 100 * KiB  # all the headroom, not the step
    # The same id moves: asking for less gives the rest back to the others.
    quotas.reserve("node1", r, "alice", "s.bin", 10 * KiB, wanted=10 * KiB)
    assert quotas.reserve("node2", rid(), "alice", "t.bin", 90 * KiB)["covered_bytes"] == 90 * KiB


def test_no_quota_reserves_nothing(quotas):
    answer = quotas.reserve("node1", rid(), "free", "x", 1 << 40)
    assert answer["quota_bytes"] is None and answer["covered_bytes"] is None
    assert quotas.usage("free")["reserved_bytes"] == 0


def test_reservations_expire_and_are_given_back(quotas, clock):
    r = rid()
    quotas.reserve("node1", r, "alice", "a.bin", 100 * KiB)
    with pytest.raises(QuotaExceeded):
        quotas.reserve("node1", rid(), "alice", "b.bin", 1)
    assert not quotas.release("node2", r)  # only its own server gives it back
    assert quotas.release("node1", r)
    quotas.reserve("node1", rid(), "alice", "b.bin", 100 * KiB)
    clock.advance(seconds=61)  # a node that died mid-upload holds nothing for ever
    assert quotas.usage("alice")["reserved_bytes"] == 0
    quotas.reserve("node1", rid(), "alice", "c.bin", 100 * KiB)
    assert quotas.prune_expired() == 1


def test_another_servers_reservation_cannot_be_moved(quotas):
    r = rid()
    quotas.reserve("node1", r, "alice", "a.bin", 1)
    with pytest.raises(Forbidden):
        quotas.reserve("node2", r, "alice", "a.bin", 2)


def test_set_quota_checks_its_value(quotas):
    assert quotas.set_quota("alice", None)["quota_bytes"] is None
    for bad in (-1, 1.5, "10G", True, 2 ** 63):
        with pytest.raises(ApiError) as e:
            quotas.set_quota("alice", bad)
        assert e.value.code == "bad_quota"
    with pytest.raises(NotFound):
        quotas.set_quota("nobody", 1)


def test_concurrent_reservations_never_overcommit(sessions, quotas):  # noqa: F811
    """Twelve threads race for 10 KiB each of 100 KiB: exactly ten win, on either database."""
    barrier = threading.Barrier(12)
    won, lost, failed = [], [], []

    def one(i):
        barrier.wait(timeout=30)
        try:
            quotas.reserve(f"node{i % 3}", rid(), "alice", f"f{i}", 10 * KiB)
            won.append(i)
        except QuotaExceeded:
            lost.append(i)
        except Exception as e:  # noqa: BLE001 (reported below)
            failed.append(repr(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not failed
    assert (len(won), len(lost)) == (10, 2)
    assert quotas.usage("alice")["reserved_bytes"] == 100 * KiB


def test_parse_size():
    assert parse_size("10G") == 10 << 30
    assert parse_size("500M") == 500 << 20
    assert parse_size("1.5k") == 1536
    assert parse_size("2GiB") == 2 << 30
    assert parse_size("123") == 123
    assert parse_size("none") is None and parse_size("Unlimited") is None
    for bad in ("", "-1", "10X", "G", "1 0"):
        with pytest.raises(ValueError):
            parse_size(bad)
    for n in (None, 0, 1, 1023, 1 << 10, 3 << 29, 10 << 30, 5 << 40):
        assert parse_size(size_text(n)) == n
    assert (size_text(10 << 30), size_text(1536), size_text(None)) == ("10G", "1536", "none")
