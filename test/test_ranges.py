"""Single byte ranges (RFC 9110 section 14): what is served, ignored or refused."""
import pytest

from securifile.common.ranges import RangeNotSatisfiable, parse_range


@pytest.mark.parametrize("header, size, expected", [
    ("bytes=0-0", 100, (0, 1)),
    ("bytes=0-99", 100, (0, 100)),
    ("bytes=10-19", 100, (10, 20)),
    ("bytes=99-99", 100, (99, 100)),
    ("bytes=10-", 100, (10, 100)),
    ("bytes=0-", 100, (0, 100)),
    ("bytes=-10", 100, (90, 100)),
    ("bytes=-1", 100, (99, 100)),
    ("bytes=-100", 100, (0, 100)),
    ("bytes=-500", 100, (0, 100)),     # a suffix longer than the body: the whole body
    ("bytes=90-1000", 100, (90, 100)),  # an end past the body is clamped
    ("bytes=5-5000000000000", 10, (5, 10)),
    ("Bytes=1-2", 10, (1, 3)),          # the unit is case-insensitive
    (" bytes = 1-2 ", 10, (1, 3)),
])
def test_satisfiable_ranges(header, size, expected):
    assert parse_range(header, size) == expected


@pytest.mark.parametrize("header, size", [
    ("bytes=100-", 100),
    ("bytes=100-200", 100),
    ("bytes=5000-", 100),
    ("bytes=0-", 0),
    ("bytes=0-0", 0),
    ("bytes=-0", 100),
    ("bytes=-00", 100),
])
def test_unsatisfiable_ranges_raise(header, size):
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, size)


@pytest.mark.parametrize("header", [
    None,
    "",
    "bytes=0-1,5-6",      # several ranges: the whole body
    "bytes=-5, 0-1",
    "items=0-5",          # unknown unit
    "bytes",
    "bytes=",
    "bytes=-",
    "bytes=abc",
    "bytes=a-b",
    "bytes=5",
    "bytes=10-5",         # last before first
    "bytes=--5",          # not a suffix of minus five bytes
    "bytes=-+5",
    "bytes=+1-+3",
    "bytes=1_0-2_0",      # int() would read these as 10 and 20
    "bytes=1-2-3",
    "bytes=0x1-0x5",
    "bytes=1.5-3",
    "bytes=\u0663-\u0665",  # Arabic-Indic digits
])
def test_garbage_and_multiple_ranges_are_ignored(header):
    assert parse_range(header, 100) is None


def test_suffix_range_of_an_empty_body_sends_it_whole():
    # (0, 0) would need "Content-Range: bytes 0--1/0", which cannot be written.
    assert parse_range("bytes=-5", 0) is None


def test_range_lengths_add_up_for_every_split_of_a_small_body():
    size = 13
    for start in range(size):
        for last in range(start, size + 3):
            s, e = parse_range(f"bytes={start}-{last}", size)
            assert (s, e) == (start, min(last + 1, size))
