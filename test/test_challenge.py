"""Digest challenges on real disk stores and location maps: batch answers, paths, ranges."""
import hashlib
import os
import random

import pytest

from securifile.common.errors import ApiError
from securifile.common.paths import FilePath
from securifile.nodes.challenge import (CORRUPT, MISSING, OK, REPLAYED, STALE, ChallengeResult,
                                        DiskPaths, answer_challenge, check_answer, choose_ranges,
                                        new_challenge, stat_key)
from securifile.nodes.diskfile import DiskStore
from securifile.nodes.locationmap import Location, LocationMap


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


def run(mine, theirs, locs, deep=False, rng=None):
    challenge = new_challenge("n1", locs, rng or random.Random(3))
    answer = answer_challenge(theirs.store, theirs.locations, challenge, deep)
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
    assert result.outcomes == {("alice", "ok"): OK, ("alice", "gone"): MISSING,
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
    for rel in ("a.txt", "docs/a.txt", "docs/sub/b", "docs/sub/b", "x/./y", "x/../y", "x//y"):
        fp = FilePath("alice", rel)
        assert os.path.normpath(paths(fp)) == os.path.normpath(store.path_for(fp)), rel
    for rel in ("../bob/secret", "docs/../../bob/secret", "docs/..", "docs/../.."):
        fp = FilePath("alice", rel)
        try:
            expected = store.path_for(fp)
        except ApiError:
            with pytest.raises(ApiError):
                paths(fp)
        else:
            assert os.path.normpath(paths(fp)) == os.path.normpath(expected), rel


