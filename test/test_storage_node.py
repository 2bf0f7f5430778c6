"""StorageNode's write protocol in one process (test/memory_cluster.py): where an upload
goes, 423 while a file is locked, who may create a file, room checks, and a whole upload
through the majority lock to its replica. No processes: each test takes milliseconds."""
import asyncio
import dataclasses
import os

import pytest

from securifile.common.errors import ApiError, Forbidden, Locked
from securifile.common.paths import FilePath
from securifile.nodes.diskfile import InsufficientStorage
from securifile.nodes.metrics import NodeMetrics
from securifile.nodes.observed import listen
from securifile.nodes.quorum import Quorum
from securifile.nodes.orphans import sweep_orphans
from securifile.nodes.partial_uploads import PartialUploadStore
from securifile.nodes.pipeline import BATCH
from securifile.nodes.resumable import ResumableUploads
from securifile.nodes.upload import Redirect, Stored, Upload
from securifile.nodes.upload_limits import TooManyUploads

from .helpers import Killed, killed_after
from .memory_cluster import MemoryCluster


@pytest.fixture
def cluster(tmp_path):
    c = MemoryCluster(tmp_path)
    yield c
    c.close()


def run(coro):
    return asyncio.run(coro)


def no_locks_anywhere(cluster, fp):
    return all(node.locks.held(fp) is None for node in cluster.nodes.values())


async def upload(node, fp, user, data, body_first=False):
    up = node.begin_upload(fp, user, len(data))
    assert isinstance(up, Upload)
    try:
        assert await up.start(body_first=body_first) is None
        pending = up.write(data)
        if pending is not None:
            await pending
        return await up.finish()
    finally:
        up.close()


def refusal(node, fp, user, body=b"abc", **options):
    """The ApiError an upload of ``body`` ends with (at start or at finish), once the upload
    is closed and the peers' unlocks have run."""
    async def attempt():
        up = node.begin_upload(fp, user, len(body), **options)
        try:
            if await up.start() is None:
                up.write(body)
                await up.finish()
        except ApiError as e:
            return e
        finally:
            up.close()
            for _ in range(3):
                await asyncio.sleep(0)
        raise AssertionError(f"the upload of {fp} by {user} was not refused")

    return run(attempt())


@pytest.mark.parametrize("body_first", [False, True])
def test_an_upload_is_stored_here_and_on_its_replica_and_frees_the_lock(cluster, body_first):
    n1 = cluster.nodes["n1"]
    fp = FilePath("alice", "docs/a.txt")
    stored = run(upload(n1, fp, "alice", b"hello", body_first))
    assert isinstance(stored, Stored) and stored.created
    body = stored.body
    assert body["origin"] == "n1" and body["size"] == 5 and body["replicas_wanted"] == 1
    assert body["under_replicated"] is False
    (replica,) = [r["server"] for r in body["replicas"]]
    for name in ("n1", replica):
        assert b"".join(cluster.nodes[name].store.open_chunks(fp)) == b"hello"
    # Every node learnt the record; no lock and no upload slot is left behind.
    assert all(node.locations.get(fp).version == 1 for node in cluster.nodes.values())
    assert no_locks_anywhere(cluster, fp)
    assert n1.upload_slots._busy == {}
    again = run(upload(n1, fp, "alice", b"hello again"))
    assert not again.created and again.body["version"] == 2


def test_a_file_held_elsewhere_is_redirected_to_its_holder(cluster):
    fp = cluster.place("alice", "held.txt", ["n2", "n3"])
    decision = cluster.nodes["n1"].begin_upload(fp, "alice", 3)
    assert decision == Redirect("n2")
    # The client could not reach n2: the next holder coordinates.
    assert cluster.nodes["n1"].begin_upload(fp, "alice", 3, avoid={"n2"}) == Redirect("n3")
    # A holder serves the write itself.
    assert isinstance(cluster.nodes["n2"].begin_upload(fp, "alice", 3), Upload)


def test_a_locked_file_is_refused_with_423_before_any_redirect(cluster):
    fp = cluster.place("alice", "busy.txt", ["n2", "n3"])

    async def scenario():
        ticket = await cluster.nodes["n3"].lock(fp, "bob")  # n3 coordinates bob's write
        with pytest.raises(Locked) as refused:
            cluster.nodes["n1"].begin_upload(fp, "alice", 3)
        cluster.nodes["n3"].release(ticket)
        await asyncio.sleep(0)  # the peers' unlocks run in the background
        return refused.value

    err = run(scenario())
    assert err.status == 423 and err.details == {"holder": "bob", "node": "n3"}
    assert isinstance(cluster.nodes["n1"].begin_upload(fp, "alice", 3), Redirect)


def test_a_lock_held_only_on_a_peer_refuses_the_upload_at_lock_time(cluster):
    """The local table is free, but a majority member holds the lock: 423 from the round."""
    fp = FilePath("alice", "peer-locked.txt")
    cluster.nodes["n2"].locks.acquire(fp, "bob", "n2", "other-token", 30)
    cluster.nodes["n3"].locks.acquire(fp, "bob", "n2", "other-token", 30)
    n1 = cluster.nodes["n1"]
    assert isinstance(refusal(n1, fp, "alice"), Locked)
    assert n1.locks.held(fp) is None and n1.upload_slots._busy == {}


def test_a_lock_round_without_a_majority_says_which_peers_did_not_grant_and_why(cluster,
                                                                              monkeypatch):
    """An operator reading the 503 learns whom to look at: one peer cut off, one refusing."""
    fp = FilePath("alice", "lonely.txt")
    n1 = cluster.nodes["n1"]
    n1.quorum = Quorum(n1.peers, 3, window=60.0)
    n1.quorum.heard("n2")
    n1.quorum.heard("n3")  # both answered heartbeats a moment ago
    cluster.unreachable.add("n2")

    def stale(*args, **kwargs):
        raise ApiError("membership epoch 1 is older than this server's (2)", status=409,
                       code="stale_membership")

    monkeypatch.setattr(cluster.nodes["n3"], "grant_lock", stale)
    err = refusal(n1, fp, "alice")
    assert err.status == 503 and err.code == "no_quorum", err
    assert "(n2: unreachable, n3: stale_membership)" in err.message, err.message
    assert no_locks_anywhere(cluster, fp) and n1.upload_slots._busy == {}


def test_only_the_owner_creates_a_file_and_the_refusal_gives_everything_back(cluster):
    n1 = cluster.nodes["n1"]
    fp = FilePath("alice", "new.txt")
    err = refusal(n1, fp, "bob")
    assert isinstance(err, Forbidden) and err.status == 403 and err.code == "forbidden"
    assert no_locks_anywhere(cluster, fp) and n1.upload_slots._busy == {}
    # Once the file exists, someone else (the authoriser let them) may change it.
    run(upload(n1, fp, "alice", b"v1"))
    assert not run(upload(n1, fp, "bob", b"v2")).created


def test_room_and_size_are_checked_before_anything_is_held(tmp_path):
    cluster = MemoryCluster(tmp_path, capacity_bytes=100)
    try:
        n1 = cluster.nodes["n1"]
        fp = FilePath("alice", "big.bin")
        with pytest.raises(InsufficientStorage) as full:
            n1.begin_upload(fp, "alice", 101)
        assert full.value.status == 507
        with pytest.raises(ApiError) as large:
            n1.begin_upload(fp, "alice", 50, max_bytes=40)
        assert (large.value.status, large.value.code) == (413, "too_large")
        assert n1.upload_slots._busy == {} and n1.locks.held(fp) is None
        # An unannounced length is not checked up front (the writer checks as bytes come).
        assert isinstance(n1.begin_upload(fp, "alice", None), Upload)
    finally:
        cluster.close()


def test_a_bad_content_digest_is_refused_before_the_upload_begins(cluster):
    with pytest.raises(ApiError) as bad:
        cluster.nodes["n1"].begin_upload(FilePath("alice", "d.txt"), "alice", 1,
                                         content_digest="sha-256=:nope:")
    assert (bad.value.status, bad.value.code) == (400, "invalid_digest")


def test_a_declared_digest_that_does_not_match_commits_nothing(cluster):
    n1 = cluster.nodes["n1"]
    fp = FilePath("alice", "d.txt")
    # The SHA-256 of b"other", declared for b"hello".
    declared = "sha-256=:2SmKENGwc1g33EvYXaxkGw887yekfl1TpU8vP1svz/o=:"
    err = refusal(n1, fp, "alice", b"hello", content_digest=declared)
    assert err.code == "digest_mismatch"
    assert n1.locations.get(fp) is None and not n1.store.path_for(fp).exists()
    assert no_locks_anywhere(cluster, fp)


def test_a_user_holds_at_most_its_upload_slots(cluster):
    n1 = cluster.nodes["n1"]
    n1.upload_slots.per_user = 1

    async def scenario():
        first = n1.begin_upload(FilePath("alice", "1"), "alice", 1)
        second = n1.begin_upload(FilePath("alice", "2"), "alice", 1)
        try:
            await first.start()
            with pytest.raises(TooManyUploads):
                await second.start()
        finally:
            first.close()
            second.close()
        third = n1.begin_upload(FilePath("alice", "3"), "alice", 1)
        await third.start()  # the first gave its slot back
        third.close()

    run(scenario())


def test_an_upload_closed_during_its_lock_round_gives_the_lock_back(cluster):
    """The client went away while the majority was asked: the lock, when it comes, goes."""
    n1 = cluster.nodes["n1"]
    fp = FilePath("alice", "gone.txt")

    async def scenario():
        up = n1.begin_upload(fp, "alice", 1)
        started = asyncio.ensure_future(up.start())
        await asyncio.sleep(0)  # the lock round is under way
        up.close()
        assert await started is None
        for _ in range(10):
            await asyncio.sleep(0)  # the peers' unlocks
        return up

    up = run(scenario())
    assert up.ticket is None and no_locks_anywhere(cluster, fp)


def test_the_metrics_hear_of_replication_broadcasts_and_misses(cluster):
    n1 = cluster.nodes["n1"]
    metrics = NodeMetrics(n1)
    sample = metrics.registry.get_sample_value
    run(upload(n1, FilePath("alice", "m.txt"), "alice", b"counted"))
    assert sample("securifile_record_broadcasts_total", {"confirmed": "true"}) == 1
    assert sample("securifile_replication_duration_seconds_count") == 1
    assert sample("securifile_replications_short_total") == 0
    n1.peers.record_miss("n2")
    assert sample("securifile_heartbeat_misses_total", {"peer": "n2"}) == 1
    # A method nobody marked cannot be listened to: a renamed one fails loudly.
    with pytest.raises(AttributeError):
        listen(n1, "route_read", lambda *_: None)


def held_folder_syncs(node):
    """Make ``node``'s folder fsyncs wait for the event this returns (set it to let them
    through, or set ``failure`` on it first to make them fail)."""
    import threading

    from securifile.common.durable import FolderSyncer, fsync_dir
    gate = threading.Event()
    gate.failure = None

    def sync(folder):
        assert gate.wait(10)
        if gate.failure is not None:
            raise gate.failure
        fsync_dir(folder)

    node.store.folders = FolderSyncer(sync)
    return gate


def peer_calls(node):
    """What ``node`` asked its peers, in order, as (what, peer); the log is emptied."""
    log, node.client.log = node.client.log, []
    return log


@pytest.mark.parametrize("replicas", [1, 2])
def test_a_small_upload_sends_its_record_with_its_copies_one_round_after_the_lock(tmp_path,
                                                                                  replicas):
    """Lock, then one round: each replica stores the copy and takes the record that names
    it (giving the lock back), the other peers take the record. No separate copy round."""
    c = MemoryCluster(tmp_path, replicas=replicas)
    try:
        n1 = c.nodes["n1"]
        fp = FilePath("alice", "small.txt")
        stored = run(upload(n1, fp, "alice", b"small body", body_first=True))
        copies = sorted(r["server"] for r in stored.body["replicas"])
        assert len(copies) == replicas and stored.body["under_replicated"] is False
        calls = peer_calls(n1)
        assert sorted(calls[:2]) == [("lock", "n2"), ("lock", "n3")]
        assert sorted(calls[2:]) == sorted([("copy and record", n) for n in copies]
                                           + [("records", n) for n in ("n2", "n3")
                                              if n not in copies])
        for name in ["n1"] + copies:
            assert b"".join(c.nodes[name].store.open_chunks(fp)) == b"small body"
            assert c.nodes[name].locations.copy_version(fp) == 1
        records = [node.locations.get(fp) for node in c.nodes.values()]
        assert all(r.to_json() == records[0].to_json() for r in records)
        assert no_locks_anywhere(c, fp)
        again = run(upload(n1, fp, "alice", b"small again", body_first=True))
        assert again.body["version"] == 2 and again.body["stamp"] > stored.body["stamp"]
    finally:
        c.close()


def run_stamps(cluster, fp):
    return [node.locations.get(fp).stamp for node in cluster.nodes.values()]


def test_a_replica_that_refuses_a_small_copy_gets_a_corrected_record(cluster):
    """The record went out naming the replica; the one that follows (the stamp after the
    ticket's) names only what was stored, everywhere, before the client hears of it."""
    n1 = cluster.nodes["n1"]
    fp = FilePath("alice", "refused.txt")
    cluster.refuse_copies = {"n2", "n3"}
    stored = run(upload(n1, fp, "alice", b"small body", body_first=True))
    assert stored.body["replicas"] == [] and stored.body["under_replicated"] is True
    first = stored.body["stamp"]
    record = {k: v for k, v in stored.body.items()
              if k not in ("under_replicated", "replicas_wanted")}
    for node in cluster.nodes.values():
        assert node.locations.get(fp).to_json() == record
    assert [n for n in ("n2", "n3") if cluster.nodes[n].store.exists(fp)] == []
    assert no_locks_anywhere(cluster, fp)
    assert first == run_stamps(cluster, fp)[0] and len(set(run_stamps(cluster, fp))) == 1
    # The next change orders after the correction (its stamp was reserved with the first).
    cluster.refuse_copies = set()
    again = run(upload(n1, fp, "alice", b"second", body_first=True))
    assert again.body["stamp"] > first and again.body["version"] == 2


def test_an_existing_holder_that_refuses_a_small_copy_is_named_stale(cluster):
    n1 = cluster.nodes["n1"]
    fp = cluster.place("alice", "held.txt", ["n1", "n2"])
    cluster.refuse_copies = {"n2"}
    stored = run(upload(n1, fp, "alice", b"version two", body_first=True))
    assert stored.body["version"] == 2 and stored.body["stale"] == ["n2"]
    for node in cluster.nodes.values():
        loc = node.locations.get(fp)
        assert (loc.version, loc.stale, loc.stamp) == (2, ["n2"], stored.body["stamp"])
    assert cluster.nodes["n2"].locations.copy_version(fp) == 1  # its old copy, stale
    assert no_locks_anywhere(cluster, fp)


def test_an_origin_whose_commit_fails_after_the_copies_went_out_publishes_nothing(cluster):
    n1 = cluster.nodes["n1"]
    fp = FilePath("alice", "failing.txt")
    gate = held_folder_syncs(n1)
    gate.failure = OSError(5, "Input/output error")
    gate.set()

    async def scenario():
        with pytest.raises(OSError):
            await upload(n1, fp, "alice", b"small body", body_first=True)
        for _ in range(3):  # the peers' unlocks run in the background
            await asyncio.sleep(0)

    run(scenario())
    assert all(node.locations.get(fp) is None for node in cluster.nodes.values())
    assert no_locks_anywhere(cluster, fp)


@pytest.mark.parametrize("step", ["delete", "forget_copy"])
def test_a_copy_dropped_when_the_node_dies_half_way_is_never_recorded_and_gone(
        cluster, monkeypatch, step):
    """Dropping a copy (a tombstone, a lost copy, a leftover) removes the file and its copy
    record; killed between the two, the node must not keep the record of a file that is
    gone: its peers' challenge would call that copy missing and fail a healthy node."""
    n1 = cluster.nodes["n1"]
    fp = FilePath("alice", "docs/dropped.txt")
    run(upload(n1, fp, "alice", b"to be dropped"))
    assert n1.locations.copy_record(fp) is not None
    killed_after(monkeypatch, n1.store if step == "delete" else n1.locations, step)
    with pytest.raises(Killed):
        n1._drop_local(fp)
    assert n1.locations.copy_record(fp) is None or n1.store.path_for(fp).is_file()
    # Dropped for a tombstone, say: what the kill left, a file with no copy record, goes
    # with the sweep after a scrub pass.
    monkeypatch.undo()
    loc = n1.locations.get(fp)
    n1.locations.apply(dataclasses.replace(loc, version=loc.version + 1, deleted=True))
    run(sweep_orphans(n1, grace=0))
    assert n1.locations.copy_record(fp) is None and not n1.store.path_for(fp).exists()
    assert not (n1.store.files_dir / "alice" / "docs").exists()  # and the folder it empties


async def upload_in_place(node, fp, user, data, read=40_000, spaces=None):
    """An upload whose body is read straight into its sink (common/direct_bodies.py), as a
    node's HTTP connection reads one of known length; None if the upload offers no sink.
    ``spaces``: a list given the length of each view the sink offers."""
    up = node.begin_upload(fp, user, len(data))
    try:
        assert await up.start() is None
        sink = up.sink()
        if sink is None:
            return None
        done = 0
        while done < len(data):
            space = sink.space()
            if spaces is not None:
                spaces.append(len(space))
            n = min(len(space), read, len(data) - done)
            space[:n] = data[done:done + n]
            pending = sink.filled(n)
            if pending is not None:
                await pending
            done += n
        return await up.finish()
    finally:
        up.close()


def test_a_big_body_read_in_place_is_stored_here_and_streamed_to_its_replica(cluster):
    n1 = cluster.nodes["n1"]
    fp = FilePath("alice", "big.bin")
    data = bytes(range(256)) * (12 << 10)  # 3 MiB: pipelined, not kept in memory
    spaces = []
    stored = run(upload_in_place(n1, fp, "alice", data, read=1 << 20, spaces=spaces))
    # Read a batch at most at a time: each piece is copied for the replicas, and pieces of
    # a MiB, several queued at once, raised the origin's peak RSS by 9 MiB (the bench).
    assert max(spaces) == BATCH
    assert isinstance(stored, Stored) and stored.body["size"] == len(data)
    assert stored.body["under_replicated"] is False
    (replica,) = [r["server"] for r in stored.body["replicas"]]
    for name in ("n1", replica):
        assert b"".join(cluster.nodes[name].store.open_chunks(fp)) == data
    assert no_locks_anywhere(cluster, fp)


def test_a_small_body_or_one_of_unknown_length_offers_no_sink(cluster):
    n1 = cluster.nodes["n1"]
    # Kept in memory for its replicas (one message with the record): read as pieces.
    assert run(upload_in_place(n1, FilePath("alice", "small"), "alice", b"x" * 5000)) is None

    async def unknown_length():
        up = n1.begin_upload(FilePath("alice", "unknown"), "alice", None)
        try:
            assert await up.start() is None
            return up.sink()
        finally:
            up.close()

    assert run(unknown_length()) is None


def test_a_disk_that_fills_under_a_body_read_in_place_refuses_the_rest(cluster, monkeypatch):
    """The free space is checked before each full buffer: once it runs out, the sink offers
    no more room (the connection then drops the rest through ``data_received``), and the
    upload ends 507 with nothing stored and nothing held."""
    n1 = cluster.nodes["n1"]
    fp = FilePath("alice", "filling.bin")
    data = os.urandom(3 << 20)

    def full(incoming, in_flight=0):
        if in_flight >= 1 << 20:  # the second buffer finds the disk full
            raise InsufficientStorage("not enough space")

    async def attempt():
        up = n1.begin_upload(fp, "alice", len(data))
        try:
            assert await up.start() is None
            sink = up.sink()
            monkeypatch.setattr(n1.store, "check_room", full)
            done = 0
            while (space := sink.space()) is not None:
                n = min(len(space), len(data) - done)
                space[:n] = data[done:done + n]
                pending = sink.filled(n)
                if pending is not None:
                    await pending
                done += n
            assert done == 2 << 20
            assert up.failure is not None and up.failure.status == 507
            with pytest.raises(InsufficientStorage):
                await up.finish()
        finally:
            up.close()
            for _ in range(3):
                await asyncio.sleep(0)

    run(attempt())
    assert all(not node.store.exists(fp) for node in cluster.nodes.values())
    assert no_locks_anywhere(cluster, fp) and n1.upload_slots._busy == {}


def cut_between(cluster, a, b):
    """The link between ``a`` and ``b`` broken, each seeing the other down."""
    cluster.cut.add(frozenset((a, b)))
    for _ in range(cluster.nodes[a].peers.misses_allowed):
        cluster.nodes[a].peers.record_miss(b)
        cluster.nodes[b].peers.record_miss(a)


def test_a_node_cut_from_one_peer_reads_the_newest_record_from_the_others(cluster):
    """n1 and n3 lose each other and both still hear n2: n1 writes without n3, and n3 asks
    n2 for the newest record before it routes a read (before: 404 for the new file and
    version 1 of the changed one until n3's next pull from n2)."""
    n1, n3 = cluster.nodes["n1"], cluster.nodes["n3"]
    changed = cluster.place("alice", "changed.txt", ["n1", "n2"], b"v1")
    fresh = FilePath("alice", "fresh.txt")
    metrics = NodeMetrics(n3)

    def doubted_reads():
        return metrics.registry.get_sample_value("securifile_doubted_reads_total")
    assert run(n3.read_newest(fresh)) == 0 and n3.client.calls == 0  # nothing doubted
    assert doubted_reads() == 0
    cut_between(cluster, "n1", "n3")
    run(upload(n1, fresh, "alice", b"fresh"))
    run(upload(n1, changed, "alice", b"v2"))
    assert n3.locations.get(fresh) is None and n3.locations.get(changed).version == 1

    assert run(n3.read_newest(fresh)) == 1  # n2 asked, n1 not (doubted)
    assert [what for what in n3.client.log] == [("record", "n2")]
    assert doubted_reads() == 1
    assert n3.route_read(fresh) == ("redirect", "n2")  # n1, its origin, is down here
    run(n3.read_newest(changed))
    assert n3.locations.get(changed).version == 2
    assert n3.route_read(changed) == ("redirect", "n2")

    # A deletion on the other side is read too: 404, not the bytes of before.
    assert run(n1.delete(fresh, "alice"))
    run(n3.read_newest(fresh))
    with pytest.raises(ApiError) as e:
        n3.route_read(fresh)
    assert e.value.status == 404


def test_a_doubting_node_without_a_majority_of_answers_refuses_the_read(cluster):
    """The newest record may be on the peers that did not answer: 503, not a guess."""
    n3 = cluster.nodes["n3"]
    fp = cluster.place("alice", "a.txt", ["n1", "n2"])
    n3.quorum = Quorum(n3.peers, 3, window=60.0)
    n3.quorum.heard("n2")
    cut_between(cluster, "n1", "n3")
    cluster.unreachable.add("n2")  # heard a moment ago, not answering now
    with pytest.raises(ApiError) as e:
        run(n3.read_newest(fp))
    assert e.value.status == 503 and e.value.code == "no_quorum", e.value
    assert "while n1 may be writing without this one" in e.value.message
    cluster.unreachable.discard("n2")
    assert run(n3.read_newest(fp)) == 1


def test_a_doubting_node_pulls_from_the_peers_not_seen_down_before_a_listing(cluster):
    """A listing cannot ask for one record: it pulls what each peer not seen down has that
    this node has not applied (the heartbeat's pull, here from n2's map); not when nothing
    is doubted, and 503 when the pulls that reached their end make no majority."""
    n2, n3 = cluster.nodes["n2"], cluster.nodes["n3"]
    folder = FilePath("alice", "docs")
    pulls = []

    async def catch_up(peer):
        pulls.append(peer)
        if peer in cluster.unreachable:
            return False
        n3.apply_locations([rec for rec in cluster.nodes[peer].changes_since(0, 1000)["records"]])
        return True

    n3.catch_up = catch_up
    assert run(n3.list_newest(folder)) == 0 and pulls == []
    cut_between(cluster, "n1", "n3")
    fresh = FilePath("alice", "docs/fresh.txt")
    run(upload(cluster.nodes["n1"], fresh, "alice", b"fresh"))
    assert n2.locations.get(fresh) is not None and n3.locations.get(fresh) is None
    assert run(n3.list_newest(folder)) == 1 and pulls == ["n2"]
    assert [loc["path"] for loc in run(n3.list_files(folder))] == ["docs/fresh.txt"]

    n3.quorum = Quorum(n3.peers, 3, window=60.0)
    n3.quorum.heard("n2")
    cluster.unreachable.add("n2")
    with pytest.raises(ApiError) as e:
        run(n3.list_newest(folder))
    assert e.value.status == 503 and "the newest records under alice/docs" in e.value.message


def test_a_peer_back_from_down_gets_a_new_channel(cluster):
    """Its kept channel may be stuck in TCP's backoff from calls made during the cut: the
    next call opens a new one (a read that asks it no longer waits out its deadline)."""
    n3 = cluster.nodes["n3"]
    # As nodes/main.py wires it: every status change of a peer reaches the node.
    n3.peers.on_change = lambda name, old, new, detail="": n3.peer_changed(name, old, new)
    cut_between(cluster, "n1", "n3")
    assert n3.client.dropped == []  # seen down: nothing to drop yet
    cluster.cut.clear()
    n3.peers.record_ack("n1")  # answers again: verifying in n3's view
    assert n3.peers.status("n1") == "verifying" and n3.client.dropped == ["n1"]
    n3.peers.record_miss("n2")  # a miss alone changes no status: nothing dropped
    assert n3.client.dropped == ["n1"]


def test_a_client_gone_while_its_whole_body_is_committed_does_not_cut_the_write_in_two(
        cluster, monkeypatch):
    """Seen in a nemesis run: a lock round slowed by a partition, the upload then cut off as
    too slow while it committed, and the close gave the lock back between the rename and
    the record: a 500, new bytes at the name under the old record, and a good peer failed
    by the next challenge. Now the commit ends with its record, and the close comes after."""
    n1 = cluster.nodes["n1"]
    fp = FilePath("alice", "leaving.txt")
    cluster.place("alice", "leaving.txt", ["n1", "n2"], data=b"old")
    cuts = []

    async def scenario():
        up = n1.begin_upload(fp, "alice", 3, cut_off=lambda: cuts.append(fp))
        assert await up.start() is None
        up.write(b"new")
        sync = n1.store.folders.sync

        async def sync_as_the_client_leaves(folder):
            # The new bytes are at the name now, their record not yet out.
            up.progress.too_slow = lambda size: True  # nothing came for a while
            await up._renew_lock()
            up.close()  # and the client goes away
            return await sync(folder)

        monkeypatch.setattr(n1.store.folders, "sync", sync_as_the_client_leaves)
        try:
            return await up.finish()
        finally:
            up.close()
            for _ in range(10):
                await asyncio.sleep(0)  # the peers' unlocks

    stored = run(scenario())
    assert isinstance(stored, Stored) and stored.body["version"] == 2
    assert cuts == []  # no minimum rate once the body is whole
    for name in ("n1", "n2", "n3"):
        record = cluster.nodes[name].locations.get(fp)
        assert record.version == 2 and record.digest == stored.body["digest"], name
    for name in ("n1", "n2"):
        node = cluster.nodes[name]
        assert node.store.path_for(fp).read_bytes() == b"new"
        assert node.locations.copy_version(fp) == 2, name
    assert no_locks_anywhere(cluster, fp)


def test_a_resumable_upload_whose_client_goes_while_it_completes_keeps_its_lock(
        cluster, tmp_path, monkeypatch):
    """The same for the last request of a resumable upload: a close (or the minimum rate)
    while its copies went out gave the lock back before its record did."""
    n1 = cluster.nodes["n1"]
    n1.min_upload_rate = 1
    uploads = ResumableUploads(n1, PartialUploadStore(tmp_path / "n1-partial", 3600, 4,
                                                      trash=n1.store.trash))
    fp = cluster.place("alice", "resumed.txt", ["n1", "n2"], data=b"old")
    cuts, held = [], []

    async def scenario():
        upload, ticket = await uploads.create("alice", fp, 3, {})
        append = await uploads.begin(upload, ticket, None, lambda: cuts.append(fp))
        append.write(b"new")
        send_copy = n1.client.send_copy

        async def copy_as_the_client_leaves(*args, **kwargs):
            append.lock.progress.too_slow = lambda size: True
            await append.lock._renew()
            append.suspend("connection closed")  # what the handler does when it goes
            held.append(all(node.locks.held(fp) is not None
                            for node in cluster.nodes.values()))
            return await send_copy(*args, **kwargs)

        monkeypatch.setattr(n1.client, "send_copy", copy_as_the_client_leaves)
        result = await append.finish(complete=True)
        for _ in range(10):
            await asyncio.sleep(0)  # the peers' unlocks
        return result

    loc, confirmed, created = run(scenario())
    assert confirmed and not created and loc.version == 2
    assert held == [True] and cuts == []
    for name in ("n1", "n2", "n3"):
        assert cluster.nodes[name].locations.get(fp).version == 2, name
    assert cluster.nodes["n2"].store.path_for(fp).read_bytes() == b"new"
    assert no_locks_anywhere(cluster, fp)


def test_a_stop_waits_for_the_writes_being_committed(cluster, monkeypatch):
    """A stop closes every connection, but an upload whose body is whole goes on: the node
    waits for it (``finishing``) before it closes its peer client and its map."""
    n1 = cluster.nodes["n1"]
    fp = FilePath("alice", "stopping.txt")
    synced = asyncio.Event()
    sync = n1.store.folders.sync

    async def slow_sync(folder):
        await synced.wait()
        return await sync(folder)

    monkeypatch.setattr(n1.store.folders, "sync", slow_sync)

    async def scenario():
        up = n1.begin_upload(fp, "alice", 3)
        assert await up.start() is None
        up.write(b"new")
        finishing = asyncio.ensure_future(up.finish())
        for _ in range(100):
            if n1.finishing.count:
                break
            await asyncio.sleep(0)
        up.close()  # the stop closed its connection
        assert not await n1.finishing.ended(0.05)
        synced.set()
        assert await n1.finishing.ended(5.0)
        return await finishing

    stored = run(scenario())
    assert isinstance(stored, Stored) and n1.finishing.count == 0
    assert n1.locations.get(fp).version == 1 and no_locks_anywhere(cluster, fp)


def test_records_refused_for_another_writers_lock_leave_their_sender_doubted(cluster):
    """n3 missed n1's lock round and began a write of the same file of its own; n1's
    record, acknowledged by n1 and n2, came while n3 held that lock and was refused. n3
    used to answer the old version until its next pull; now it doubts n1 meanwhile, and a
    read asks the peers for the newest record."""
    n1, n3 = cluster.nodes["n1"], cluster.nodes["n3"]
    n3.doubt_window = 10.0
    fp = cluster.place("alice", "contested.txt", ["n1", "n2"], b"v1")
    n3.locks.acquire(fp, "alice", "n3", "its-own-write", 30.0)
    cluster.unreachable.add("n3")  # n1's round goes on without it
    run(upload(n1, fp, "alice", b"v2"))
    cluster.unreachable.clear()
    newer = n1.locations.get(fp)
    assert newer.version == 2 and n3.locations.get(fp).version == 1
    with pytest.raises(Forbidden):
        n3.receive_locations("n1", [newer.to_json()])
    assert n3.locations.get(fp).version == 1 and "n1" in n3.peers.doubted(n3.doubt_window)
    n3.locks.release(fp, "its-own-write")  # its own write gave up (423 from the others)
    run(n3.read_newest(fp))
    assert n3.locations.get(fp).version == 2
