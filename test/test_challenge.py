"""Digest challenges on real disk stores and location maps: batch answers, paths, ranges."""
import hashlib
import os
import random

import pytest

from securifile.common.errors import ApiError
from securifile.common.paths import FilePath
from securifile.nodes.challenge import (BATCH, CHANGING, CORRUPT, MAX_RANGE_LENGTH, MAX_RANGES, MISSING,
                                        NEWER, OK, RANGE_BYTES, REFUSED, REPLAYED, STALE,
                                        ChallengeRefused, ChallengeResult, DiskPaths,
                                        answer_challenge, check_answer, choose_ranges,
                                        new_challenge, range_count, stat_key)
from securifile.nodes.diskfile import DiskStore
from securifile.nodes.locationmap import FileVersion, Location, LocationMap


def sha(data):
    return hashlib.sha256(data).hexdigest()


class Node:
    """One side of a challenge: a disk store and a location map in a temp folder."""

    def __init__(self, root):
        self.store = DiskStore(root)
        self.locations = LocationMap(root / "locations.sqlite3")

    def put(self, rel, data, version=1):
        fp = FilePath("alice", rel)
        path = self.store.path_for(fp)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.locations.record_copy(fp, version, sha(data), len(data), stat_key(path))
        loc = Location("alice", rel, "n1", sha(data), "sha256", len(data), version)
        self.locations.apply(loc)  # the record names the challenger (n1) as a holder
        return loc


@pytest.fixture
def pair(tmp_path):
    mine, theirs = Node(tmp_path / "mine"), Node(tmp_path / "theirs")
    yield mine, theirs
    mine.locations.close()
    theirs.locations.close()


def run(mine, theirs, locs, deep=False, rng=None, busy=None):
    challenge = new_challenge("n1", locs, rng or random.Random(3))
    answer = answer_challenge(theirs.store, theirs.locations, challenge, deep, busy=busy)
    by_key = {(loc.owner, loc.path): loc for loc in locs}
    return check_answer(mine.store, by_key, challenge, answer, ChallengeResult()), answer


def test_a_batch_of_many_files_in_many_folders_passes(pair):
    mine, theirs = pair
    locs = []
    for i in range(700):  # more files than one copies query takes
        data = os.urandom(100 + i * 7)
        rel = f"d{i % 7}/sub/{i:04d}.bin" if i % 3 else f"top{i}.bin"
        locs.append(mine.put(rel, data))
        theirs.put(rel, data)
    result, _answer = run(mine, theirs, locs)
    assert result.passed and set(result.outcomes.values()) == {OK} and len(result.outcomes) == 700


def test_outcomes_missing_stale_corrupt_and_cache_fooled(pair):
    mine, theirs = pair
    data = os.urandom(5000)
    locs = [mine.put(name, data, version=2) for name in ("ok", "gone", "old", "bad", "fooled",
                                                           "folder")]
    theirs.put("ok", data, version=2)
    theirs.put("old", data, version=1)
    theirs.put("bad", os.urandom(5000), version=2)
    theirs.put("fooled", data, version=2)
    fooled = theirs.store.path_for(FilePath("alice", "fooled"))
    fooled.write_bytes(os.urandom(5000))
    theirs.locations.update_disk_digest(FilePath("alice", "fooled"), sha(data), stat_key(fooled))
    theirs.locations.record_copy(FilePath("alice", "folder"), 2, sha(data), 5000)
    theirs.locations.apply(locs[-1])
    theirs.store.path_for(FilePath("alice", "folder")).mkdir()
    result, _answer = run(mine, theirs, locs)
    # "gone" was never recorded there: stale (sent again), where a recorded copy that is not
    # a file any more ("folder") is missing.
    assert result.outcomes == {("alice", "ok"): OK, ("alice", "gone"): STALE,
                               ("alice", "old"): STALE, ("alice", "bad"): CORRUPT,
                               ("alice", "fooled"): REPLAYED, ("alice", "folder"): MISSING}
    # --deep re-hashes: the fooled cache no longer hides the change, and is corrected; the
    # committed digest (what the bytes should be) stays as it was.
    result, _answer = run(mine, theirs, locs, deep=True)
    assert result.outcomes[("alice", "fooled")] == CORRUPT
    record = theirs.locations.copy_record(FilePath("alice", "fooled"))
    assert record.disk_digest == sha(fooled.read_bytes()) and record.digest == sha(data)


def test_a_digest_out_of_date_is_recomputed_and_stored_once(pair):
    mine, theirs = pair
    data = os.urandom(3000)
    locs = [mine.put("f", data)]
    theirs.put("f", data)
    fp = FilePath("alice", "f")
    theirs.locations.update_disk_digest(fp, sha(data), "stat key of another time")
    result, _answer = run(mine, theirs, locs)
    assert result.passed
    assert theirs.locations.copy_record(fp).stat_key == stat_key(theirs.store.path_for(fp))


def test_disk_paths_are_path_for_for_every_name(tmp_path):
    store = DiskStore(tmp_path)
    paths = DiskPaths(store)
    for rel in ("a.txt", "docs/a.txt", "docs/sub/b", "docs/sub/b"):
        fp = FilePath("alice", rel)
        assert os.path.normpath(paths(fp)) == os.path.normpath(store.path_for(fp)), rel
    for rel in ("../bob/secret", "docs/../../bob/secret", "docs/..", "docs/../..", "x/./y",
                "x/../y", "x//y"):
        fp = FilePath("alice", rel)
        try:
            expected = store.path_for(fp)
        except ApiError:
            with pytest.raises(ApiError):
                paths(fp)
        else:
            assert os.path.normpath(paths(fp)) == os.path.normpath(expected), rel


def test_the_sample_grows_with_the_file_and_covers_small_files_whole():
    rng = random.SystemRandom()
    assert choose_ranges(100, rng) == [[0, 100]]
    assert choose_ranges(MAX_RANGE_LENGTH, rng) == [[0, MAX_RANGE_LENGTH]]
    for size, count in ((MAX_RANGE_LENGTH + 1, 2), (1 << 20, 2), (5 << 20, 5),
                        ((100 << 20) + 1, 101), (1 << 40, MAX_RANGES)):
        for _ in range(20):
            ranges = choose_ranges(size, rng)
            assert len(ranges) == count == range_count(size) and ranges == sorted(ranges)
            assert all(0 <= off and off + length <= size and length == RANGE_BYTES
                       for off, length in ranges)
    offsets = {choose_ranges(1 << 20, rng)[0][0] for _ in range(50)}
    assert len(offsets) > 40  # they move


def test_a_claimed_newer_version_or_a_refusal_is_never_a_pass(pair):
    mine, theirs = pair
    data = os.urandom(5000)
    locs = [mine.put(name, data, version=2) for name in ("ok", "ahead", "foreign")]
    theirs.put("ok", data, version=2)
    theirs.put("ahead", data, version=3)
    fp = FilePath("alice", "foreign")
    path = theirs.store.path_for(fp)
    path.write_bytes(data)
    theirs.locations.record_copy(fp, 2, sha(data), len(data), stat_key(path))
    theirs.locations.apply(Location("alice", "foreign", "n7", sha(data), "sha256", 5000, 2))
    result, answer = run(mine, theirs, locs)
    assert result.outcomes == {("alice", "ok"): OK, ("alice", "ahead"): NEWER,
                               ("alice", "foreign"): REFUSED}
    assert not result.passed and not result.failed
    assert sorted(result.inconclusive) == [("alice", "ahead"), ("alice", "foreign")]
    refused = next(a for a in answer["files"] if a["path"] == "foreign")
    assert refused["refused"] and "mac" not in refused and "digest" not in refused


def test_ranges_beyond_the_bounds_are_refused_and_past_the_end_read_nothing(pair):
    mine, theirs = pair
    data = os.urandom(20_000)
    loc = mine.put("f", data)
    theirs.put("f", data)
    item = {"owner": "alice", "path": "f", "version": 1, "algorithm": "sha256"}
    nonce = "00" * 16

    def answer(ranges):
        challenge = {"challenger": "n1", "nonce": nonce, "files": [dict(item, ranges=ranges)]}
        return answer_challenge(theirs.store, theirs.locations, challenge)["files"][0]

    assert answer([[0, RANGE_BYTES]])["mac"]
    for bad in ([[0, MAX_RANGE_LENGTH + 1]], [[-1, 10]], [[0, RANGE_BYTES]] * (MAX_RANGES + 1),
                [], [[0]], [["0", 10]], "everything", [[0, True]]):
        got = answer(bad)
        assert got.get("refused") and "mac" not in got, bad
    past_end = answer([[len(data) - 10, 100]])  # inside the bounds, past this copy's end
    assert past_end["digest"] == sha(data) and past_end["mac"] is None
    challenge = new_challenge("n1", [loc], random.SystemRandom())
    challenge["files"][0]["ranges"] = [[len(data) - 10, 100]]
    got = check_answer(mine.store, {("alice", "f"): loc}, challenge,
                       {"files": [past_end]}, ChallengeResult())
    assert got.outcomes == {("alice", "f"): REPLAYED}  # no proof: never a pass


def test_a_challenge_out_of_bounds_as_a_whole_is_refused(pair):
    _mine, theirs = pair
    with pytest.raises(ChallengeRefused):
        answer_challenge(theirs.store, theirs.locations, {
            "nonce": "00", "files": [{"owner": "alice", "path": f"{i}", "ranges": [[0, 1]]}
                                     for i in range(BATCH + 1)]})
    with pytest.raises(ChallengeRefused):
        answer_challenge(theirs.store, theirs.locations, {"nonce": "not hex", "files": []})
    with pytest.raises(ChallengeRefused):
        answer_challenge(theirs.store, theirs.locations, {"nonce": "00", "files": ["x"]})


def test_only_the_authenticated_challenger_counts_as_a_holder(pair):
    """The name in the body is what a no-TLS peer says; the handler passes the name from
    the certificate, which wins."""
    mine, theirs = pair
    data = os.urandom(100)
    loc = mine.put("f", data)
    theirs.put("f", data)
    challenge = new_challenge("n1", [loc], random.SystemRandom())
    assert answer_challenge(theirs.store, theirs.locations, challenge)["files"][0]["mac"]
    got = answer_challenge(theirs.store, theirs.locations, challenge, challenger="n9")
    assert got["files"][0]["refused"]


def test_a_copy_the_record_names_stale_and_missing_is_stale_not_failed(pair):
    mine, theirs = pair
    data = os.urandom(100)
    loc = mine.put("lost", data)
    version = FileVersion("alice", "lost", 1, sha(data), "sha256", 100, other_stale=True)
    challenge = new_challenge("n1", [version], random.SystemRandom())
    answer = answer_challenge(theirs.store, theirs.locations, challenge)
    result = check_answer(mine.store, {("alice", "lost"): version}, challenge, answer,
                          ChallengeResult())
    assert result.outcomes == {("alice", "lost"): STALE}
    # Never recorded there: nothing claimed, stale too (its record went out with copies
    # that did not all arrive); no answer at all for the file proves nothing but a gap.
    plain = check_answer(mine.store, {("alice", "lost"): loc}, challenge, answer,
                         ChallengeResult())
    assert plain.outcomes == {("alice", "lost"): STALE}
    silent = check_answer(mine.store, {("alice", "lost"): loc}, challenge, {"files": []},
                          ChallengeResult())
    assert silent.outcomes == {("alice", "lost"): MISSING}


def test_a_copy_replaced_while_it_is_answered_for_is_changing_not_corrupt(pair):
    """A write's copy lands between the answer reading the copy's version and its bytes: the
    old version with the new bytes would read as corrupt and fail a sound server."""
    mine, theirs = pair
    old, new = os.urandom(3000), os.urandom(3000)
    loc = mine.put("f", old)
    theirs.put("f", old)
    batch_read = theirs.locations.copy_records

    def write_lands_after_the_read(fps):
        rows = batch_read(fps)
        theirs.put("f", new, version=2)  # the copy renamed into place, then recorded
        return rows
    theirs.locations.copy_records = write_lands_after_the_read
    result, answer = run(mine, theirs, [loc])
    assert answer["files"][0].get("changing") and "digest" not in answer["files"][0]
    assert result.outcomes == {("alice", "f"): CHANGING}
    assert not result.failed and result.inconclusive == [("alice", "f")]


def test_a_copy_unlike_its_record_while_a_change_is_under_way_is_changing(pair):
    """Bytes renamed into place before the copy is recorded, or a copy dropped before its row
    goes: with the file's lock held, changing; with none, what it is (corrupt, missing)."""
    mine, theirs = pair
    data = os.urandom(3000)
    locs = [mine.put("replaced", data), mine.put("dropped", data)]
    for name in ("replaced", "dropped"):
        theirs.put(name, data)
    theirs.store.path_for(FilePath("alice", "replaced")).write_bytes(os.urandom(3000))
    theirs.store.path_for(FilePath("alice", "dropped")).unlink()
    under_way, _ = run(mine, theirs, locs, busy=lambda fp: True)
    assert under_way.outcomes == {("alice", "replaced"): CHANGING, ("alice", "dropped"): CHANGING}
    settled, _ = run(mine, theirs, locs, busy=lambda fp: False)
    assert settled.outcomes == {("alice", "replaced"): CORRUPT, ("alice", "dropped"): MISSING}


def test_another_file_renamed_in_without_its_record_is_stale_not_corrupt(pair):
    """A commit renames its new bytes in and then records the copy: a node killed or stopped
    in between restarts with another inode at the name and the old record. Those bytes were
    never confirmed to anyone: not held, brought up to date (seen in a nemesis run, where a
    restarted node was failed "1 corrupt"). Bytes changed in place stay corrupt."""
    mine, theirs = pair
    old = os.urandom(3000)
    locs = [mine.put("renamed", old), mine.put("in-place", old)]
    theirs.put("renamed", old)
    theirs.put("in-place", old)
    renamed = theirs.store.path_for(FilePath("alice", "renamed"))
    newer = renamed.with_name("renamed.tmp")
    newer.write_bytes(os.urandom(3000))
    os.replace(newer, renamed)  # a commit's rename, its record never written
    theirs.store.path_for(FilePath("alice", "in-place")).write_bytes(os.urandom(3000))
    for _ in range(2):  # and nothing about the unrecorded bytes is kept as the copy's
        result, answer = run(mine, theirs, locs)
        assert result.outcomes == {("alice", "renamed"): STALE, ("alice", "in-place"): CORRUPT}
    assert theirs.locations.copy_record(FilePath("alice", "renamed")).disk_digest == sha(old)
