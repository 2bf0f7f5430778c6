"""The location map on a real SQLite file: newer wins, tombstones, change feed, folders."""
import pytest

from securifile.common.paths import FilePath
from securifile.nodes.locationmap import Location, LocationMap, Replica

T0 = 1_700_000_000.0


def loc(path, version=1, origin="n1", modified=T0, deleted=False, replicas=(("n2", 1),),
        owner="alice", digest=None, size=10):
    return Location(owner, path, origin, digest or f"d{version}", "sha256", size, version,
                    [Replica(s, p) for s, p in replicas], modified, deleted)


@pytest.fixture
def lmap(tmp_path):
    m = LocationMap(tmp_path / "locations.db")
    yield m
    m.close()


def fp(path, owner="alice"):
    return FilePath(owner, path)


def paths(records):
    return [r.path for r in records]


def test_apply_then_get_returns_the_record(lmap):
    record = loc("docs/a.txt", replicas=[("n3", 2), ("n2", 1)])
    assert lmap.apply(record) is True
    got = lmap.get(fp("docs/a.txt"))
    assert got.to_json() == record.to_json()
    assert got.holders == ["n1", "n2", "n3"]  # origin, then replicas by priority
    assert lmap.get(fp("docs/b.txt")) is None
    assert lmap.get(fp("docs/a.txt", owner="bob")) is None


def test_newer_version_wins_and_older_is_ignored(lmap):
    assert lmap.apply(loc("f", version=2, digest="two")) is True
    seq = lmap.seq
    assert lmap.apply(loc("f", version=1, digest="one", modified=T0 + 100)) is False
    assert lmap.apply(loc("f", version=2, digest="two")) is False  # the same record again
    assert lmap.get(fp("f")).digest == "two"
    assert lmap.seq == seq  # ignored records take no sequence number
    assert lmap.apply(loc("f", version=3, digest="three")) is True
    assert lmap.get(fp("f")).digest == "three"
    assert lmap.seq == seq + 1


def test_same_version_breaks_ties_by_modification_time(lmap):
    assert lmap.apply(loc("f", version=1, modified=T0, digest="early"))
    assert lmap.apply(loc("f", version=1, modified=T0 + 1, digest="late"))
    assert not lmap.apply(loc("f", version=1, modified=T0 + 0.5, digest="between"))
    assert lmap.get(fp("f")).digest == "late"


def test_tombstones_hide_the_file_and_block_older_records(lmap):
    lmap.apply(loc("docs/f", version=1))
    lmap.apply(loc("docs/other", version=1))
    assert lmap.apply(loc("docs/f", version=2, deleted=True)) is True
    assert lmap.get(fp("docs/f")) is None
    tomb = lmap.get(fp("docs/f"), include_deleted=True)
    assert tomb.deleted and tomb.version == 2
    assert paths(lmap.list_prefix("alice")) == ["docs/other"]
    assert paths(lmap.list_prefix("alice", "docs")) == ["docs/other"]
    assert paths(lmap.held_by("n1")) == ["docs/other"]
    # A stale record arriving late cannot bring the file back.
    assert lmap.apply(loc("docs/f", version=1, modified=T0 + 1000)) is False
    assert lmap.apply(loc("docs/f", version=2)) is False  # same version: the tombstone wins
    assert lmap.get(fp("docs/f")) is None
    # A new upload above the tombstone does.
    assert lmap.apply(loc("docs/f", version=3)) is True
    assert lmap.get(fp("docs/f")).version == 3


def test_tombstones_do_not_count_as_folders_or_ancestors(lmap):
    lmap.apply(loc("dir/inner"))
    lmap.apply(loc("dir/inner", version=2, deleted=True))
    lmap.apply(loc("file"))
    lmap.apply(loc("file", version=2, deleted=True))
    assert lmap.has_folder(fp("dir")) is False
    assert lmap.file_ancestor(fp("file/below")) is None


def test_changes_since_is_in_sequence_order_and_pages(lmap):
    for name in ("a", "b", "c", "d", "e"):
        lmap.apply(loc(name))
    lmap.apply(loc("b", version=2))  # b moves to the end of the feed
    lmap.apply(loc("a", version=2, deleted=True))  # tombstones are changes too
    feed = lmap.changes_since(0)
    assert [r["path"] for r in feed] == ["c", "d", "e", "b", "a"]
    assert [r["seq"] for r in feed] == [3, 4, 5, 6, 7]
    assert feed[-1]["deleted"] is True
    assert lmap.seq == 7

    pages, since = [], 0
    while True:
        page = lmap.changes_since(since, limit=2)
        if not page:
            break
        pages.append([r["path"] for r in page])
        since = page[-1]["seq"]
    assert pages == [["c", "d"], ["e", "b"], ["a"]]
    assert lmap.changes_since(7) == []
    assert [r["path"] for r in lmap.changes_since(5)] == ["b", "a"]


def test_a_record_the_caller_was_pushed_comes_as_its_sequence_number_alone(lmap, tmp_path):
    """``known``: {coordinator: (lo, hi)}; a record of that coordinator numbered above lo
    and at most hi is the caller's already. Pages keep their length (the cursor moves past
    it); a number of 0 (a record from before the numbers) is never taken as known."""
    def numbered(path, coordinator, cseq):
        record = loc(path, origin=coordinator)
        record.cseq = cseq
        return record

    for record in (numbered("a", "n1", 11), numbered("b", "n1", 12), numbered("c", "n2", 12),
                   numbered("d", "n1", 10), numbered("e", "n1", 13), numbered("f", "n1", 0)):
        lmap.apply(record)
    known = {"n1": (10, 12), "n3": (0, 99)}
    feed = lmap.changes_since(0, known=known)
    assert feed[0] == {"seq": 1} and feed[1] == {"seq": 2}  # n1's 11 and 12
    assert [r.get("path") for r in feed] == [None, None, "c", "d", "e", "f"]
    assert [r["seq"] for r in feed] == [1, 2, 3, 4, 5, 6]
    assert [r["cseq"] for r in feed[2:]] == [12, 10, 13, 0]
    assert [len(lmap.changes_since(s, limit=2, known=known)) for s in (0, 2, 4)] == [2, 2, 2]
    # Asked without ``known`` (a node of an earlier version), records are as it reads them.
    assert all("cseq" not in r for r in lmap.changes_since(0))
    # The number travels with the record and is kept where it is applied.
    other = LocationMap(tmp_path / "other.db")
    try:
        for record in feed[2:]:
            other.apply(Location.from_json(record))
        assert [r.get("path") for r in other.changes_since(0, known={"n2": (11, 12)})] == [
            None, "d", "e", "f"]
    finally:
        other.close()


def test_change_feed_records_apply_on_another_map(lmap, tmp_path):
    lmap.apply(loc("x", replicas=[("n2", 1), ("n3", 2)]))
    lmap.apply(loc("y", version=4, deleted=True))
    other = LocationMap(tmp_path / "other.db")
    try:
        for record in lmap.changes_since(0):
            assert other.apply(Location.from_json(record)) is True
        assert other.get(fp("x")).to_json() == lmap.get(fp("x")).to_json()
        assert other.get(fp("y"), include_deleted=True).deleted
        assert other.seq == 2
    finally:
        other.close()


def test_sequence_and_records_persist_across_reopen(tmp_path):
    db = tmp_path / "locations.db"
    m = LocationMap(db)
    for name in ("a", "b", "c"):
        m.apply(loc(name))
    m.apply(loc("a", version=2))
    assert m.seq == 4
    m.close()
    m = LocationMap(db)
    try:
        assert m.seq == 4
        assert m.get(fp("a")).version == 2
        assert m.apply(loc("d")) is True
        assert m.seq == 5
        assert [r["seq"] for r in m.changes_since(0)] == [2, 3, 4, 5]
    finally:
        m.close()


def test_list_prefix_respects_folder_boundaries(lmap):
    for path in ("docs/a", "docs/sub/b", "docs2/x", "docs.txt", "docsa", "docs-old/y",
                 "doc/z", "other/y", "docs/\u00e9t\u00e9"):
        lmap.apply(loc(path))
    lmap.apply(loc("docs/not-mine", owner="bob"))
    assert paths(lmap.list_prefix("alice", "docs")) == ["docs/a", "docs/sub/b", "docs/\u00e9t\u00e9"]
    assert paths(lmap.list_prefix("alice", "docs/sub")) == ["docs/sub/b"]
    assert paths(lmap.list_prefix("alice", "doc")) == ["doc/z"]
    assert paths(lmap.list_prefix("alice", "nothing")) == []
    assert paths(lmap.list_prefix("alice")) == sorted(
        ["docs/a", "docs/sub/b", "docs2/x", "docs.txt", "docsa", "docs-old/y", "doc/z", "other/y",
         "docs/\u00e9t\u00e9"])
    assert paths(lmap.list_prefix("bob")) == ["docs/not-mine"]
    assert lmap.list_prefix("carol") == []


def test_has_folder_and_file_ancestor(lmap):
    lmap.apply(loc("docs/a"))
    lmap.apply(loc("docs2/x"))
    lmap.apply(loc("top"))
    assert lmap.has_folder(fp("docs")) is True
    assert lmap.has_folder(fp("docs2")) is True
    assert lmap.has_folder(fp("doc")) is False
    assert lmap.has_folder(fp("docs/a")) is False  # a file is not a folder
    assert lmap.has_folder(fp("docs", owner="bob")) is False
    assert lmap.file_ancestor(fp("top/below/deeper")) == fp("top")
    assert lmap.file_ancestor(fp("docs/a/b")) == fp("docs/a")
    assert lmap.file_ancestor(fp("docs/new")) is None
    assert lmap.file_ancestor(fp("top")) is None  # a file is not its own ancestor
    assert lmap.file_ancestor(fp("top/x", owner="bob")) is None


def test_copies_table_records_the_version_of_each_local_copy(lmap):
    f = fp("docs/a")
    assert lmap.copy_version(f) is None
    lmap.record_copy(f, 1, "d1", 10)
    assert lmap.copy_version(f) == 1
    lmap.record_copy(f, 3, "d3", 12)
    assert lmap.copy_version(f) == 3
    assert lmap.copy_version(fp("docs/a", owner="bob")) is None
    lmap.forget_copy(f)
    assert lmap.copy_version(f) is None
    lmap.forget_copy(f)  # forgetting twice is harmless
    assert lmap.seq == 0  # copies are local facts, not changes to the shared map


def test_held_by_names_origins_and_replicas(lmap):
    lmap.apply(loc("a", origin="n1", replicas=[("n2", 1)]))
    lmap.apply(loc("b", origin="n2", replicas=[("n3", 1), ("n1", 2)]))
    lmap.apply(loc("c", origin="n3", replicas=[]))
    lmap.apply(loc("d", origin="n1", replicas=[], owner="bob"))
    assert sorted(paths(lmap.held_by("n1"))) == ["a", "b", "d"]
    assert sorted(paths(lmap.held_by("n2"))) == ["a", "b"]
    assert sorted(paths(lmap.held_by("n3"))) == ["b", "c"]
    assert lmap.held_by("n4") == []


def test_location_json_round_trip_ignores_the_feed_sequence():
    record = loc("x", replicas=[("n2", 1), ("n3", 2)])
    d = record.to_json()
    d["seq"] = 42
    back = Location.from_json(d)
    assert back == record
    assert back.file_path == fp("x")


# -- the holders index and the order columns (what challenges of many files rely on) -------

def test_holders_index_follows_new_replicas_and_tombstones(lmap):
    lmap.apply(loc("a", origin="n1", replicas=[("n2", 1)]))
    lmap.apply(loc("a", version=2, origin="n1", replicas=[("n3", 1)]))  # moved from n2 to n3
    assert paths(lmap.held_by("n2")) == []
    assert paths(lmap.held_by("n3")) == ["a"]
    assert paths(lmap.shared_with("n1", "n3")) == ["a"]
    assert lmap.shared_with("n2", "n3") == []
    assert lmap.apply(loc("a", version=1, replicas=[("n2", 1)], modified=T0 + 9)) is False
    assert paths(lmap.held_by("n2")) == []  # an ignored older record leaves the index alone
    lmap.apply(loc("a", version=3, origin="n1", replicas=[("n3", 1)], deleted=True))
    assert lmap.held_by("n1") == [] and lmap.held_by("n3") == []
    assert lmap.shared_with("n1", "n3") == []


def test_checkable_needs_my_own_current_copy_and_me_not_stale(lmap):
    for name in ("same", "mine-older", "i-am-stale", "not-shared", "no-copy"):
        replicas = [("n3", 1)] if name == "not-shared" else [("n2", 1)]
        stale = ["n1"] if name == "i-am-stale" else []
        lmap.apply(Location("alice", name, "n1", "d", "sha256", 10, 2,
                            [Replica(s, p) for s, p in replicas], T0, stale=stale))
        if name != "no-copy":
            lmap.record_copy(fp(name), 1 if name == "mine-older" else 2, "d", 10)
    assert paths(lmap.checkable("n1", "n2")) == ["same"]
    assert sorted(paths(lmap.shared_with("n1", "n2"))) == ["i-am-stale", "mine-older", "no-copy",
                                                           "same"]
    # Brought up to date: no longer stale, so checkable again.
    fresh = lmap.get(fp("i-am-stale"))
    fresh.stale, fresh.modified = [], T0 + 1
    lmap.apply(fresh)
    assert paths(lmap.checkable("n1", "n2")) == ["i-am-stale", "same"]


def test_a_map_written_before_the_holders_index_is_upgraded_on_open(tmp_path):
    import json
    import sqlite3
    db = tmp_path / "old.sqlite3"
    old = sqlite3.connect(db, isolation_level=None)
    old.executescript("""
        CREATE TABLE locations (owner TEXT NOT NULL, path TEXT NOT NULL, record TEXT NOT NULL,
            deleted INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (owner, path));
        CREATE TABLE copies (owner TEXT NOT NULL, path TEXT NOT NULL, version INTEGER NOT NULL,
            digest TEXT NOT NULL, size INTEGER NOT NULL, PRIMARY KEY (owner, path));
    """)
    records = [loc("a", version=2, modified=T0 + 0.1), loc("b", origin="n3", replicas=[("n1", 1)]),
               loc("gone", version=3, deleted=True)]
    for seq, r in enumerate(records, start=1):
        old.execute("INSERT INTO locations VALUES (?, ?, ?, ?, ?)",
                    (r.owner, r.path, json.dumps(r.to_json()), int(r.deleted), seq))
    old.execute("INSERT INTO copies VALUES ('alice', 'a', 2, 'd2', 10)")
    old.close()
    m = LocationMap(db)
    try:
        assert m.seq == 3
        assert sorted(paths(m.held_by("n1"))) == ["a", "b"]
        assert m.checkable("n1", "n2") == [("alice", "a", 2, "d2", "sha256", 10, False)]
        assert m.apply(records[0]) is False  # known: judged by the upgraded columns
        assert m.apply(loc("a", version=2, modified=T0 + 0.2)) is True
        assert m.apply(loc("gone", version=3)) is False  # the tombstone still wins
        # The old digest column was the cache; the committed digest comes from the record.
        assert m.copy_records([fp("a"), fp("b")]) == {("alice", "a"): (2, records[0].digest,
                                                                       "d2", "")}
    finally:
        m.close()
    again = LocationMap(db)  # the upgrade runs once
    try:
        assert sorted(paths(again.held_by("n1"))) == ["a", "b"]
    finally:
        again.close()


def test_copy_records_in_bulk_and_digest_updates_in_one_go(lmap):
    names = [f"f{i:04d}" for i in range(1200)]  # more than one IN (...) query's worth
    for i, name in enumerate(names):
        lmap.record_copy(fp(name), 1, f"d{i}", 10, "k")
    lmap.record_copy(fp("x", owner="bob"), 4, "db", 10, "kb")
    wanted = [fp(n) for n in names] + [fp("x", owner="bob"), fp("missing")]
    got = lmap.copy_records(wanted)
    assert len(got) == 1201 and got[("alice", "f0007")] == (1, "d7", "d7", "k")
    assert got[("bob", "x")] == (4, "db", "db", "kb") and ("alice", "missing") not in got
    lmap.update_disk_digests([(fp("f0001"), "new", "k2"), (fp("x", owner="bob"), "nb", "kb2")])
    assert lmap.copy_record(fp("f0001")) == (1, "d1", "new", "k2")  # committed digest kept
    assert lmap.copy_record(fp("x", owner="bob")) == (4, "db", "nb", "kb2")


def test_a_transaction_is_all_or_nothing(lmap):
    with pytest.raises(RuntimeError):
        with lmap.transaction():
            lmap.apply(loc("a"))
            lmap.record_copy(fp("a"), 1, "d", 10)
            raise RuntimeError("half way")
    assert lmap.get(fp("a")) is None and lmap.copy_version(fp("a")) is None
    assert lmap.held_by("n1") == []
    with lmap.transaction():
        lmap.apply(loc("a"))
        lmap.apply(loc("b"))
    assert paths(lmap.held_by("n1")) == ["a", "b"]


def test_to_json_is_what_asdict_gives():
    from dataclasses import asdict
    record = Location("alice", "x", "n1", "d", "sha256", 10, 3, [Replica("n2", 1)], T0,
                      stale=["n2"])
    expected = asdict(record)
    del expected["cseq"]  # a column of the map, never in the JSON an earlier version reads
    assert record.to_json() == expected
    assert list(record.to_json()) == list(expected)  # the same key order: the same JSON text


def test_pull_cursors_survive_a_reopen(tmp_path):
    db = tmp_path / "locations.db"
    m = LocationMap(db)
    assert m.pull_cursors() == {}
    m.save_pull_cursor("n2", 40)
    m.save_pull_cursor("n3", 7)
    m.save_pull_cursor("n2", 41)
    m.close()
    m = LocationMap(db)
    try:
        assert m.pull_cursors() == {"n2": 41, "n3": 7}
    finally:
        m.close()


def test_a_map_whose_copies_kept_re_hashes_in_the_digest_column_is_split_on_open(tmp_path):
    """Before the cache had its own column, a re-hash overwrote ``digest``: on open that value
    becomes the cache, and the committed digest comes back from the record where the copy is
    of the record's version."""
    import sqlite3
    db = tmp_path / "old.sqlite3"
    m = LocationMap(db)
    m.apply(loc("rotten", version=2, digest="committed"))
    m.apply(loc("older", version=3, digest="v3"))
    m.close()
    old = sqlite3.connect(db, isolation_level=None)
    old.executescript("""
        DROP TABLE copies;
        CREATE TABLE copies (owner TEXT NOT NULL, path TEXT NOT NULL, version INTEGER NOT NULL,
            digest TEXT NOT NULL, size INTEGER NOT NULL, stat_key TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (owner, path));
        INSERT INTO copies VALUES ('alice', 'rotten', 2, 'rehash-of-rot', 10, 'k1');
        INSERT INTO copies VALUES ('alice', 'older', 2, 'v2', 10, 'k2');
    """)
    old.close()
    m = LocationMap(db)
    try:
        assert m.copy_record(fp("rotten")) == (2, "committed", "rehash-of-rot", "k1")
        assert m.copy_record(fp("older")) == (2, "v2", "v2", "k2")  # no record of its version
        m.record_copy(fp("new"), 1, "d", 10, "k")
        assert m.copy_record(fp("new")) == (1, "d", "d", "k")
    finally:
        m.close()
