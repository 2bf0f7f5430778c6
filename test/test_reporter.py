"""A node's report queue (nodes/reporter.py): a batch sent without an answer goes again as
it was, so that the admin server, which applies a report id once, never applies an event
twice (a status change twice in a server's history, a storage sample twice)."""
import asyncio

from securifile.nodes.peerclient import PeerError
from securifile.nodes.reporter import Reporter


class Admin:
    """Takes every report (as the admin server applies it), and loses the answer to the
    next ``lose`` of them (a timeout, a connection cut after the commit)."""

    def __init__(self):
        self.reports = []
        self.lose = 0

    async def call_admin(self, admin, path, method, payload, timeout):
        assert (path, method) == ("/api/v1/reports", "POST")
        self.reports.extend(payload["reports"])
        if self.lose:
            self.lose -= 1
            raise PeerError("no answer within 10 s")
        return {"applied": 1}


def subjects(report):
    return [e["subject"] for e in report["events"]]


def reporter(tmp_path, admin):
    return Reporter("node1", tmp_path / "reports.sqlite3", "https://127.0.0.1:1", admin)


def test_a_batch_whose_answer_was_lost_is_sent_again_as_it_was(tmp_path):
    admin = Admin()
    r = reporter(tmp_path, admin)
    for name in ("a", "b", "c"):
        r.status_changed(name, "running", "down")
    admin.lose = 1
    assert asyncio.run(r.run_once()) is False
    for name in ("d", "e"):  # queued while the answer was awaited
        r.status_changed(name, "down", "verifying")
    assert asyncio.run(r.run_once()) is True
    first, again, rest = admin.reports
    assert again == first and subjects(again) == ["a", "b", "c"]  # the same report id
    assert subjects(rest) == ["d", "e"] and rest["id"] != first["id"]
    assert r.queued() == 0 and r.sent == 5


def test_the_batch_on_its_way_survives_a_restart_and_keeps_its_id(tmp_path):
    admin = Admin()
    r = reporter(tmp_path, admin)
    for name in ("a", "b"):
        r.status_changed(name, "running", "down")
    r.sample(10, 20)
    admin.lose = 1
    assert asyncio.run(r.run_once()) is False
    r.status_changed("c", "down", "running")
    # Samples dropped from it by the queue's bound do not change its id.
    r._db.execute("DELETE FROM queue WHERE kind = 'sample'")
    r = reporter(tmp_path, admin)  # the node restarted
    assert asyncio.run(r.run_once()) is True
    first, again, rest = admin.reports
    assert again["id"] == first["id"] and subjects(again) == ["a", "b"]
    assert subjects(rest) == ["c"]


def test_a_batch_dropped_whole_by_the_bound_is_not_waited_for(tmp_path):
    admin = Admin()
    r = reporter(tmp_path, admin)
    r.sample(10, 20)
    admin.lose = 1
    asyncio.run(r.run_once())
    r._db.execute("DELETE FROM queue")  # every event of it dropped
    r.status_changed("a", "running", "down")
    assert asyncio.run(r.run_once()) is True
    assert subjects(admin.reports[-1]) == ["a"] and r.queued() == 0
