"""A node's own record numbers, and the spans of each peer's numbers it was pushed
(``nodes/pushed.py``): what its pulls may skip."""
from securifile.nodes import pushed as pushed_module
from securifile.nodes.locationmap import Location, LocationMap
from securifile.nodes.pushed import BLOCK, OwnCounter, PushedSpans


def record(path):
    return Location("alice", path, "n1", "d", "sha256", 1)


def test_own_numbers_rise_and_a_new_run_starts_above_the_last_even_with_the_clock_behind(
        tmp_path, monkeypatch):
    monkeypatch.setattr(pushed_module.time, "time_ns", lambda: 5_000_000_000)  # 5 s
    lmap = LocationMap(tmp_path / "locations.db")
    try:
        counter = OwnCounter(lmap)
        assert counter.span() == (5_000_000, 5_000_000)
        a, b = record("a"), record("b")
        assert counter.take([a, b]) == (5_000_000, 5_000_002)
        assert (a.cseq, b.cseq) == (5_000_001, 5_000_002)
        assert counter.take([]) == (5_000_002, 5_000_002)
        assert counter.span() == (5_000_000, 5_000_002)
        counter.value += BLOCK  # a long run: past its reservation, it reserves the next block
        counter.take([record("c")])
    finally:
        lmap.close()
    # The clock went back an hour across the restart: the new run still starts above every
    # number the last one could have given.
    monkeypatch.setattr(pushed_module.time, "time_ns", lambda: 1_000_000_000)
    lmap = LocationMap(tmp_path / "locations.db")
    try:
        again = OwnCounter(lmap)
        assert again.base > 5_000_003 + BLOCK
    finally:
        lmap.close()


class Counter:
    def __init__(self, base, value):
        self.base, self.value = base, value

    def span(self):
        return self.base, self.value


def test_a_span_starts_with_a_complete_pull_and_grows_with_pushes_in_any_order():
    spans = PushedSpans("me", Counter(100, 130))
    spans.pushed("p", 10, 11)  # no pull from p yet: nothing to follow on from
    assert spans.known() == {"me": (100, 130)}

    spans.pulled("p", [5, 10])
    spans.pushed("p", 10, 12)
    spans.pushed("p", 14, 15)  # arrives before 12 -> 14: waits
    assert spans.known()["p"] == (5, 12)
    spans.pushed("p", 12, 14)
    assert spans.known()["p"] == (5, 15)
    spans.pushed("p", 11, 12)  # old news
    assert spans.known()["p"] == (5, 15)

    spans.pushed("p", 16, 17)  # 15 -> 16 never came (a push lost): the span stops at 15
    assert spans.known()["p"] == (5, 15)
    spans.pulled("p", [5, 17])  # the next complete pull brought everything up to 17
    assert spans.known()["p"] == (5, 17)
    spans.pushed("p", 17, 18)
    assert spans.known()["p"] == (5, 18)


def test_a_pull_answer_older_than_the_pushes_since_keeps_them_and_a_new_run_replaces_the_span():
    spans = PushedSpans()
    spans.pulled("p", [5, 10])
    spans.pushed("p", 10, 20)
    spans.pulled("p", [5, 15])  # answered before the push of 16..20 arrived here
    assert spans.known() == {"p": (5, 20)}
    spans.pulled("p", [900, 901])  # p restarted: its new run's numbers only
    assert spans.known() == {"p": (900, 901)}
    spans.pushed("p", 20, 21)  # the old run's: not this span's
    assert spans.known() == {"p": (900, 901)}


def test_pushes_waiting_on_a_gap_that_never_closes_are_bounded(monkeypatch):
    monkeypatch.setattr(PushedSpans, "MAX_AHEAD", 3)
    spans = PushedSpans()
    spans.pulled("p", [0, 1])
    for n in range(2, 6):  # 1 -> 2 is lost: 2 -> 3, 3 -> 4 ... wait
        spans.pushed("p", n, n + 1)
    assert len(spans._ahead["p"]) <= 3
    spans.pulled("p", [0, 6])
    spans.pushed("p", 6, 7)
    assert spans.known() == {"p": (0, 7)}


def test_a_record_a_node_missed_comes_whole_from_a_peer_that_has_it(tmp_path):
    """The safety of skipping: node b was pushed a's first two records but not the third
    (a push lost, and a itself gone since); a pull from c, which has all three, skips the
    two b has and sends the third whole. A record of a's earlier run is never skipped."""
    maps = {n: LocationMap(tmp_path / f"{n}.db") for n in "abc"}
    try:
        old = record("old")
        old.coordinator, old.cseq = "a", 1  # numbered by a's run before this one
        for m in maps.values():
            m.apply(old)
        counter = OwnCounter(maps["a"])
        b_spans = PushedSpans("b", OwnCounter(maps["b"]))
        b_spans.pulled("a", counter.span())  # b's complete pull from a, before the three
        for i in range(3):
            loc = record(f"new{i}")
            loc.coordinator = "a"
            numbered = counter.take([loc])
            for name in ("a", "c") if i == 2 else "abc":
                maps[name].apply(loc)
            if i < 2:
                b_spans.pushed("a", *numbered)
        feed = maps["c"].changes_since(0, known=b_spans.known())
        assert [r.get("path") for r in feed] == ["old", None, None, "new2"]
    finally:
        for m in maps.values():
            m.close()
