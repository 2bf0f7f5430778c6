"""common/heap.py in this process: what settle freezes, what is still collected after it,
and the pauses it counts."""
import gc

import pytest

from securifile.common import heap


@pytest.fixture
def settled():
    heap.settle()
    try:
        yield
    finally:
        gc.unfreeze()
        if heap.pauses in gc.callbacks:
            gc.callbacks.remove(heap.pauses)


class Node:
    def __init__(self):
        self.other = None


def test_settle_freezes_what_exists_and_cycles_made_later_are_still_collected(settled):
    assert heap.frozen() > 10_000  # this test process: the interpreter, pytest, our modules
    before = list(heap.pauses.count)
    kept, a, b = Node(), Node(), Node()
    kept.other = kept
    a.other, b.other = b, a
    del a, b
    assert gc.collect() >= 2  # the pair made after the freeze is found garbage
    assert heap.pauses.count[2] == before[2] + 1 and heap.pauses.seconds[2] > 0
    assert kept.other is kept  # what is still referenced stays


def test_settling_twice_counts_each_collection_once(settled):
    heap.settle()
    assert gc.callbacks.count(heap.pauses) == 1
