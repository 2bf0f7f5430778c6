"""A digest challenge answered while a copy lands or leaves (test/memory_cluster.py nodes).

A copy can reach a holder whose lock the write never took (the lock needs only a majority,
and repairs take none), and a challenge is answered in a thread beside the event loop. Between
the rename of a copy's new bytes and the record of that copy, or between a copy's removal
and the record forgotten, an answer would pair the record's version with other bytes (or
none), and the challenger would fail a sound node: seen in a nemesis run, where node2 was
judged "1 corrupt" with nothing corrupted. Such files are answered as changing, judged again
once the change is done.
"""
import asyncio
import hashlib
import random
from functools import partial

import pytest

from securifile.common.durable import FolderSyncer
from securifile.common.paths import FilePath
from securifile.nodes import peer_ops
from securifile.nodes.challenge import CHANGING, REPLAYED, ChallengeResult, answer_challenge, \
    check_answer, new_challenge
from securifile.nodes.quarantine import write_under_way
from securifile.nodes.verification import Verifier

from .memory_cluster import MemoryCluster
from .test_diskfile import HeldSync, until

OLD, NEW = b"version one of the file", b"version two, a little longer"


def sha(data):
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def cluster(tmp_path):
    c = MemoryCluster(tmp_path)
    yield c
    c.close()


def challenge_of(cluster, fp):
    """n1's challenge to n2 about ``fp``, as n1's records stand."""
    return new_challenge("n1", [cluster.nodes["n1"].locations.get(fp)], random.Random(5))


def verdict(cluster, challenge, answer):
    """n1's outcome for the one file of ``challenge``."""
    n1 = cluster.nodes["n1"]
    loc = n1.locations.get(challenge_fp(challenge))
    result = check_answer(n1.store, {(loc.owner, loc.path): loc}, challenge, answer,
                          ChallengeResult())
    return next(iter(result.outcomes.values()))


def challenge_fp(challenge):
    item = challenge["files"][0]
    return FilePath(item["owner"], item["path"])


def copy_body(data, version=2):
    return {"owner": "alice", "path": "landing.bin", "version": version,
            "algorithm": "sha256", "digest": sha(data)}


def test_a_copy_renamed_in_while_its_folder_syncs_is_answered_as_changing(cluster):
    """The copy arrives unlocked; the answer is made while the folder's fsync is held, the
    new bytes at the name and the record still naming version 1."""
    fp = cluster.place("alice", "landing.bin", ["n1", "n2"], data=OLD)
    n2 = cluster.nodes["n2"]
    held = HeldSync()
    n2.store.folders = FolderSyncer(held)
    challenge = challenge_of(cluster, fp)

    async def scenario():
        landing = asyncio.ensure_future(peer_ops.store_copy(n2, "n1", copy_body(NEW), NEW))
        await until(lambda: held.calls, "the copy's rename and folder fsync")
        assert n2.locks.held(fp) is None  # nothing else tells the answer a write is under way
        answer = await n2.answer_challenge(challenge, False, "n1")
        held.release.set()
        await asyncio.wait_for(landing, 30)
        return answer

    answer = asyncio.run(scenario())
    assert answer["files"][0].get("changing"), answer
    assert verdict(cluster, challenge, answer) == CHANGING
    assert n2.locations.copy_version(fp) == 2  # the copy itself landed


def test_a_copy_is_recorded_before_the_mark_of_its_change_is_lifted(cluster):
    """After the folder's fsync the record is written: an answer made just before it (a thread
    may run at any point between the two) must still say changing."""
    fp = cluster.place("alice", "landing.bin", ["n1", "n2"], data=OLD)
    n2 = cluster.nodes["n2"]
    challenge = challenge_of(cluster, fp)
    answers = []
    accept = n2.accept_copy

    def answered_then_accepted(*args, **kwargs):
        answers.append(answer_challenge(n2.store, n2.locations, challenge, False, "n1",
                                        busy=partial(write_under_way, n2)))
        return accept(*args, **kwargs)

    n2.accept_copy = answered_then_accepted
    asyncio.run(peer_ops.store_copy(n2, "n1", copy_body(NEW), NEW))
    assert answers and answers[0]["files"][0].get("changing"), answers
    after = answer_challenge(n2.store, n2.locations, challenge, False, "n1",
                             busy=partial(write_under_way, n2))
    assert after["files"][0]["version"] == 2 and after["files"][0]["digest"] == sha(NEW)


def test_a_copy_dropped_between_its_record_and_its_file_is_not_missing(cluster):
    """A tombstone forgets the copy's record, then removes the file: an answer in between
    must say the copy is changing, neither missing (a failed node) nor not held."""
    fp = cluster.place("alice", "landing.bin", ["n1", "n2"], data=OLD)
    n2 = cluster.nodes["n2"]
    challenge = challenge_of(cluster, fp)
    answers = []
    delete = n2.store.delete

    def answered_then_deleted(fp):
        answers.append(answer_challenge(n2.store, n2.locations, challenge, False, "n1",
                                        busy=partial(write_under_way, n2)))
        return delete(fp)

    n2.store.delete = answered_then_deleted
    n2.delete_copy(fp, 2)
    assert not n2.store.exists(fp) and n2.locations.copy_record(fp) is None
    assert answers and answers[0]["files"][0].get("changing"), answers
    assert verdict(cluster, challenge, answers[0]) == CHANGING


def test_a_bad_outcome_while_the_challengers_own_copy_changes_is_judged_again(cluster):
    """The challenger reads its own copy to check the answer's ranges: a copy of its own
    renamed in meanwhile, not recorded yet, makes a sound answer look replayed."""
    fp = cluster.place("alice", "landing.bin", ["n1", "n2"], data=OLD)
    n1 = cluster.nodes["n1"]
    loc = n1.locations.get(fp)
    result = ChallengeResult({(loc.owner, loc.path): REPLAYED})
    with n1.store.changing(fp):
        Verifier(n1)._unsettled_to_changing([loc], result)
    assert result.outcomes[(loc.owner, loc.path)] == CHANGING


def test_a_sound_peer_is_not_failed_for_bytes_a_killed_commit_left_in_the_challengers_copy(
        cluster):
    """Two nodes killed at once: the challenger's commit had renamed new bytes in and died
    before recording them, so its copy is unlike its own record. The peer's sound answer
    differs from that copy; the challenger hashes its own copy first, quarantines it (to be
    repaired) and does not fail the peer. A copy of its own that matches its record keeps
    the verdict: the peer's answer is then the one that is wrong."""
    fp = cluster.place("alice", "killed.bin", ["n1", "n2"], data=OLD)
    n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
    loc = n1.locations.get(fp)
    n1.store.path_for(fp).write_bytes(NEW)  # the dead commit's bytes, no record of them
    challenge = challenge_of(cluster, fp)
    answer = answer_challenge(n2.store, n2.locations, challenge, False, "n1",
                              busy=partial(write_under_way, n2))
    assert verdict(cluster, challenge, answer) == REPLAYED  # what the ranges alone say
    result = ChallengeResult({(loc.owner, loc.path): REPLAYED})
    asyncio.run(Verifier(n1)._own_copy_first("n2", [loc], result))
    assert result.outcomes[(loc.owner, loc.path)] == CHANGING
    assert n1.locations.copy_record(fp) is None and not n1.store.exists(fp)
    assert n1.quarantined == 1

    sound = cluster.place("alice", "sound.bin", ["n1", "n2"], data=OLD)
    loc = n1.locations.get(sound)
    result = ChallengeResult({(loc.owner, loc.path): REPLAYED})
    asyncio.run(Verifier(n1)._own_copy_first("n2", [loc], result))
    assert result.outcomes[(loc.owner, loc.path)] == REPLAYED
    assert n1.store.exists(sound) and n1.quarantined == 1


def test_a_peer_is_not_failed_against_a_copy_of_the_challengers_that_a_write_holds(cluster):
    """The challenger's own copy unlike its record while a write of the file is under way
    here (its lock held): the copy is not quarantined (the write may be about to record
    it), and so it proves nothing against the peer either. Before, the peer stayed failed
    ("1 replayed" in a nemesis run, nothing corrupted)."""
    fp = cluster.place("alice", "held.bin", ["n1", "n2"], data=OLD)
    n1 = cluster.nodes["n1"]
    loc = n1.locations.get(fp)
    n1.store.path_for(fp).write_bytes(NEW)  # renamed in, its record not out yet
    n1.locks.acquire(fp, "alice", "n3", "a-write", 30.0)
    result = ChallengeResult({(loc.owner, loc.path): REPLAYED})
    asyncio.run(Verifier(n1)._own_copy_first("n2", [loc], result))
    assert result.outcomes[(loc.owner, loc.path)] == CHANGING
    assert n1.store.exists(fp) and n1.quarantined == 0
