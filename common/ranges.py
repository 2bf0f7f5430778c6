"""HTTP ``Range`` header parsing for single byte ranges (RFC 9110 section 14)."""
import re

# Positions are ASCII digits only: int() alone would also take '-5', '+5', '1_0' and '٣'.
_POSITION = re.compile(r"[0-9]*")


class RangeNotSatisfiable(Exception):
    pass


def parse_range(header, size):
    """(start, end) with ``end`` exclusive, or None to send the whole body.

    Several ranges are answered with the whole body, which RFC 9110 allows; a syntactically
    broken header is ignored as the RFC asks. A range wholly past the end raises.
    """
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (_POSITION.fullmatch(first) and _POSITION.fullmatch(last)):
        return None
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                raise RangeNotSatisfiable()
            if size == 0:  # no byte range of an empty body can be named: send it whole
                return None
            return max(0, size - n), size
        start = int(first)
        end = int(last) + 1 if last else None
    except ValueError:
        return None
    if start < 0 or (end is not None and end <= start):
        return None
    if start >= size:
        raise RangeNotSatisfiable()
    return start, size if end is None else min(end, size)
