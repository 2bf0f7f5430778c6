"""Sizes as operators type them: ``10G``, ``500M``, ``1.5T``, plain bytes, or ``none``."""
import argparse
import re

UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?")
UNLIMITED = ("none", "unlimited")


def parse_size(text):
    """Bytes for ``text`` (binary multiples: 10G is 10 GiB); None for 'none'/'unlimited'.

    ValueError for anything else, with a message that shows the accepted forms."""
    value = str(text).strip().lower()
    if value in UNLIMITED:
        return None
    match = SIZE_RE.fullmatch(value)
    if match is None:
        raise ValueError(f"{text!r} is not a size: use bytes or a number with K, M, G or T "
                         "(binary: 10G is 10 GiB), or 'none' for no limit")
    return int(float(match.group(1)) * UNITS[match.group(2)])


def size_text(n):
    """The shortest exact form ``parse_size`` reads back: '10G', '500M', '1234'; 'none'."""
    if n is None:
        return "none"
    for unit in "PTGMK":
        if n and n % UNITS[unit.lower()] == 0:
            return f"{n // UNITS[unit.lower()]}{unit}"
    return str(n)


def size_argument(text):
    """``parse_size`` for argparse: a bad size is a usage error (exit status 2)."""
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
