"""Unit tests of the per-user upload slots and the progress watch."""
import pytest

from securifile.nodes.upload_limits import ProgressWatch, TooManyUploads, UploadSlots


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


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
    clock = Clock()
    watch = ProgressWatch(1000, clock)
    clock.now = 10
    assert not watch.too_slow(20_000)  # 2,000 B/s
    clock.now = 20
    assert watch.too_slow(25_000)  # 500 B/s since the last check
    clock.now = 30
    assert watch.too_slow(25_000)  # nothing at all


def test_no_minimum_rate_never_cuts_off():
    clock = Clock()
    watch = ProgressWatch(0, clock)
    clock.now = 100
    assert not watch.too_slow(0)
