"""Unit tests of the per-user upload slots and the progress watch."""
import pytest

from securifile.nodes.upload_limits import ProgressWatch, TooManyUploads, UploadSlots


def test_a_user_gets_at_most_its_slots_and_others_are_not_affected():
    slots = UploadSlots(2)
    slots.take("alice")
    slots.take("alice")
    with pytest.raises(TooManyUploads) as e:
        slots.take("alice")
    assert e.value.status == 429 and e.value.headers["Retry-After"] == "1"
    slots.take("bob")
    slots.give_back("alice")
    slots.take("alice")


def test_zero_slots_means_no_cap():
    slots = UploadSlots(0)
    for _ in range(100):
        slots.take("alice")


def test_an_upload_below_the_minimum_rate_is_too_slow():
    clock = Clock(0.0)
    watch = ProgressWatch(1000, clock)
    clock.now = 10
    assert not watch.too_slow(20_000)  # 2,000 B/s
    clock.now = 20
    assert watch.too_slow(25_000)  # 500 B/s since the last check
    clock.now = 30
    assert watch.too_slow(25_000)  # nothing at all


def test_no_minimum_rate_never_cuts_off():
    clock = Clock(0.0)
    watch = ProgressWatch(0, clock)
    clock.now = 100
    assert not watch.too_slow(0)


# -- on a real cluster ----------------------------------------------------------------------

import os  # noqa: E402

from .fakes import Clock  # noqa: E402
from .helpers import Api, wait_for  # noqa: E402
from .test_faults import SlowUpload, broken_off, settled  # noqa: E402


def test_a_trickled_upload_is_cut_off_and_its_lock_given_back(make_cluster):
    cluster = settled(make_cluster, servers=3, replicas=1, lock_lease_seconds=3,
                      min_upload_rate=50_000)
    api = Api(cluster)
    up = SlowUpload(api, "node1", "alice/trickle.bin", 10 << 20)
    try:
        up.wait_continue()
        up.send(os.urandom(1000))  # then nothing: far below 50 kB/s
        assert api.put("node2", "alice/trickle.bin", b"other").status == 423
        wait_for(lambda: broken_off(lambda: up.send(b"x")), 15, interval=0.2,
                 what="the trickled upload to be cut off")
    finally:
        up.close()
    r = wait_for(lambda: (lambda r: r if r.status in (200, 201) else None)(
        api.follow("node2", "PUT", "alice/trickle.bin", body=b"other")[1]), 10,
        what="the lock to be free")
    assert r.json()["size"] == 5


def test_a_user_gets_429_beyond_its_concurrent_uploads(make_cluster):
    cluster = settled(make_cluster, servers=3, replicas=1, max_uploads_per_user=1)
    api = Api(cluster)
    up = SlowUpload(api, "node1", "alice/one.bin", 1 << 20)
    try:
        up.wait_continue()
        r = api.put("node1", "alice/two.bin", b"second")
        assert r.status == 429 and r.json()["error"]["code"] == "too_many_uploads", r
        assert api.put("node2", "alice/two.bin", b"on another server").status == 201
    finally:
        up.close()
    wait_for(lambda: api.put("node1", "alice/three.bin", b"slot back").status == 201, 10,
             what="the slot back")
